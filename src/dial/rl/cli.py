"""``dial rl``: native options (``--config`` YAML, ``--section.field value``) and the release's
RL flags (``--train-reward --data-path --root-dir --train-ppo --reward-da --port ...``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dial.errors import ConfigError
from dial.release import PREFIX, domain_overrides

# Release flag -> (native key, value type, help). Flags whose meaning needs more than a key are
# handled in release_rl_overrides.
RELEASE_RL_FLAGS: dict[str, tuple[str | None, type | None, str]] = {
    "--train-reward": (None, None, "train the reward model on --data-path's pairs"),
    "--reward-model-path": ("reward.path", str, "a trained reward model (without --train-reward)"),
    "--data-path": ("data.train_file", str, "-> data.train_file"),
    "--eval-data-path": ("data.eval_file", str, "-> data.eval_file"),
    "--reward-batch-size": ("reward.train.batch_size", int, "-> reward.train.batch_size"),
    "--reward-lr": ("reward.train.learning_rate", float, "-> reward.train.learning_rate"),
    "--reward-epochs": ("reward.train.num_epochs", int, "-> reward.train.num_epochs"),
    "--reward-model-name": ("reward.model.name", str, "-> reward.model.name"),
    "--reward-max-length": ("reward.max_length", int, "-> reward.max_length"),
    "--root-dir": ("output_dir", str, "-> output_dir"),
    "--train-ppo": (None, None, "run PPO (without it: reward model and judging only)"),
    "--ppo-model-name": ("policy.name", str, "-> policy.name"),
    "--ppo-batch-size": ("policy.batch_size", int, "-> policy.batch_size"),
    "--ppo-mini-batch-size": ("ppo.mini_batch_size", int, "-> ppo.mini_batch_size"),
    "--ppo-epochs": ("ppo.ppo_epochs", int, "-> ppo.ppo_epochs"),
    "--ppo-lr": ("ppo.learning_rate", float, "-> ppo.learning_rate"),
    "--ppo-query-max-length": ("policy.query_max_length", int, "-> policy.query_max_length"),
    "--ppo-response-max-length": (
        "policy.response_max_length",
        int,
        "-> policy.response_max_length",
    ),
    "--ppo-kl-coef": ("ppo.kl_coef", float, "-> ppo.kl_coef"),
    "--ppo-gamma": ("ppo.gamma", float, "-> ppo.gamma"),
    "--ppo-lam": ("ppo.lam", float, "-> ppo.lam"),
    "--ppo-cliprange": ("ppo.clip_range", float, "-> ppo.clip_range"),
    "--ppo-cliprange-value": ("ppo.clip_range_value", float, "-> ppo.clip_range_value"),
    "--ppo-vf-coef": ("ppo.vf_coef", float, "-> ppo.vf_coef"),
    "--ppo-whiten-rewards": ("ppo.whiten_rewards", None, "-> ppo.whiten_rewards true"),
    "--ppo-missing-eos-penalty": (
        "ppo.missing_eos_penalty",
        float,
        "-> ppo.missing_eos_penalty",
    ),
    "--num-generation-epochs": ("generations", int, "-> generations"),
    "--use-wandb": (None, None, "-> report_to [tensorboard, wandb]"),
    "--reward-da": ("reward_da", None, "-> reward_da true"),
    "--da-config-path": (None, str, "the domain section from a DIAL config JSON"),
    "--da-train-mode": (None, str, "moment (the release's documented value; checked)"),
    "--port": (None, int, "-> judge.url http://127.0.0.1:PORT/v1"),
    "--step-lr": (None, None, "-> policy.lr_schedule step"),
}


def _dest(flag: str) -> str:
    return PREFIX + flag.removeprefix("--").replace("-", "_")


def add_rl_arguments(parser: argparse.ArgumentParser) -> None:
    from dial.config import add_config_options
    from dial.rl.config import RLConfig

    add_config_options(parser, RLConfig)
    flags = parser.add_argument_group(
        "flags of the paper's release (mapped onto the options above)"
    )
    for flag, (_, kind, help_text) in RELEASE_RL_FLAGS.items():
        if kind is None:
            flags.add_argument(
                flag,
                dest=_dest(flag),
                action="store_true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            flags.add_argument(
                flag,
                dest=_dest(flag),
                type=kind,
                default=argparse.SUPPRESS,
                metavar=kind.__name__.upper(),
                help=help_text,
            )
    parser.set_defaults(handler=run_rl)


def release_rl_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """Native overrides for the release flags in `given` (flag name without dashes -> value).

    With release flags, PPO runs only with ``--train-ppo`` and the reward model is trained only
    with ``--train-reward`` (otherwise ``--reward-model-path`` names it), as in the release.
    """
    overrides: dict[str, Any] = {}
    for flag, (key, kind, _) in RELEASE_RL_FLAGS.items():
        name = flag.removeprefix("--").replace("-", "_")
        if key is not None and name in given:
            overrides[key] = True if kind is None else given[name]
    overrides["train_ppo"] = bool(given.get("train_ppo"))
    if not given.get("train_reward") and "reward_model_path" not in given:
        raise ConfigError("without --train-reward, pass --reward-model-path (a trained model)")
    if given.get("train_reward") and "reward_model_path" in given:
        raise ConfigError("--train-reward and --reward-model-path exclude each other")
    if given.get("use_wandb"):
        overrides["report_to"] = ["tensorboard", "wandb"]
    if given.get("step_lr"):
        overrides["policy.lr_schedule"] = "step"
    if "port" in given:
        overrides["judge.url"] = f"http://127.0.0.1:{given['port']}/v1"
    if "da_config_path" in given:
        overrides.update(domain_overrides(given["da_config_path"]))
    mode = given.get("da_train_mode")
    if mode is not None and mode != "moment":
        raise ConfigError(f"--da-train-mode {mode!r}: the release documents only 'moment'")
    return overrides


def run_rl(args: argparse.Namespace) -> int:
    from dial.config import given_options, load_config
    from dial.rl.config import RLConfig

    given = {k.removeprefix(PREFIX): v for k, v in vars(args).items() if k.startswith(PREFIX)}
    overrides = release_rl_overrides(given) if given else {}
    overrides.update(given_options(args, RLConfig))
    config = load_config(args.config, overrides, RLConfig)
    from dial.rl.trainer import train_rl

    result = train_rl(config)
    print(json.dumps({"eval": result.get("eval"), "wall_seconds": result["wall_seconds"]}))
    return 0

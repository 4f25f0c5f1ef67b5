"""The command lines of the paper's release, mapped onto dial's native configuration.

``dial train`` and ``dial eval`` accept every flag of the release's training and evaluation
commands (README of the release) with the meaning it gives them; each becomes a native option
(see the README's mapping table). A domain-adaptation config file (``--da_config_path``, e.g.
``configs/wdgrl_hundredth.json``) becomes the ``domain`` section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dial.config import config_from_dict
from dial.errors import ConfigError

# train_mode -> (task, method); "baseline" picks its method from --source_sft / --target_ntp.
TRAIN_MODES: dict[str, tuple[str, str]] = {
    "sequence_prediction": ("score", "source_only"),
    "domain_adaptation": ("score", "dial"),
    "contrastive": ("preference", "source_only"),
    "domain_adaptation_contrastive": ("preference", "dial"),
    "mcq": ("mcq", "source_only"),
    "domain_adaptation_mcq": ("mcq", "dial"),
    "baseline": ("preference", "baseline"),
    "oracle": ("preference", "oracle"),
}
EVAL_MODES = {
    "sequence_prediction": "score",
    "domain_adaptation": "score",
    "contrastive": "preference",
    "domain_adaptation_contrastive": "preference",
    "mcq": "mcq",
    "domain_adaptation_mcq": "mcq",
}
DATASET_TYPES = {
    "sequence_prediction": None,
    "contrastive": None,
    "domain_adaptation": "truncate",
    "domain_adaptation_contrastive": "truncate",
    "domain_adaptation_wrapped": "wrap",
}
SCORE_LOSSES = {"mse": "mse", "binary_cross_entropy": "bce", "cross_entropy": "cross_entropy"}
PREFERENCE_LOSSES = ("contrastive", "binary_cross_entropy")
METRICS = ("multiclass_accuracy", "average_rank", "pearson", "spearman", "mcq_accuracy", "mcq_rank")
MODEL_TYPES = ("sequence_classification", "gemma_dual", "causal_lm")
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh"}
PREFIX = "release_"


def add_release_flags(parser: argparse.ArgumentParser) -> None:
    """The release's flags, in a group of their own (they never clash with native options)."""
    flags = parser.add_argument_group(
        "flags of the paper's release (mapped onto the options above; see the README)"
    )

    class _Group:  # every release flag's dest is prefixed, so none clashes with a native one
        @staticmethod
        def add_argument(name: str, **kwargs: Any) -> None:
            flags.add_argument(name, dest=PREFIX + name.removeprefix("--"), **kwargs)

    group = _Group()
    text = {"type": str, "default": argparse.SUPPRESS}
    files = {"nargs": "+", "default": argparse.SUPPRESS}
    integer = {"type": int, "default": argparse.SUPPRESS}
    number = {"type": float, "default": argparse.SUPPRESS}
    flag = {"action": "store_true", "default": argparse.SUPPRESS}
    group.add_argument("--model_name", help="-> model.name", **text)
    group.add_argument("--seed", help="-> train.seed", **integer)
    group.add_argument("--precision", help="-> model.precision", **text)
    group.add_argument("--num_labels", help="-> model.num_labels", **integer)
    group.add_argument("--dataset_type", help="single domain, or data.pairing", **text)
    group.add_argument("--eval_dataset_type", help="checked: single-domain evaluation", **text)
    group.add_argument("--file_type", help="-> data.file_type", **text)
    group.add_argument("--data_files", help="-> data.train_files", **files)
    group.add_argument("--target_data_files", help="-> data.target_files", **files)
    group.add_argument("--shuffle_target_dataset", help="-> data.shuffle_target", **flag)
    group.add_argument("--eval_data_files", help="-> data.eval_files", **files)
    group.add_argument("--dataset_config_path", help="-> data.dataset_config", **text)
    group.add_argument("--eval_dataset_config_path", help="-> data.eval_dataset_config", **text)
    group.add_argument("--da_config_path", help="-> the domain section", **text)
    group.add_argument("--root_dir", help="-> output_dir", **text)
    group.add_argument("--loss_type", help="-> data.score_loss (score tasks)", **text)
    group.add_argument("--lora_r", help="-> model.lora_r", **integer)
    group.add_argument("--lora_alpha", help="-> model.lora_alpha", **integer)
    group.add_argument("--mode", help="train, eval or both (evaluate every epoch)", **text)
    group.add_argument("--train_mode", help="-> data.task and train.method", **text)
    group.add_argument("--eval_mode", help="-> data.eval_task", **text)
    group.add_argument("--batch_size", help="-> train.batch_size", **integer)
    group.add_argument("--eval_batch_size", help="-> train.eval_batch_size", **integer)
    group.add_argument("--max_length", help="-> data.max_length", **integer)
    group.add_argument("--eval_max_length", help="-> data.eval_max_length", **integer)
    group.add_argument("--num_epochs", help="-> train.num_epochs", **integer)
    group.add_argument("--learning_rate", help="-> train.learning_rate", **number)
    group.add_argument("--metric_names", help="metrics to report", **files)
    group.add_argument("--accuracy_columns", help="checked: responses per example", **integer)
    group.add_argument("--weight_decay", help="-> train.weight_decay", **number)
    group.add_argument("--source_sft", help="baseline: train.method source_sft", **flag)
    group.add_argument("--target_ntp", help="baseline: train.method target_ntp", **flag)
    group.add_argument("--model_type", help="checked against the method", **text)
    group.add_argument("--use_wandb", help="-> train.report_to [tensorboard, wandb]", **flag)
    group.add_argument(
        "--gradient_accumulation_steps", help="-> train.gradient_accumulation_steps", **integer
    )
    group.add_argument("--adapter_path", help="eval: the trained model or checkpoint", **text)


def release_flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The release flags on the command line, by their names without dashes."""
    return {k.removeprefix(PREFIX): v for k, v in vars(args).items() if k.startswith(PREFIX)}


def _choice(flag: str, value: str, choices) -> str:
    if value not in choices:
        raise ConfigError(f"--{flag} {value}: not one of {', '.join(choices)}")
    return value


def train_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """Native ``section.field`` overrides for the release's training flags."""
    out: dict[str, Any] = {}
    direct = {
        "model_name": "model.name",
        "seed": "train.seed",
        "precision": "model.precision",
        "num_labels": "model.num_labels",
        "file_type": "data.file_type",
        "data_files": "data.train_files",
        "target_data_files": "data.target_files",
        "eval_data_files": "data.eval_files",
        "dataset_config_path": "data.dataset_config",
        "eval_dataset_config_path": "data.eval_dataset_config",
        "root_dir": "output_dir",
        "lora_r": "model.lora_r",
        "lora_alpha": "model.lora_alpha",
        "batch_size": "train.batch_size",
        "eval_batch_size": "train.eval_batch_size",
        "max_length": "data.max_length",
        "eval_max_length": "data.eval_max_length",
        "num_epochs": "train.num_epochs",
        "learning_rate": "train.learning_rate",
        "weight_decay": "train.weight_decay",
        "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    }
    for flag, key in direct.items():
        if flag in flags:
            out[key] = flags[flag]
    if "precision" in flags:
        _choice("precision", flags["precision"], ("float32", "bfloat16", "float16"))
    out["data.shuffle_target"] = bool(flags.get("shuffle_target_dataset", False))
    task, method = TRAIN_MODES[
        _choice("train_mode", flags.get("train_mode", "contrastive"), TRAIN_MODES)
    ]
    if method in ("baseline", "oracle") and "eval_mode" in flags:
        task = EVAL_MODES[_choice("eval_mode", flags["eval_mode"], EVAL_MODES)]
    if method == "baseline":
        if flags.get("source_sft") == flags.get("target_ntp"):
            raise ConfigError(
                "--train_mode baseline needs exactly one of --source_sft, --target_ntp"
            )
        method = "source_sft" if flags.get("source_sft") else "target_ntp"
    out["data.task"] = task
    out["train.method"] = method
    dataset_type = _choice("dataset_type", flags.get("dataset_type", "contrastive"), DATASET_TYPES)
    pairing = DATASET_TYPES[dataset_type]
    if pairing is not None:
        out["data.pairing"] = pairing
    elif method in ("dial", "oracle", "target_ntp"):
        raise ConfigError(
            f"--train_mode {flags.get('train_mode')} needs two domains: --dataset_type "
            "domain_adaptation, domain_adaptation_contrastive or domain_adaptation_wrapped"
        )
    if "eval_dataset_type" in flags:
        _choice(
            "eval_dataset_type", flags["eval_dataset_type"], ("sequence_prediction", "contrastive")
        )
    if "eval_mode" in flags:
        out["data.eval_task"] = EVAL_MODES[_choice("eval_mode", flags["eval_mode"], EVAL_MODES)]
    if "loss_type" in flags:
        loss = flags["loss_type"]
        if task == "score":
            out["data.score_loss"] = SCORE_LOSSES[_choice("loss_type", loss, SCORE_LOSSES)]
        else:
            _choice("loss_type", loss, PREFERENCE_LOSSES)  # both mean Bradley-Terry here
    mode = _choice("mode", flags.get("mode", "both"), ("train", "eval", "both"))
    if mode == "train":
        out["data.eval_files"] = []
    for name in flags.get("metric_names", []):
        _choice("metric_names", name, METRICS)
    if "accuracy_columns" in flags:
        expected = {"preference": 2}.get(task)
        if expected is not None and flags["accuracy_columns"] != expected:
            raise ConfigError(
                f"--accuracy_columns {flags['accuracy_columns']}: {task} pairs have {expected}"
            )
    if "model_type" in flags:
        model_type = _choice("model_type", flags["model_type"], MODEL_TYPES)
        if (model_type == "gemma_dual") != (method in ("source_sft", "target_ntp")):
            raise ConfigError(
                "--model_type gemma_dual goes with the source_sft/target_ntp baselines, "
                "sequence_classification with every other method"
            )
    if flags.get("use_wandb"):
        out["train.report_to"] = ["tensorboard", "wandb"]
    if "da_config_path" in flags:
        out.update(domain_overrides(flags["da_config_path"]))
    return out


_DA_TOP = {
    "embeds_idx",
    "da_type",
    "da_lambda",
    "lambda_auto_schedule",
    "lambda_pretrain_steps",
    "lambda_inc_steps",
    "lambda_final",
    "num_domains",
    "num_classes",
    "adv_config",
    "da_spec_config",
}
_DA_SPEC = {
    "wdgrl": {"gp_da_lambda": "domain.gamma", "critic_iter": "domain.critic_iter"},
    "dann": {
        "grad_scale_factor": "domain.dann_alpha",
        "auto_critic_update": None,
        "critic_iter": None,
    },
    "mmd": {
        "kernel_mul": "domain.mmd_kernel_mul",
        "kernel_num": "domain.mmd_kernel_num",
        "fix_sigma": "domain.mmd_bandwidth",
    },
    "coral": {},
    "cmd": {"n_moments": None},
    "jdot": {"jdot_alpha": None},
    "swd": {"multiplier": None, "p": None},
}


def _keys(mapping: Any, allowed, file: str, where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"domain config {file}: '{where}' must be an object")
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ConfigError(
            f"domain config {file}: unknown key '{where + '.' if where else ''}{unknown[0]}'; "
            f"known: {', '.join(sorted(allowed))}"
        )
    return mapping


def domain_overrides(path: str | Path) -> dict[str, Any]:
    """The ``domain.*`` overrides a release domain-adaptation config asks for."""
    file = str(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"domain config {file} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read domain config {file} ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"domain config {file} is not UTF-8 text ({exc.reason})") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        reason = getattr(exc, "msg", exc)
        raise ConfigError(f"domain config {file} is not valid JSON ({reason})") from exc
    raw = _keys(raw, _DA_TOP, file, "")
    kind = raw.get("da_type", "wdgrl")
    if kind not in ("wdgrl", "dann", "mmd", "coral"):
        raise ConfigError(
            f"domain config {file}: da_type '{kind}' is not supported (wdgrl, dann, mmd, coral)"
        )
    if raw.get("embeds_idx", [-1]) != [-1]:
        raise ConfigError(f"domain config {file}: only embeds_idx [-1] (the pooled embedding)")
    if raw.get("num_domains", 2) != 2:
        raise ConfigError(f"domain config {file}: num_domains must be 2")
    out: dict[str, Any] = {"domain.loss": kind}
    if raw.get("lambda_auto_schedule"):
        if raw.get("lambda_pretrain_steps", 0):
            raise ConfigError(f"domain config {file}: lambda_pretrain_steps is not supported")
        out["domain.weight"] = raw.get("lambda_final", 1.0)
        out["domain.weight_schedule"] = "linear"
        out["domain.ramp_steps"] = raw.get("lambda_inc_steps", 100000)
    elif "da_lambda" in raw:
        out["domain.weight"] = raw["da_lambda"]
    adv = _keys(
        raw.get("adv_config", {}), {"da_optimizer_config", "da_net_config"}, file, "adv_config"
    )
    optimizer = _keys(
        adv.get("da_optimizer_config", {}),
        {"lr", "weight_decay"},
        file,
        "adv_config.da_optimizer_config",
    )
    if "lr" in optimizer:
        out["domain.critic_lr"] = optimizer["lr"]
    if "weight_decay" in optimizer:
        out["domain.critic_weight_decay"] = optimizer["weight_decay"]
    net = _keys(
        adv.get("da_net_config", {}),
        {"layers_width", "act_function", "dropout"},
        file,
        "adv_config.da_net_config",
    )
    if "layers_width" in net:
        out["domain.critic_widths"] = net["layers_width"]
    if "act_function" in net:
        out["domain.critic_activation"] = _choice("act_function", net["act_function"], ACTIVATIONS)
    if "dropout" in net:
        out["domain.critic_dropout"] = net["dropout"] or 0.0  # null: none, as in the release
    spec = _keys(raw.get("da_spec_config", {}), _DA_SPEC, file, "da_spec_config")
    for method, values in spec.items():
        values = _keys(values, _DA_SPEC[method], file, f"da_spec_config.{method}")
        if method != kind:
            continue  # settings of other methods, as the release's defaults carry them
        for key, value in values.items():
            target = _DA_SPEC[method][key]
            if target is None:
                raise ConfigError(f"domain config {file}: {method}.{key} is not supported")
            out[target] = value
    try:  # the values' types and ranges, checked here to name the file
        config_from_dict({"domain": {k.removeprefix("domain."): v for k, v in out.items()}})
    except ConfigError as exc:
        raise ConfigError(f"domain config {file}: {exc}") from exc
    return out


def eval_arguments(flags: dict[str, Any]) -> dict[str, Any]:
    """`dial eval` arguments for the release's evaluation flags."""
    if "adapter_path" not in flags:
        raise ConfigError("--adapter_path (the trained model or checkpoint) is required")
    if flags.get("mode", "eval") != "eval":
        raise ConfigError("dial eval takes --mode eval")
    files = flags.get("eval_data_files") or flags.get("data_files")
    if not files:
        raise ConfigError("--eval_data_files is required")
    mode = flags.get("eval_mode", "contrastive")
    task = EVAL_MODES[_choice("eval_mode", mode, EVAL_MODES)]
    for name in flags.get("metric_names", []):
        _choice("metric_names", name, METRICS)
    loss = flags.get("loss_type")
    return {
        "model": flags["adapter_path"],
        "data": files,
        "task": task,
        "dataset_config": flags.get("eval_dataset_config_path") or flags.get("dataset_config_path"),
        "file_type": flags.get("file_type"),
        "max_length": flags.get("eval_max_length") or flags.get("max_length") or 512,
        "batch_size": flags.get("eval_batch_size") or flags.get("batch_size") or 32,
        "score_loss": SCORE_LOSSES.get(loss, "mse") if loss else "mse",
        "output": str(Path(flags["root_dir"]) / "eval_metrics.json")
        if "root_dir" in flags
        else None,
    }

"""``dial rl``: a reward model, then G generations of sample -> judge -> (DIAL) -> PPO.

The loop of DESIGN §2:

1. the reward model is trained on the training pairs (Bradley-Terry, ``source_only``) once,
   or loaded (``reward.path``);
2. each generation samples one response per training prompt from the policy (temperature
   ``policy.temperature``, no top-k/top-p), judges it (complied / refused) and logs the
   accuracy against the prompt's correct action; with ``reward_da`` the reward model is
   retrained for ``reward.retrain_epochs`` with the samples as the target domain (method
   ``dial``, starting from the previous generation's weights); the samples are scored and PPO
   runs over them in rollouts of ``policy.batch_size`` prompts;
3. the final policy answers the held-out prompts greedily, judged the same way.

The run folder::

    config.yaml                  the resolved RLConfig
    metrics.jsonl                one row per generation (judged accuracy, score, PPO stats)
    reward/initial/              the first reward model's `dial train` run (final/ is the model)
    reward/gen_003/              generation 3's retraining run (reward_da)
    generations/gen_003.jsonl    generation 3's samples: prompt, correct, response, verdict, score
    checkpoints/gen_00000004/    after 4 generations: policy/ (the LoRA adapter),
                                 value.safetensors (the value model's LoRA and head),
                                 optimizer.pt, rng.pt, trainer_state.json (generations done,
                                 the reward model folder in use, the history), manifest.json
    final/policy/                the policy's LoRA adapter (usable by `dial generate`,
                                 `dial rl-eval`)
    final_metrics.json           held-out judged accuracy before and after, each generation's
                                 figures, the reward model used last, wall time

The reference policy is the policy with its adapters switched off (no second copy); the value
model is the policy's backbone with its own LoRA and a linear head. A crash loses at most the
generation in progress: ``--resume`` restarts from the newest complete checkpoint, and a
generation's reward retraining resumes from its own checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dial.config import DataConfig, RunConfig
from dial.data.io import write_records
from dial.data.records import Example
from dial.data.tokenize import encode_examples, sequence_format
from dial.errors import ConfigError, DataError
from dial.evaluation.evaluate import predict
from dial.judge import build_judge
from dial.models.registry import resolve_model
from dial.models.reward_model import RewardModel, default_lora_targets, load_reward_model
from dial.rl.config import RLConfig
from dial.rl.evaluate import ACTIONS, action_accuracy
from dial.rl.generation import (
    PRECISIONS,
    decode_responses,
    default_device,
    encode_queries,
    eos_token_ids,
    load_policy,
    read_prompt_records,
    sample_responses,
    sample_with_logprobs,
)
from dial.rl.ppo import ValueModel, ppo_update
from dial.training import checkpoint as ckpt
from dial.training.logging import RunLogger

CHECKPOINT_PREFIX = "gen_"


@dataclass
class RLState:
    """Where a ``dial rl`` run stands (``rl_state.json`` of a checkpoint)."""

    generations_done: int = 0
    reward_folder: str = ""  # relative to the run folder
    history: list[dict[str, Any]] = field(default_factory=list)
    initial_eval: dict[str, float] | None = None  # the policy before PPO, on the held-out prompts
    seconds: float = 0.0  # wall time up to this checkpoint, summed over resumed sessions


@dataclass
class Prompts:
    """Distinct prompts with their correct action, in the file's order."""

    texts: list[str]
    correct: list[str]


def read_prompts(path: str, limit: int | None = None) -> Prompts:
    """The distinct prompts of an RL file and each one's correct action (``comply``/``refuse``).

    A prompt listed twice with different actions is an error naming both records.
    """
    records = read_prompt_records(path, required=("correct",))
    seen: dict[str, tuple[str, int]] = {}
    for index, record in enumerate(records):
        correct = record["correct"]
        if correct not in ACTIONS:
            raise DataError(
                f"must be one of {', '.join(ACTIONS)}, got {correct!r}",
                file=path,
                record=index,
                field="correct",
            )
        prompt = record["prompt"]
        if prompt in seen and seen[prompt][0] != correct:
            raise DataError(
                f"the same prompt is '{seen[prompt][0]}' in record {seen[prompt][1]}",
                file=path,
                record=index,
                field="correct",
            )
        seen.setdefault(prompt, (correct, index))
    texts = list(seen)[:limit]
    return Prompts(texts, [seen[t][0] for t in texts])


def _lora(config: RLConfig, model_type: str, task_type: str):
    from peft import LoraConfig

    policy = config.policy
    return LoraConfig(
        task_type=task_type,
        r=policy.lora_r,
        lora_alpha=policy.lora_alpha,
        lora_dropout=policy.lora_dropout,
        target_modules=policy.lora_target_modules or default_lora_targets(model_type),
    )


@torch.no_grad()
def score_responses(
    model: RewardModel,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """The reward model's score of each (prompt, response), shape ``[N]``, float32 on the CPU."""
    fmt = sequence_format(tokenizer, model.spec.architecture)
    examples = [Example(p, (r,)) for p, r in zip(prompts, responses, strict=True)]
    data = encode_examples(examples, tokenizer, fmt, max_length)
    device = next(model.parameters()).device
    predictions = predict(
        model,
        data,
        fmt,
        batch_size=batch_size,
        padding_side=model.spec.padding_side,
        device=device,
    )
    return torch.from_numpy(predictions.rewards[:, 0]).float()


class RLRun:
    """One ``dial rl`` run."""

    def __init__(self, config: RLConfig, log=print) -> None:
        self.config = config
        self.print = log
        self.root = Path(config.output_dir)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        config = self.config
        if config.data.train_file is None:
            raise ConfigError("dial rl needs data.train_file (--data-path): prompts and pairs")
        existing = ckpt.list_checkpoints(self.root, CHECKPOINT_PREFIX)
        if existing and not config.resume:
            raise ConfigError(
                f"{self.root} already holds checkpoints: pass --resume to continue that run, "
                "or choose another output_dir"
            )
        self.prompts = read_prompts(config.data.train_file, config.data.max_prompts)
        self.eval_prompts = (
            read_prompts(config.data.eval_file) if config.data.eval_file is not None else None
        )
        torch.manual_seed(config.seed)
        self.device = default_device()
        self.policy, self.tokenizer = self._build_policy()
        self.value_model = self._build_value_model()
        parameters = [
            p
            for module in (self.policy, self.value_model)
            for p in module.parameters()
            if p.requires_grad
        ]
        self.optimizer = torch.optim.AdamW(parameters, lr=config.ppo.learning_rate)
        self.queries = encode_queries(
            self.tokenizer, self.prompts.texts, config.policy.query_max_length
        )
        self.eos_ids = eos_token_ids(self.policy, self.tokenizer)
        judge_config = config.judge
        if judge_config.url is not None and judge_config.cache_path is None:
            judge_config = replace(judge_config, cache_path=str(self.root / "judge_cache.jsonl"))
        self.judge = build_judge(judge_config)
        self.root.mkdir(parents=True, exist_ok=True)
        config.save_yaml(self.root / "config.yaml")
        self.logger = RunLogger(self.root, config.report_to, asdict(config))
        self.state = RLState()
        if config.resume:
            self._resume()

    def _build_policy(self):
        policy_config = self.config.policy
        from peft import get_peft_model

        policy, tokenizer = load_policy(
            policy_config.name,
            precision=policy_config.precision,
            trust_remote_code=policy_config.trust_remote_code,
            device="cpu",
        )
        for parameter in policy.parameters():
            parameter.requires_grad_(False)
        policy = get_peft_model(
            policy, _lora(self.config, policy.config.model_type, "CAUSAL_LM")
        ).to(self.device)
        policy.eval()
        return policy, tokenizer

    def _build_value_model(self) -> ValueModel:
        from peft import get_peft_model
        from transformers import AutoModel

        policy_config = self.config.policy
        resolved = resolve_model(
            policy_config.name, trust_remote_code=policy_config.trust_remote_code
        )
        dtype = PRECISIONS[policy_config.precision]
        if resolved.is_random_init:
            trunk = AutoModel.from_config(resolved.config, dtype=dtype)
        else:
            trunk = AutoModel.from_pretrained(
                resolved.name_or_path,
                dtype=dtype,
                trust_remote_code=policy_config.trust_remote_code,
                use_safetensors=True,
            )
        if resolved.is_random_init:  # the same weights as the policy's random trunk
            policy_trunk = self.policy.get_base_model().base_model.state_dict()
            trunk.load_state_dict(
                {
                    k.replace(".base_layer", ""): v
                    for k, v in policy_trunk.items()
                    if "lora_" not in k
                }
            )
        for parameter in trunk.parameters():
            parameter.requires_grad_(False)
        trunk = get_peft_model(
            trunk, _lora(self.config, trunk.config.model_type, "FEATURE_EXTRACTION")
        )
        value_model = ValueModel(trunk)
        nn.init.zeros_(value_model.head.weight)
        nn.init.zeros_(value_model.head.bias)
        return value_model.to(self.device).eval()

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        config = self.config
        started = time.perf_counter() - self.state.seconds  # a resumed run keeps counting
        if not self.state.reward_folder:
            if self.eval_prompts is not None:
                self.state.initial_eval = self.evaluate(self.eval_prompts)
                self.print(f"held-out judged accuracy before PPO: {self.state.initial_eval}")
            self.state.reward_folder = self._initial_reward_model()
        for generation in range(self.state.generations_done, config.generations):
            row = self._generation(generation)
            self.state.history.append(row)
            self.state.generations_done = generation + 1
            self.state.seconds = time.perf_counter() - started
            self._save_checkpoint()
        return self._finish(started)

    def _generation(self, generation: int) -> dict[str, Any]:
        config = self.config
        started = time.perf_counter()
        self._set_learning_rate(generation)
        torch.manual_seed(config.seed * 100_003 + generation)
        responses, logprobs = sample_with_logprobs(
            self.policy,
            self.tokenizer,
            self.queries,
            max_new_tokens=config.policy.response_max_length,
            batch_size=config.policy.generation_batch_size,
            temperature=config.policy.temperature,
        )
        texts = decode_responses(self.tokenizer, responses)
        verdicts = self.judge.verdicts(self.prompts.texts, texts)
        judged = action_accuracy(verdicts, self.prompts.correct)
        samples_file = self.root / "generations" / f"gen_{generation:03d}.jsonl"
        samples = [
            {"prompt": p, "correct": c, "response": r, "verdict": v}
            for p, c, r, v in zip(
                self.prompts.texts, self.prompts.correct, texts, verdicts, strict=True
            )
        ]
        samples_file.parent.mkdir(parents=True, exist_ok=True)
        write_records(samples, samples_file)
        if config.reward_da:
            self.state.reward_folder = self._retrain_reward_model(generation, samples_file)
        reward_model, reward_tokenizer = load_reward_model(self.root / self.state.reward_folder)
        reward_model.to(self.device)
        scores = score_responses(
            reward_model,
            reward_tokenizer,
            self.prompts.texts,
            texts,
            config.reward.max_length,
            config.reward.train.eval_batch_size,
        )
        del reward_model
        for sample, score in zip(samples, scores.tolist(), strict=True):
            sample["score"] = score
        write_records(samples, samples_file)
        ppo_stats = self._ppo(responses, logprobs, scores) if config.train_ppo else {}
        row = {
            "step": generation + 1,
            "generation": generation,
            **{f"judged_{k}": v for k, v in judged.items()},
            "score_mean": float(scores.mean()),
            "response_tokens_mean": sum(len(r) for r in responses) / len(responses),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            **{f"ppo_{k}": v for k, v in ppo_stats.items()},
            "seconds": time.perf_counter() - started,
        }
        self.logger.log(row, prefix="rl")
        self.print(
            f"generation {generation}: judged accuracy {judged['accuracy']:.3f} "
            f"(comply {judged.get('accuracy_comply', math.nan):.3f}, "
            f"refuse {judged.get('accuracy_refuse', math.nan):.3f}), "
            f"score {row['score_mean']:.3f}, {row['seconds']:.0f}s"
        )
        return row

    def _set_learning_rate(self, generation: int) -> None:
        policy = self.config.policy
        rate = self.config.ppo.learning_rate
        if policy.lr_schedule == "step":
            rate *= policy.step_lr_gamma ** (generation // policy.step_lr_generations)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _ppo(
        self, responses: list[torch.Tensor], logprobs: list[torch.Tensor], scores: torch.Tensor
    ) -> dict[str, float]:
        """PPO over the generation's samples (and their sampling log-probabilities), in
        rollouts of ``policy.batch_size`` prompts."""
        order = torch.randperm(len(responses)).tolist()
        size = self.config.policy.batch_size
        totals: dict[str, float] = {}
        batches = 0
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            stats = ppo_update(
                self.policy,
                self.value_model,
                None,  # the reference: the policy with its adapters switched off
                self.optimizer,
                [self.queries[i] for i in rows],
                [responses[i] for i in rows],
                scores[rows],
                self.config.ppo,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.eos_ids,
                old_logprobs=[logprobs[i] for i in rows],
            )
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + value
            batches += 1
        return {name: total / batches for name, total in totals.items()}

    # ------------------------------------------------------------------ reward model
    def _reward_run_config(self, folder: Path, method: str, **data: Any) -> RunConfig:
        config = self.config
        reward = config.reward
        return RunConfig(
            output_dir=str(folder),
            resume=bool(ckpt.list_checkpoints(folder)),
            model=reward.model,
            data=DataConfig(
                task="preference",
                train_files=[config.data.train_file],
                max_length=reward.max_length,
                **data,
            ),
            train=replace(reward.train, method=method),
            domain=config.domain,
        )

    def _initial_reward_model(self) -> str:
        """The reward model folder (relative to the run folder, or absolute when loaded)."""
        path = self.config.reward.path
        if path is not None:
            load_reward_model(path)  # fails now, clearly, if it is not a reward-model folder
            return str(Path(path).resolve())
        folder = self.root / "reward" / "initial"
        if not (folder / "final").is_dir():
            self.print(f"training the reward model on {self.config.data.train_file}")
            self._train_reward(self._reward_run_config(folder, "source_only"))
        return str((folder / "final").relative_to(self.root))

    def _retrain_reward_model(self, generation: int, samples_file: Path) -> str:
        """Retrain on the training pairs with the samples as the target domain (DIAL)."""
        folder = self.root / "reward" / f"gen_{generation:03d}"
        if not (folder / "final").is_dir():
            config = self._reward_run_config(
                folder,
                "dial",
                target_files=[str(samples_file)],
                target_text_columns=["prompt", "response"],
            )
            previous = str(self.root / self.state.reward_folder)
            config.model = replace(config.model, init_from=previous)
            config.train = replace(
                config.train,
                num_epochs=self.config.reward.retrain_epochs,
                max_steps=None,
                seed=config.train.seed + generation + 1,
            )
            self._train_reward(config)
        return str((folder / "final").relative_to(self.root))

    def _train_reward(self, config: RunConfig) -> None:
        from dial.training.trainer import train

        train(config, log=self.print)

    # ------------------------------------------------------------------ checkpoints
    def _trainable_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().cpu().contiguous()
            for name, parameter in module.named_parameters()
            if parameter.requires_grad
        }

    def _save_checkpoint(self) -> None:
        staging = ckpt.staging_dir(self.root, self.state.generations_done, CHECKPOINT_PREFIX)
        ckpt.make_empty(staging)
        self.policy.save_pretrained(staging / "policy", safe_serialization=True)
        save_file(self._trainable_state(self.value_model), str(staging / "value.safetensors"))
        torch.save(self.optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(ckpt.rng_state(), staging / "rng.pt")
        ckpt.commit_checkpoint(staging, self.state, keep=2, prefix=CHECKPOINT_PREFIX)

    def _resume(self) -> None:
        folder = ckpt.latest_valid_checkpoint(self.root, self.print, CHECKPOINT_PREFIX)
        if folder is None:
            self.print(f"no complete checkpoint in {self.root}; starting from the beginning")
            return
        from peft import set_peft_model_state_dict

        adapter = load_file(str(folder / "policy" / "adapter_model.safetensors"))
        if set_peft_model_state_dict(self.policy, adapter).unexpected_keys:
            raise ConfigError(f"{folder}/policy does not match this run's policy")
        state = load_file(str(folder / "value.safetensors"))
        if set(state) != set(self._trainable_state(self.value_model)):
            raise ConfigError(f"{folder}/value.safetensors does not match this run's value model")
        self.value_model.load_state_dict(state, strict=False)
        self.optimizer.load_state_dict(ckpt.torch_load(folder / "optimizer.pt"))
        ckpt.set_rng_state(ckpt.torch_load(folder / "rng.pt"))
        self.state = RLState(**json.loads((folder / "trainer_state.json").read_text()))
        self.logger.truncate_after(self.state.generations_done)
        self.print(f"resumed after generation {self.state.generations_done - 1} from {folder}")

    # ------------------------------------------------------------------ the end
    def _finish(self, started: float) -> dict[str, Any]:
        """Save the policy and write final_metrics.json; ``wall_seconds`` counts from
        ``started`` (moved back by the time earlier sessions of a resumed run took)."""
        final = self.root / "final"
        self.policy.save_pretrained(final / "policy", safe_serialization=True)
        self.tokenizer.save_pretrained(final / "policy")
        result: dict[str, Any] = {
            "generations": self.state.history,
            "reward_model": str(self.root / self.state.reward_folder),
        }
        if self.eval_prompts is not None:
            result["eval_before"] = self.state.initial_eval
            result["eval"] = self.evaluate(self.eval_prompts)
            self.print(f"held-out judged accuracy: {json.dumps(result['eval'])}")
        result["wall_seconds"] = time.perf_counter() - started
        (self.root / "final_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    def evaluate(self, prompts: Prompts) -> dict[str, float]:
        """Greedy answers to `prompts`, judged: accuracy overall and per correct action."""
        queries = encode_queries(self.tokenizer, prompts.texts, self.config.policy.query_max_length)
        responses = sample_responses(
            self.policy,
            self.tokenizer,
            queries,
            max_new_tokens=self.config.policy.response_max_length,
            do_sample=False,
            batch_size=self.config.policy.generation_batch_size,
        )
        verdicts = self.judge.verdicts(prompts.texts, decode_responses(self.tokenizer, responses))
        return action_accuracy(verdicts, prompts.correct)

    def cleanup(self) -> None:
        if getattr(self, "logger", None) is not None:
            self.logger.close()


def train_rl(config: RLConfig, log=print) -> dict[str, Any]:
    """Run ``dial rl`` as `config` says; returns the final metrics."""
    run = RLRun(config, log=log)
    try:
        run.setup()
        return run.run()
    finally:
        run.cleanup()

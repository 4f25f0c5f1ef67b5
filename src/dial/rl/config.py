"""Typed configuration of ``dial rl``: the policy, PPO, the reward model and the judge.

A YAML file with these sections (every field overridable as ``--section.field value``)::

    output_dir: runs/rl-xstest
    generations: 3
    reward_da: true
    data: {train_file: xstest/train.jsonl, eval_file: xstest/eval.jsonl}
    policy: {name: smollm2-135m, query_max_length: 32, response_max_length: 48}
    ppo: {kl_coef: 0.05, learning_rate: 1.0e-5}
    reward: {model: {name: minilm}, train: {batch_size: 8, num_epochs: 1}}
    domain: {loss: wdgrl, weight: 0.01}
    judge: {url: null}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from dial.config import (
    DomainConfig,
    Limits,
    ModelConfig,
    TrainConfig,
    above,
    at_least,
    below_one,
    option,
)
from dial.judge import JudgeConfig
from dial.rl.ppo import PPOConfig


@dataclass
class RLDataConfig:
    """The prompts: training pairs with the correct action, and held-out prompts."""

    train_file: str | None = option(
        None,
        "Training records: prompt, response_chosen, response_rejected and correct "
        "(comply/refuse), as `dial data convert --format xstest` writes them. The pairs train "
        "the reward model; the prompts are the policy's queries.",
    )
    eval_file: str | None = option(
        None,
        "Held-out prompts with their correct action ({prompt, correct}); the final policy is "
        "judged on them greedily (null: no final evaluation).",
    )
    max_prompts: int | None = option(
        None, "Use only the first N distinct training prompts (null: all of them)."
    )

    LIMITS: ClassVar[Limits] = {"max_prompts": at_least(1)}


@dataclass
class PolicyConfig:
    """The policy (a causal LM with LoRA), its value model, sampling and optimiser."""

    name: str = option(
        "smollm2-135m",
        "The policy: a chat model's short name from `dial models`, a folder or a hub id. Its "
        "frozen copy (adapters off) is the reference; the value model is the same backbone "
        "with its own LoRA and a linear head.",
    )
    precision: str = option("fp32", "fp32, bf16 or fp16.", choices=("fp32", "bf16", "fp16"))
    lora_r: int = option(16, "LoRA rank of the policy and the value model.")
    lora_alpha: int = option(32, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = option(0.0, "Dropout on the LoRA branch (PPO runs in eval mode).")
    lora_target_modules: list[str] | None = option(
        None, "Module names LoRA wraps; null: every attention and MLP projection."
    )
    query_max_length: int = option(
        32, "Tokens per query (chat template applied); longer prompts keep their end."
    )
    response_max_length: int = option(64, "Most tokens sampled per response.")
    batch_size: int = option(8, "Prompts per rollout: sampled, scored and used for one PPO update.")
    generation_batch_size: int = option(16, "Prompts per generate call.")
    temperature: float = option(1.0, "Sampling temperature (PPO assumes the samples' policy).")
    lr_schedule: str = option(
        "constant",
        "The PPO learning rate over generations: constant, or step (times step_lr_gamma every "
        "step_lr_generations generations).",
        choices=("constant", "step"),
    )
    step_lr_gamma: float = option(0.5, "Factor of the step schedule.")
    step_lr_generations: int = option(5, "Generations between two steps of the step schedule.")
    trust_remote_code: bool = option(False, "Allow the model's own code to run.")

    LIMITS: ClassVar[Limits] = {
        "lora_r": at_least(1),
        "lora_alpha": at_least(1),
        "lora_dropout": below_one(),
        "query_max_length": at_least(1),
        "response_max_length": at_least(1),
        "batch_size": at_least(1),
        "generation_batch_size": at_least(1),
        "temperature": above(0),
        "step_lr_gamma": above(0),
        "step_lr_generations": at_least(1),
    }


@dataclass
class RewardStageConfig:
    """The reward model: trained on the training pairs once, retrained each generation with
    the policy's samples as target when ``reward_da`` is on."""

    path: str | None = option(
        None,
        "Load this trained dial reward-model folder instead of training one (a `dial train` "
        "run's final/).",
    )
    max_length: int = option(320, "Tokens per (prompt, response) sequence of the reward model.")
    retrain_epochs: int = option(
        1, "Epochs of each generation's retraining with the samples as target (reward_da)."
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    LIMITS: ClassVar[Limits] = {"max_length": at_least(8), "retrain_epochs": at_least(1)}


@dataclass
class RLConfig:
    """A whole ``dial rl`` run (DESIGN §2)."""

    output_dir: str = option("runs/rl", "Run folder: config, metrics, generations, checkpoints.")
    resume: bool = option(False, "Continue from the newest complete generation checkpoint.")
    seed: int = option(0, "Seed of everything random.")
    generations: int = option(
        3, "Generations: each samples a response per prompt, judges, (retrains) and runs PPO."
    )
    reward_da: bool = option(
        False,
        "DIAL: retrain the reward model each generation with the policy's samples as the "
        "target domain (the domain section's loss).",
    )
    train_ppo: bool = option(True, "Run PPO (false: only train the reward model and judge).")
    report_to: list[str] = option(
        ["tensorboard"], "Loggers besides metrics.jsonl: tensorboard, wandb, or [] for none."
    )
    data: RLDataConfig = field(default_factory=RLDataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reward: RewardStageConfig = field(default_factory=RewardStageConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    LIMITS: ClassVar[Limits] = {"seed": at_least(0), "generations": at_least(1)}

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

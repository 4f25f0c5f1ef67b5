"""Typed run configuration: dataclasses with help texts, YAML files and `--key value` overrides.

A run config has three sections and a few top-level fields::

    output_dir: runs/hh-minilm
    model: {name: minilm, lora_r: 16}
    data: {task: preference, train_files: [train.jsonl], eval_split: 0.2}
    train: {learning_rate: 1.0e-4, num_epochs: 2}

Every field can be overridden on the command line as ``--section.field value`` (``--output_dir``
for top-level fields); values are parsed as YAML scalars or lists (``--data.train_files [a,b]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dial.errors import ConfigError


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``dial train --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class ModelConfig:
    """The reward model: backbone, pooling, head and adapters."""

    name: str = _opt(
        "minilm",
        "Backbone: a short name from `dial models` (minilm, smollm2-135m, tiny-bert, tiny-llama), "
        "a local folder or a Hugging Face hub id.",
    )
    pooling: str = _opt(
        "auto",
        "How a sequence becomes one embedding: 'last' (last non-pad token), 'cls', 'mean' "
        "(masked mean), or 'auto' (decoders: last, encoders: mean).",
        choices=("auto", "last", "cls", "mean"),
    )
    padding_side: str = _opt(
        "right",
        "Padding side for batches ('left' or 'right'); pooling finds the last real token "
        "either way.",
        choices=("left", "right"),
    )
    num_labels: int = _opt(1, "Outputs of the reward head (1 for a scalar reward).")
    disable_dropout: bool = _opt(
        True,
        "Turn off the backbone's dropout while training (as reward-model trainers usually do; "
        "it also lets attention use its fused kernel). LoRA dropout is lora_dropout.",
    )
    use_lora: bool = _opt(True, "Train LoRA adapters plus the head (false: train the whole model).")
    lora_r: int = _opt(16, "LoRA rank.")
    lora_alpha: int = _opt(32, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = _opt(0.05, "Dropout on the LoRA branch.")
    lora_target_modules: list[str] | None = _opt(
        None,
        "Module names LoRA wraps; empty means the architecture's default (all attention and MLP "
        "projections).",
    )
    precision: str = _opt(
        "float32",
        "Weights' dtype: float32, bfloat16 or float16 (the head stays float32).",
        choices=("float32", "bfloat16", "float16"),
    )
    trust_remote_code: bool = _opt(
        False, "Allow a hub model's own Python code to run (off unless you trust the repository)."
    )
    cache_dir: str | None = _opt(
        None, "Where converted offline weights are cached (default $DIAL_CACHE or ~/.cache/dial)."
    )


@dataclass
class DataConfig:
    """What to train and evaluate on."""

    task: str = _opt(
        "preference",
        "preference (Bradley-Terry on chosen/rejected pairs), mcq (one correct among several), "
        "or score (regression/classification of a label column).",
        choices=("preference", "mcq", "score"),
    )
    train_files: list[str] = _opt(
        [], "Source training files (JSON, JSONL, CSV, Parquet or hub id)."
    )
    eval_files: list[str] = _opt([], "Evaluation files; each is reported under its file name.")
    dataset_config: str | None = _opt(
        None,
        "A dataset-config JSON (the release's configs/pref.json, mcq.json, seq_pred.json) naming "
        "the columns; default: the task's standard columns.",
    )
    file_type: str | None = _opt(None, "json, csv or parquet; default: from each file's suffix.")
    eval_split: float = _opt(
        0.0,
        "Hold out this fraction of the training records (seeded) as an evaluation set "
        "named 'heldout'.",
    )
    max_length: int = _opt(
        512, "Tokens per sequence; longer texts lose the start of the prompt first."
    )
    eval_max_length: int | None = _opt(
        None, "Tokens per sequence at evaluation (default max_length)."
    )
    group_by_length: bool = _opt(
        True, "Batch texts of similar length together (less padding, faster)."
    )
    target_files: list[str] = _opt(
        [],
        "Target-domain training files: their texts for dial and target_ntp, texts and labels "
        "for oracle; with source_only only the domain metrics use them.",
    )
    target_eval_split: float = _opt(
        0.0,
        "Hold out this fraction of the target records (seeded, never trained on) as an "
        "evaluation set named 'target_heldout'; needs the target's labels.",
    )
    target_batch_size: int | None = _opt(
        None, "Target examples per micro-batch (default: train.batch_size)."
    )
    pairing: str = _opt(
        "truncate",
        "How source and target batches pair up: truncate (an epoch ends with the smaller "
        "side) or wrap (an epoch covers the larger side; the smaller one cycles, reshuffled).",
        choices=("truncate", "wrap"),
    )
    shuffle_target: bool = _opt(True, "Re-permute the target every epoch.")
    eval_task: str | None = _opt(
        None,
        "Task of the eval_files' metrics (default: task), e.g. preference pairs for a model "
        "trained on scores.",
        choices=("preference", "mcq", "score"),
    )
    eval_dataset_config: str | None = _opt(
        None, "Dataset config of the eval_files (default: dataset_config)."
    )
    score_loss: str = _opt(
        "mse",
        "Loss for the score task: mse, bce (labels in [0, 1]) or cross_entropy "
        "(integer classes; needs model.num_labels classes).",
        choices=("mse", "bce", "cross_entropy"),
    )
    margin: float = _opt(0.0, "Bradley-Terry margin m in -log σ(r⁺ − r⁻ − m).")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpoint schedule."""

    method: str = _opt(
        "source_only",
        "source_only (task loss on source), dial (+ λ·domain loss aligning source and target "
        "embeddings), oracle (+ task loss on the labelled target), source_sft (+ next-token "
        "loss on the source's preferred responses), target_ntp (+ next-token loss on target "
        "texts). source_sft and target_ntp need a decoder.",
        choices=("source_only", "dial", "oracle", "source_sft", "target_ntp"),
    )
    aux_weight: float = _opt(1.0, "Weight of the next-token loss of source_sft and target_ntp.")
    batch_size: int = _opt(8, "Pairs (or examples) per micro-batch.")
    eval_batch_size: int = _opt(32, "Pairs (or examples) per evaluation batch.")
    gradient_accumulation_steps: int = _opt(
        1, "Micro-batches per optimizer step; the loss is averaged over all their pairs."
    )
    learning_rate: float = _opt(1e-4, "Peak learning rate of AdamW.")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not applied to biases and norms).")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.999, "AdamW beta2.")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon.")
    lr_scheduler: str = _opt(
        "linear",
        "Learning-rate schedule after warm-up: constant, linear (to 0) or cosine (to 0).",
        choices=("constant", "linear", "cosine"),
    )
    warmup_steps: int = _opt(0, "Linear warm-up steps (overrides warmup_ratio when > 0).")
    warmup_ratio: float = _opt(0.0, "Warm-up as a fraction of all optimizer steps.")
    max_grad_norm: float | None = _opt(1.0, "Clip the gradient norm to this (null: no clipping).")
    num_epochs: int = _opt(1, "Passes over the training data.")
    max_steps: int | None = _opt(
        None, "Stop after this many optimizer steps (overrides num_epochs)."
    )
    eval_steps: int | None = _opt(
        None, "Evaluate every N optimizer steps (besides the end of every epoch)."
    )
    save_steps: int | None = _opt(
        None, "Checkpoint every N optimizer steps (besides the end of every epoch)."
    )
    save_total_limit: int | None = _opt(
        None, "Keep only the newest N checkpoints (null: keep all)."
    )
    logging_steps: int = _opt(10, "Write training loss and throughput every N optimizer steps.")
    seed: int = _opt(0, "Seed of everything random: init, data order, dropout.")
    report_to: list[str] = _opt(
        ["tensorboard"], "Loggers besides metrics.jsonl: tensorboard, wandb, or [] for none."
    )
    progress_bar: bool = _opt(True, "Show a live progress bar.")


@dataclass
class DomainConfig:
    """The domain loss of method dial (the paper's WDGRL by default, its settings the paper's)."""

    loss: str = _opt(
        "wdgrl",
        "wdgrl (Wasserstein critic with gradient penalty), dann (gradient reversal + domain "
        "classifier), mmd (multi-kernel Gaussian), coral (covariance alignment).",
        choices=("wdgrl", "dann", "mmd", "coral"),
    )
    weight: float = _opt(0.01, "λ: the domain loss's weight in task loss + λ·domain loss.")
    weight_schedule: str = _opt(
        "constant",
        "λ over training: constant, linear (0 to λ over ramp_steps), dann (2/(1+e^(-10p)) - 1).",
        choices=("constant", "linear", "dann"),
    )
    ramp_steps: int | None = _opt(None, "Steps of the linear λ ramp (default: all steps).")
    gamma: float = _opt(1.0, "WDGRL: weight γ of the critic's gradient penalty.")
    critic_iter: int = _opt(3, "WDGRL: critic updates per training batch.")
    critic_widths: list[int] = _opt([256, 128], "Hidden widths of the critic / classifier MLP.")
    critic_activation: str = _opt(
        "gelu", "Critic activation.", choices=("gelu", "relu", "leaky_relu", "tanh")
    )
    critic_dropout: float = _opt(0.0, "Critic dropout.")
    critic_lr: float = _opt(1e-4, "WDGRL: the critic's Adam learning rate.")
    critic_weight_decay: float = _opt(1e-3, "WDGRL: the critic's Adam weight decay.")
    dann_alpha: float = _opt(1.0, "DANN: gradient reversal coefficient.")
    mmd_kernel_num: int = _opt(5, "MMD: number of Gaussian kernels.")
    mmd_kernel_mul: float = _opt(2.0, "MMD: ratio between consecutive kernel bandwidths.")
    mmd_bandwidth: float | None = _opt(
        None, "MMD: the base bandwidth (null: the mean squared distance of each batch)."
    )
    eval_samples: int = _opt(
        256,
        "Examples of each domain whose embeddings feed the domain metrics at evaluation "
        "(a fresh domain classifier's accuracy, the critic's Ŵ).",
    )


@dataclass
class RunConfig:
    """A whole training run."""

    output_dir: str = _opt("runs/dial", "Run folder: config, metrics, checkpoints, final model.")
    resume: bool = _opt(False, "Continue from the newest complete checkpoint in output_dir.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "domain": DomainConfig,
}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Coerce `value` to the annotated type, or raise a ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], where) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError, OverflowError):
                number = float(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"at least {low}"


def _below_one(note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: 0 <= v < 1), f"at least 0 and below 1{note}"


# Numeric options whose values outside these limits would fail deep inside training.
_LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.num_labels": _at_least(1),
    "model.lora_r": _at_least(1),
    "model.lora_alpha": _at_least(1),
    "model.lora_dropout": _below_one(),
    "data.eval_split": _below_one(" (0: no held-out set)"),
    "data.target_eval_split": _below_one(" (0: no held-out set)"),
    "train.batch_size": _at_least(1),
    "train.eval_batch_size": _at_least(1),
    "train.gradient_accumulation_steps": _at_least(1),
    "train.learning_rate": ((lambda v: v > 0), "above 0"),
    "train.weight_decay": _at_least(0),
    "train.adam_beta1": _below_one(),
    "train.adam_beta2": _below_one(),
    "train.adam_epsilon": _at_least(0),
    "train.warmup_steps": _at_least(0),
    "train.warmup_ratio": ((lambda v: 0 <= v <= 1), "between 0 and 1"),
    "train.max_grad_norm": ((lambda v: v > 0), "above 0 (null: no clipping)"),
    "train.num_epochs": _at_least(1),
    "train.max_steps": _at_least(1),
    "train.eval_steps": _at_least(1),
    "train.save_steps": _at_least(1),
    "train.save_total_limit": _at_least(1),
    "train.logging_steps": _at_least(1),
    "train.seed": _at_least(0),
    "train.aux_weight": _at_least(0),
    "data.target_batch_size": _at_least(1),
    "domain.weight": _at_least(0),
    "domain.ramp_steps": _at_least(1),
    "domain.gamma": _at_least(0),
    "domain.critic_iter": _at_least(1),
    "domain.critic_dropout": _below_one(),
    "domain.critic_lr": ((lambda v: v > 0), "above 0"),
    "domain.critic_weight_decay": _at_least(0),
    "domain.dann_alpha": _at_least(0),
    "domain.mmd_kernel_num": _at_least(1),
    "domain.mmd_kernel_mul": ((lambda v: v > 0), "above 0"),
    "domain.mmd_bandwidth": ((lambda v: v > 0), "above 0 (null: from the data)"),
    "domain.eval_samples": _at_least(4),
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown option '{where}{key}'{hint}; valid: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if name in SECTIONS and where == "":
            if not isinstance(value, dict):
                raise ConfigError(f"'{name}' must be a mapping of options")
            kwargs[name] = _build(SECTIONS[name], value, f"{name}.")
            continue
        coerced = _check_type(value, annotation, f"{where}{name}")
        choices = fields[name].metadata.get("choices")
        if choices and coerced is not None and coerced not in choices:
            raise ConfigError(f"{where}{name}: {coerced!r} is not one of {', '.join(choices)}")
        limit = _LIMITS.get(f"{where}{name}")
        if limit is not None and coerced is not None and not limit[0](coerced):
            raise ConfigError(f"{where}{name}: must be {limit[1]}, got {coerced!r}")
        kwargs[name] = coerced
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested plain values."""
    return _build(RunConfig, values, "")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults) and apply ``section.field -> value`` overrides.

    Override values are YAML scalars or lists as typed on the command line.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
            raise ConfigError(f"cannot read config file {path}: {reason}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML ({where}{problem})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of options")
        values = loaded or {}
    for key, raw in (overrides or {}).items():
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        section, _, name = key.rpartition(".")
        if section:
            if section not in SECTIONS:
                raise ConfigError(f"unknown section '{section}' in --{key}")
            values.setdefault(section, {})[name] = value
        else:
            values[name] = value
    return config_from_dict(values)


def iter_options() -> list[tuple[str, dataclasses.Field]]:
    """All overridable options as (``section.field`` or ``field``, Field), for the CLI."""
    options = [(f.name, f) for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        options += [(f"{section}.{f.name}", f) for f in dataclasses.fields(cls)]
    return options

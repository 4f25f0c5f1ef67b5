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

import argparse
import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from dial.errors import ConfigError


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``dial train --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


C = TypeVar("C")

# A config class's LIMITS: numeric options whose values outside these bounds would fail deep
# inside training, as field name -> (check, what the value must be).
Limits = dict[str, tuple[Callable[[Any], bool], str]]


def at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"at least {low}"


def above(low: float, note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > low), f"above {low}{note}"


def below_one(note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: 0 <= v < 1), f"at least 0 and below 1{note}"


@dataclass
class ModelConfig:
    """The reward model: backbone, pooling, head and adapters."""

    LIMITS: ClassVar[Limits] = {
        "num_labels": at_least(1),
        "lora_r": at_least(1),
        "lora_alpha": at_least(1),
        "lora_dropout": below_one(),
    }

    name: str = option(
        "minilm",
        "Backbone: a short name from `dial models` (minilm, smollm2-135m, tiny-bert, tiny-llama), "
        "a local folder or a Hugging Face hub id.",
    )
    pooling: str = option(
        "auto",
        "How a sequence becomes one embedding: 'last' (last non-pad token), 'cls', 'mean' "
        "(masked mean), or 'auto' (decoders: last, encoders: mean).",
        choices=("auto", "last", "cls", "mean"),
    )
    padding_side: str = option(
        "right",
        "Padding side for batches ('left' or 'right'); pooling finds the last real token "
        "either way.",
        choices=("left", "right"),
    )
    num_labels: int = option(1, "Outputs of the reward head (1 for a scalar reward).")
    init_from: str | None = option(
        None,
        "A dial reward-model folder (a run's final/ or a checkpoint's model/) whose trained "
        "weights start this run: head, LoRA adapter or full weights; null: a fresh head.",
    )
    disable_dropout: bool = option(
        True,
        "Turn off the backbone's dropout while training (as reward-model trainers usually do; "
        "it also lets attention use its fused kernel). LoRA dropout is lora_dropout.",
    )
    use_lora: bool = option(
        True, "Train LoRA adapters plus the head (false: train the whole model)."
    )
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = option(0.05, "Dropout on the LoRA branch.")
    lora_target_modules: list[str] | None = option(
        None,
        "Module names LoRA wraps; empty means the architecture's default (all attention and MLP "
        "projections).",
    )
    lora_layers: list[int] | None = option(
        None,
        "Transformer layers (0-based) whose modules LoRA wraps, e.g. [4, 5] for the top two of "
        "six; null: every layer.",
    )
    precision: str = option(
        "float32",
        "Weights' dtype: float32, bfloat16 or float16 (the head stays float32).",
        choices=("float32", "bfloat16", "float16"),
    )
    trust_remote_code: bool = option(
        False, "Allow a hub model's own Python code to run (off unless you trust the repository)."
    )
    cache_dir: str | None = option(
        None, "Where converted offline weights are cached (default $DIAL_CACHE or ~/.cache/dial)."
    )


@dataclass
class DataConfig:
    """What to train and evaluate on."""

    LIMITS: ClassVar[Limits] = {
        "eval_split": below_one(" (0: no held-out set)"),
        "target_eval_split": below_one(" (0: no held-out set)"),
        "target_batch_size": at_least(1),
        "length_group_batches": at_least(1),
    }

    task: str = option(
        "preference",
        "preference (Bradley-Terry on chosen/rejected pairs), mcq (one correct among several), "
        "or score (regression/classification of a label column).",
        choices=("preference", "mcq", "score"),
    )
    train_files: list[str] = option(
        [], "Source training files (JSON, JSONL, CSV, Parquet or hub id)."
    )
    eval_files: list[str] = option([], "Evaluation files; each is reported under its file name.")
    dataset_config: str | None = option(
        None,
        "A dataset-config JSON (the release's configs/pref.json, mcq.json, seq_pred.json) naming "
        "the columns; default: the task's standard columns.",
    )
    file_type: str | None = option(None, "json, csv or parquet; default: from each file's suffix.")
    eval_split: float = option(
        0.0,
        "Hold out this fraction of the training records (seeded) as an evaluation set "
        "named 'heldout'.",
    )
    max_length: int = option(
        512, "Tokens per sequence; longer texts lose the start of the prompt first."
    )
    eval_max_length: int | None = option(
        None, "Tokens per sequence at evaluation (default max_length)."
    )
    group_by_length: bool = option(
        True, "Batch texts of similar length together (less padding, faster)."
    )
    length_group_batches: int = option(
        50,
        "With group_by_length: sort random groups of this many batches by length before "
        "cutting them into batches (fewer: more random batches, more padding).",
    )
    target_files: list[str] = option(
        [],
        "Target-domain training files: their texts for dial and target_ntp, texts and labels "
        "for oracle; with source_only only the domain metrics use them.",
    )
    target_eval_split: float = option(
        0.0,
        "Hold out this fraction of the target records (seeded, never trained on) as an "
        "evaluation set named 'target_heldout'; needs the target's labels.",
    )
    target_batch_size: int | None = option(
        None, "Target examples per micro-batch (default: train.batch_size)."
    )
    pairing: str = option(
        "truncate",
        "How source and target batches pair up: truncate (an epoch ends with the smaller "
        "side) or wrap (an epoch covers the larger side; the smaller one cycles, reshuffled).",
        choices=("truncate", "wrap"),
    )
    target_text_columns: list[str] = option(
        [],
        "Columns of unlabeled target files as [prompt, response, ...]: each record gives a "
        "prompt and its responses, any number (e.g. [prompt, response] for a policy's "
        "samples); empty: the task's target columns. Not for oracle, which needs labels.",
    )
    shuffle_target: bool = option(True, "Re-permute the target every epoch.")
    eval_task: str | None = option(
        None,
        "Task of the eval_files' metrics (default: task), e.g. preference pairs for a model "
        "trained on scores.",
        choices=("preference", "mcq", "score"),
    )
    eval_dataset_config: str | None = option(
        None, "Dataset config of the eval_files (default: dataset_config)."
    )
    score_loss: str = option(
        "mse",
        "Loss for the score task: mse, bce (labels in [0, 1]) or cross_entropy "
        "(integer classes; needs model.num_labels classes).",
        choices=("mse", "bce", "cross_entropy"),
    )
    margin: float = option(0.0, "Bradley-Terry margin m in -log σ(r⁺ − r⁻ − m).")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpoint schedule."""

    LIMITS: ClassVar[Limits] = {
        "batch_size": at_least(1),
        "eval_batch_size": at_least(1),
        "gradient_accumulation_steps": at_least(1),
        "learning_rate": above(0),
        "weight_decay": at_least(0),
        "adam_beta1": below_one(),
        "adam_beta2": below_one(),
        "adam_epsilon": at_least(0),
        "warmup_steps": at_least(0),
        "warmup_ratio": ((lambda v: 0 <= v <= 1), "between 0 and 1"),
        "max_grad_norm": above(0, " (null: no clipping)"),
        "num_epochs": at_least(1),
        "max_steps": at_least(1),
        "eval_steps": at_least(1),
        "save_steps": at_least(1),
        "save_total_limit": at_least(1),
        "logging_steps": at_least(1),
        "seed": at_least(0),
        "aux_weight": at_least(0),
        "collective_timeout_s": at_least(1),
    }

    method: str = option(
        "source_only",
        "source_only (task loss on source), dial (+ λ·domain loss aligning source and target "
        "embeddings), oracle (+ task loss on the labelled target), source_sft (+ next-token "
        "loss on the source's preferred responses), target_ntp (+ next-token loss on target "
        "texts). source_sft and target_ntp need a decoder.",
        choices=("source_only", "dial", "oracle", "source_sft", "target_ntp"),
    )
    aux_weight: float = option(1.0, "Weight of the next-token loss of source_sft and target_ntp.")
    batch_size: int = option(8, "Pairs (or examples) per micro-batch.")
    eval_batch_size: int = option(32, "Pairs (or examples) per evaluation batch.")
    gradient_accumulation_steps: int = option(
        1, "Micro-batches per optimizer step; the loss is averaged over all their pairs."
    )
    learning_rate: float = option(1e-4, "Peak learning rate of AdamW.")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms).")
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.999, "AdamW beta2.")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    lr_scheduler: str = option(
        "linear",
        "Learning-rate schedule after warm-up: constant, linear (to 0) or cosine (to 0).",
        choices=("constant", "linear", "cosine"),
    )
    warmup_steps: int = option(0, "Linear warm-up steps (overrides warmup_ratio when > 0).")
    warmup_ratio: float = option(0.0, "Warm-up as a fraction of all optimizer steps.")
    max_grad_norm: float | None = option(1.0, "Clip the gradient norm to this (null: no clipping).")
    num_epochs: int = option(1, "Passes over the training data.")
    max_steps: int | None = option(
        None, "Stop after this many optimizer steps (overrides num_epochs)."
    )
    eval_steps: int | None = option(
        None, "Evaluate every N optimizer steps (besides the end of every epoch)."
    )
    save_steps: int | None = option(
        None, "Checkpoint every N optimizer steps (besides the end of every epoch)."
    )
    save_total_limit: int | None = option(
        None, "Keep only the newest N checkpoints (null: keep all)."
    )
    logging_steps: int = option(10, "Write training loss and throughput every N optimizer steps.")
    seed: int = option(0, "Seed of everything random: init, data order, dropout.")
    report_to: list[str] = option(
        ["tensorboard"], "Loggers besides metrics.jsonl: tensorboard, wandb, or [] for none."
    )
    progress_bar: bool = option(True, "Show a live progress bar.")
    collective_timeout_s: int = option(
        1800,
        "With several processes: seconds a process waits for the others at a collective "
        "operation before it stops with an error (a rank that died or hangs); must exceed the "
        "longest evaluation, which the main process runs while the others wait.",
    )


@dataclass
class DomainConfig:
    """The domain loss of method dial (the paper's WDGRL by default, its settings the paper's)."""

    LIMITS: ClassVar[Limits] = {
        "weight": at_least(0),
        "ramp_steps": at_least(1),
        "gamma": at_least(0),
        "critic_iter": at_least(1),
        "critic_dropout": below_one(),
        "critic_lr": above(0),
        "critic_weight_decay": at_least(0),
        "dann_alpha": at_least(0),
        "mmd_kernel_num": at_least(1),
        "mmd_kernel_mul": above(0),
        "mmd_bandwidth": above(0, " (null: from the data)"),
        "eval_samples": at_least(4),
    }

    loss: str = option(
        "wdgrl",
        "wdgrl (Wasserstein critic with gradient penalty), dann (gradient reversal + domain "
        "classifier), mmd (multi-kernel Gaussian), coral (covariance alignment).",
        choices=("wdgrl", "dann", "mmd", "coral"),
    )
    weight: float = option(0.01, "λ: the domain loss's weight in task loss + λ·domain loss.")
    weight_schedule: str = option(
        "constant",
        "λ over training: constant, linear (0 to λ over ramp_steps), dann (2/(1+e^(-10p)) - 1).",
        choices=("constant", "linear", "dann"),
    )
    ramp_steps: int | None = option(None, "Steps of the linear λ ramp (default: all steps).")
    gamma: float = option(1.0, "WDGRL: weight γ of the critic's gradient penalty.")
    critic_iter: int = option(3, "WDGRL: critic updates per training batch.")
    critic_widths: list[int] = option([256, 128], "Hidden widths of the critic / classifier MLP.")
    critic_activation: str = option(
        "gelu", "Critic activation.", choices=("gelu", "relu", "leaky_relu", "tanh")
    )
    critic_dropout: float = option(0.0, "Critic dropout.")
    critic_lr: float = option(1e-4, "WDGRL: the critic's Adam learning rate.")
    critic_weight_decay: float = option(1e-3, "WDGRL: the critic's Adam weight decay.")
    dann_alpha: float = option(1.0, "DANN: gradient reversal coefficient.")
    mmd_kernel_num: int = option(5, "MMD: number of Gaussian kernels.")
    mmd_kernel_mul: float = option(2.0, "MMD: ratio between consecutive kernel bandwidths.")
    mmd_bandwidth: float | None = option(
        None, "MMD: the base bandwidth (null: the mean squared distance of each batch)."
    )
    embedding_layer: int | None = option(
        None,
        "Which embeddings the domain loss aligns and the domain metrics measure: null for the "
        "reward head's input, or a hidden layer pooled the same way (0: token embeddings, "
        "1..L: the layers, negative: counted from the end).",
    )
    eval_samples: int = option(
        256,
        "Examples of each domain whose embeddings feed the domain metrics at evaluation "
        "(a fresh domain classifier's accuracy, the critic's Ŵ).",
    )


@dataclass
class RunConfig:
    """A whole training run."""

    output_dir: str = option("runs/dial", "Run folder: config, metrics, checkpoints, final model.")
    resume: bool = option(False, "Continue from the newest complete checkpoint in output_dir.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


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


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown option '{where}{key}'{hint}; valid: {', '.join(fields)}")
    limits: Limits = getattr(cls, "LIMITS", {})
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if _is_section(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"'{where}{name}' must be a mapping of options")
            kwargs[name] = _build(annotation, value, f"{where}{name}.")
            continue
        coerced = _check_type(value, annotation, f"{where}{name}")
        choices = fields[name].metadata.get("choices")
        if choices and coerced is not None and coerced not in choices:
            raise ConfigError(f"{where}{name}: {coerced!r} is not one of {', '.join(choices)}")
        limit = limits.get(name)
        if limit is not None and coerced is not None and not limit[0](coerced):
            raise ConfigError(f"{where}{name}: must be {limit[1]}, got {coerced!r}")
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {exc}") from exc


def config_from_dict(values: dict[str, Any], cls: type[C] = RunConfig) -> C:  # type: ignore[assignment]
    """Build and validate a config (by default a RunConfig) from nested plain values."""
    return _build(cls, values, "")


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    cls: type[C] = RunConfig,  # type: ignore[assignment]
) -> C:
    """Read a YAML config (or start from defaults) and apply ``section.field -> value`` overrides.

    Override values are YAML scalars or lists as typed on the command line; keys name nested
    sections with dots (``reward.train.learning_rate``).
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
    sections = {key for key, _ in _sections(cls)}
    for key, raw in (overrides or {}).items():
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        section, _, name = key.rpartition(".")
        if section and section not in sections:
            raise ConfigError(f"unknown section '{section}' in --{key}")
        target = values
        for part in section.split(".") if section else []:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"'{section}' must be a mapping of options")
        target[name] = value
    return config_from_dict(values, cls)


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """The nested sections of a config class as (dotted name, class), depth first."""
    found = []
    for name, annotation in typing.get_type_hints(cls).items():
        if _is_section(annotation):
            found.append((prefix + name, annotation))
            found += _sections(annotation, f"{prefix}{name}.")
    return found


def iter_options(cls: type = RunConfig) -> list[tuple[str, dataclasses.Field]]:
    """All overridable options as (dotted key, Field), for the CLI."""
    hints = typing.get_type_hints(cls)
    options = [(f.name, f) for f in dataclasses.fields(cls) if not _is_section(hints[f.name])]
    for section, section_cls in _sections(cls):
        section_hints = typing.get_type_hints(section_cls)
        options += [
            (f"{section}.{f.name}", f)
            for f in dataclasses.fields(section_cls)
            if not _is_section(section_hints[f.name])
        ]
    return options


def add_config_options(parser: argparse.ArgumentParser, cls: type = RunConfig) -> None:
    """``--config FILE`` and a ``--key value`` option (with its help) for every field of `cls`.

    Options left out of the command line stay out of the parsed namespace (see
    :func:`given_options`), so a YAML file's values hold unless overridden.
    """
    parser.add_argument("--config", help="YAML config file", default=None)
    for key, option_field in iter_options(cls):
        help_text = option_field.metadata.get("help", "")
        choices = option_field.metadata.get("choices")
        if choices:
            help_text += f" Choices: {', '.join(choices)}."
        factory = option_field.default_factory
        default = factory() if callable(factory) else option_field.default
        is_bool = option_field.type in ("bool", bool)
        parser.add_argument(
            f"--{key}",
            dest=key,
            default=argparse.SUPPRESS,
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            metavar="BOOL" if is_bool else key.rpartition(".")[2].upper(),
            help=f"{help_text} (default: {default})",
        )


def given_options(args: argparse.Namespace, cls: type = RunConfig) -> dict[str, Any]:
    """The ``key -> value`` overrides given on the command line for the fields of `cls`."""
    keys = {key for key, _ in iter_options(cls)}
    return {key: value for key, value in vars(args).items() if key in keys}

"""Assembling the tokenised training and evaluation sets of a run from its data config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dial.config import DataConfig
from dial.data.records import (
    ColumnConfig,
    Example,
    LoadReport,
    load_column_config,
    load_examples,
)
from dial.data.tokenize import EncodedData, SequenceFormat, encode_examples
from dial.errors import DataError


@dataclass
class EvalSet:
    """An evaluation set and the task its metrics are computed for."""

    task: str
    data: EncodedData


@dataclass
class RunData:
    """The encoded sets of a run and the messages the user should see about them.

    ``target`` holds the target-domain training texts (None without target files); their
    labels are kept only when the method uses them (``oracle``).
    """

    train: EncodedData
    evals: dict[str, EvalSet]
    target: EncodedData | None = None
    messages: list[str] = field(default_factory=list)


def split_heldout(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded split into (train, held-out); the held-out part has round(fraction * n) items."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"eval_split must lie strictly between 0 and 1, got {fraction}")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_heldout = round(fraction * len(examples))
    if n_heldout == 0 or n_heldout == len(examples):
        raise DataError(f"eval_split {fraction} of {len(examples)} records leaves an empty side")
    heldout = sorted(order[:n_heldout])
    kept = sorted(order[n_heldout:])
    return [examples[i] for i in kept], [examples[i] for i in heldout]


def check_score_labels(
    examples: list[Example], file: str, score_loss: str, num_labels: int
) -> None:
    """Labels the score loss can learn: bce targets in [0, 1], cross_entropy class indices in
    ``0..num_labels - 1``; mse takes any finite number. Raises a DataError naming the record."""
    for index, example in enumerate(examples):
        label = example.label
        if label is None:
            continue
        if score_loss == "bce" and not 0.0 <= label <= 1.0:
            message = f"label {label} is outside [0, 1], which the bce score loss needs"
        elif score_loss == "cross_entropy" and not (label.is_integer() and 0 <= label < num_labels):
            message = (
                f"label {label} is not a class index in 0..{num_labels - 1} "
                "(set model.num_labels to the number of classes)"
            )
        else:
            continue
        raise DataError(message, file=file, record=index, field="label")


def load_task_files(
    files: list[str],
    config: DataConfig,
    *,
    domain: str = "source",
    require_labels: bool = True,
    task: str | None = None,
    dataset_config: str | None = None,
    columns: ColumnConfig | None = None,
    num_labels: int = 1,
) -> tuple[list[Example], list[LoadReport]]:
    """Read and validate several files of one domain (of the run's task unless `task`; with the
    dataset config's columns unless `columns`); score labels must suit ``config.score_loss``
    with `num_labels` classes."""
    task = task or config.task
    if columns is None:
        columns = load_column_config(dataset_config or config.dataset_config, task)
    examples: list[Example] = []
    reports = []
    for path in files:
        loaded, report = load_examples(
            path,
            task,
            columns,
            file_type=config.file_type,
            domain=domain,
            require_labels=require_labels,
        )
        if task == "score" and require_labels:
            check_score_labels(loaded, str(path), config.score_loss, num_labels)
        examples += loaded
        reports.append(report)
    return examples, reports


def eval_set_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def _with_preference(examples: list[Example], what: str, messages: list[str]) -> list[Example]:
    """Drop (and report) records whose responses are identical: they carry no preference."""
    kept = [e for e in examples if e.responses[0] not in e.responses[1:]]
    if len(kept) < len(examples):
        messages.append(
            f"{what} skips {len(examples) - len(kept)} records whose responses are "
            "identical (they carry no preference); evaluation keeps them and counts them wrong"
        )
    return kept


def prepare_run_data(
    config: DataConfig,
    tokenizer,
    fmt: SequenceFormat,
    seed: int,
    *,
    target_labels: bool = False,
    num_labels: int = 1,
) -> RunData:
    """Load, validate, split and tokenise the training, target and evaluation files of a run.

    Args:
        target_labels: the method trains on the target's labels (``oracle``); otherwise the
            target files need only their texts.
        num_labels: outputs of the reward head: the classes of a cross_entropy score task.
    """
    if not config.train_files:
        raise DataError("no training files given (data.train_files)")
    examples, reports = load_task_files(config.train_files, config, num_labels=num_labels)
    messages = [report.summary() for report in reports]
    heldout: list[Example] = []
    if config.eval_split:
        examples, heldout = split_heldout(examples, config.eval_split, seed)
        messages.append(
            f"held out {len(heldout)} of {len(examples) + len(heldout)} training records "
            f"(eval_split {config.eval_split}, seed {seed}) as 'heldout'"
        )
    trainable = _with_preference(examples, "training", messages)
    if not trainable:
        raise DataError("no usable training records", file=", ".join(config.train_files))
    train = encode_examples(trainable, tokenizer, fmt, config.max_length)
    messages.append(f"train: {train.summary()}")
    target = None
    target_heldout: list[Example] = []
    if config.target_files:
        if config.target_text_columns:
            if target_labels or config.target_eval_split:
                raise DataError(
                    "data.target_text_columns reads unlabeled target texts; oracle training "
                    "and target_eval_split need the target's labels"
                )
            if len(config.target_text_columns) < 2:
                raise DataError(
                    "data.target_text_columns takes [prompt, response, ...] (at least one "
                    f"response column), got {config.target_text_columns}"
                )
            # The mcq layout reads [prompt, responses...] with no label: any number of responses.
            target_examples, target_reports = load_task_files(
                config.target_files,
                config,
                domain="target",
                require_labels=False,
                task="mcq",
                columns=ColumnConfig(tuple(config.target_text_columns)),
            )
        else:
            target_examples, target_reports = load_task_files(
                config.target_files,
                config,
                domain="target",
                require_labels=target_labels or bool(config.target_eval_split),
                num_labels=num_labels,
            )
        messages += [report.summary() for report in target_reports]
        if config.target_eval_split:
            target_examples, target_heldout = split_heldout(
                target_examples, config.target_eval_split, seed
            )
            messages.append(
                f"held out {len(target_heldout)} of {len(target_examples) + len(target_heldout)}"
                f" target records (target_eval_split {config.target_eval_split}, seed {seed}) "
                "as 'target_heldout'"
            )
        if target_labels:
            target_examples = _with_preference(target_examples, "target training", messages)
        target = encode_examples(target_examples, tokenizer, fmt, config.max_length)
        messages.append(f"target: {target.summary()}")
    eval_length = config.eval_max_length or config.max_length
    evals: dict[str, EvalSet] = {}
    if heldout:
        evals["heldout"] = EvalSet(
            config.task, encode_examples(heldout, tokenizer, fmt, eval_length)
        )
    if target_heldout:
        evals["target_heldout"] = EvalSet(
            config.task, encode_examples(target_heldout, tokenizer, fmt, eval_length)
        )
    eval_task = config.eval_task or config.task
    for path in config.eval_files:
        eval_examples, eval_reports = load_task_files(
            [path],
            config,
            task=eval_task,
            dataset_config=config.eval_dataset_config,
            num_labels=num_labels,
        )
        messages += [report.summary() for report in eval_reports]
        name = eval_set_name(path)
        if name in evals:
            name = f"{name}_{len(evals)}"
        evals[name] = EvalSet(
            eval_task, encode_examples(eval_examples, tokenizer, fmt, eval_length)
        )
    for name, eval_set in evals.items():
        messages.append(f"eval '{name}' ({eval_set.task}): {eval_set.data.summary()}")
    return RunData(train=train, evals=evals, target=target, messages=messages)

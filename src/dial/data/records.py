"""Task records: dataset configs (the release's column files) and validated examples.

Every task is read into one shape, :class:`Example`: a prompt and one or more responses.
- preference: responses = (chosen, rejected)
- mcq: responses = (correct, wrong_1, ..., wrong_K)
- score: responses = (text,) with a numeric ``label``
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dial.data.io import read_records
from dial.errors import DataError

TASKS = ("preference", "mcq", "score")


@dataclass(frozen=True)
class ColumnConfig:
    """Which columns hold the inputs and labels, in the release's dataset-config format.

    ``input_columns``: preference ``[prompt, chosen, rejected]`` (or ``[chosen, rejected]``);
    mcq ``[prompt, correct, wrong...]``; score ``[text]`` or ``[prompt, text]``.
    ``target_columns``: score ``[label]``; empty otherwise. The ``target_*`` pair names the
    columns of the target-domain files.
    """

    input_columns: tuple[str, ...]
    target_columns: tuple[str, ...] = ()
    target_input_columns: tuple[str, ...] = ()
    target_target_columns: tuple[str, ...] = ()

    def for_domain(self, domain: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(input columns, label columns) for the 'source' or 'target' files."""
        if domain == "target" and self.target_input_columns:
            return self.target_input_columns, self.target_target_columns
        return self.input_columns, self.target_columns


DEFAULT_COLUMNS: dict[str, ColumnConfig] = {
    "preference": ColumnConfig(
        ("prompt", "response_chosen", "response_rejected"),
        (),
        ("prompt", "response_chosen", "response_rejected"),
        (),
    ),
    "mcq": ColumnConfig(
        ("prompt", "correct", "wrong_a", "wrong_b", "wrong_c", "wrong_d"),
        (),
        ("prompt", "correct", "wrong_a", "wrong_b", "wrong_c", "wrong_d"),
        (),
    ),
    "score": ColumnConfig(("text",), ("label",), ("text",), ("label",)),
}

_CONFIG_KEYS = ("input_columns", "target_columns", "target_input_columns", "target_target_columns")


def load_column_config(path: str | Path | None, task: str) -> ColumnConfig:
    """Read a dataset-config JSON (``configs/pref.json`` etc.), or the task's default columns."""
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if path is None:
        return DEFAULT_COLUMNS[task]
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("dataset config does not exist", file=str(path)) from exc
    except OSError as exc:
        raise DataError(f"cannot read the dataset config ({exc.strerror})", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset config is not UTF-8 text ({exc.reason})", file=str(path)) from exc
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise DataError(
            f"dataset config is not valid JSON ({getattr(exc, 'msg', exc)})", file=str(path)
        ) from exc
    if not isinstance(raw, dict):
        raise DataError("dataset config must be a JSON object", file=str(path))
    unknown = sorted(set(raw) - set(_CONFIG_KEYS))
    if unknown:
        raise DataError(
            f"unknown key(s) {unknown}; a dataset config has {', '.join(_CONFIG_KEYS)}",
            file=str(path),
            field=unknown[0],
        )
    if "input_columns" not in raw:
        raise DataError("missing key", file=str(path), field="input_columns")
    for key in _CONFIG_KEYS:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise DataError("must be a list of column names", file=str(path), field=key)
    config = ColumnConfig(*(tuple(raw.get(key, [])) for key in _CONFIG_KEYS))
    _check_arity(config.input_columns, config.target_columns, task, str(path))
    if config.target_input_columns:
        _check_arity(config.target_input_columns, config.target_target_columns, task, str(path))
    return config


def _check_arity(inputs: tuple[str, ...], labels: tuple[str, ...], task: str, file: str) -> None:
    allowed = {"preference": (2, 3), "score": (1, 2)}.get(task)
    if allowed and len(inputs) not in allowed:
        raise DataError(
            f"the {task} task takes {' or '.join(map(str, allowed))} input columns, "
            f"got {list(inputs)}",
            file=file,
            field="input_columns",
        )
    if task == "mcq" and len(inputs) < 3:
        raise DataError(
            "the mcq task takes [prompt, correct, wrong...] (at least one wrong answer)",
            file=file,
            field="input_columns",
        )
    if task == "score" and len(labels) != 1:
        raise DataError(
            "the score task takes exactly one label column", file=file, field="target_columns"
        )


@dataclass(frozen=True)
class Example:
    """A prompt with its candidate responses; for preference and mcq the first is the best."""

    prompt: str
    responses: tuple[str, ...]
    label: float | None = None


@dataclass
class LoadReport:
    """What loading a file found: counts the user should see, nothing dropped silently."""

    file: str
    records: int = 0
    identical_responses: int = 0
    empty_responses: int = 0

    def summary(self) -> str:
        text = f"{self.file}: {self.records} records"
        if self.identical_responses:
            text += (
                f", {self.identical_responses} with identical responses "
                "(a tie: no training signal, counted wrong in accuracy)"
            )
        if self.empty_responses:
            text += f", {self.empty_responses} with an empty response (kept)"
        return text


def _short(value: Any, limit: int = 40) -> str:
    """The repr of `value` for a message, cut to about `limit` characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = f"a {type(value).__name__} too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(record: dict[str, Any], column: str, file: str, index: int) -> str:
    if column not in record:
        present = ", ".join(sorted(record)) or "none"
        raise DataError(
            f"missing (fields present: {present})", file=file, record=index, field=column
        )
    value = record[column]
    if not isinstance(value, str):
        raise DataError(
            f"expected text, got {type(value).__name__} {_short(value)}",
            file=file,
            record=index,
            field=column,
        )
    return value


def _label(record: dict[str, Any], column: str, file: str, index: int) -> float:
    if column not in record:
        raise DataError("missing label", file=file, record=index, field=column)
    value = record[column]
    if isinstance(value, bool) or value is None:
        raise DataError(f"expected a number, got {value!r}", file=file, record=index, field=column)
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"expected a number, got {_short(value)}", file=file, record=index, field=column
        ) from exc
    except OverflowError as exc:
        raise DataError(
            f"label {_short(value)} is too large", file=file, record=index, field=column
        ) from exc
    if not math.isfinite(number):
        raise DataError(f"label is {number}", file=file, record=index, field=column)
    return number


def parse_records(
    records: list[dict[str, Any]],
    task: str,
    columns: ColumnConfig,
    *,
    file: str,
    domain: str = "source",
    require_labels: bool = True,
) -> tuple[list[Example], LoadReport]:
    """Validate records and turn them into examples.

    Args:
        require_labels: score labels must be present (False for an unlabeled target domain).

    Raises:
        DataError: naming the file, the record and the field of the first bad value.
    """
    inputs, labels = columns.for_domain(domain)
    report = LoadReport(file=file, records=len(records))
    examples = []
    has_prompt = (
        task == "mcq"
        or (task == "preference" and len(inputs) == 3)
        or (task == "score" and len(inputs) == 2)
    )
    for index, record in enumerate(records):
        prompt = _text(record, inputs[0], file, index) if has_prompt else ""
        response_columns = inputs[1:] if has_prompt else inputs
        responses = tuple(_text(record, c, file, index) for c in response_columns)
        report.empty_responses += any(not r.strip() for r in responses)
        label = None
        if task == "score" and require_labels:
            label = _label(record, labels[0], file, index)
        if len(responses) > 1 and responses[0] in responses[1:]:
            report.identical_responses += 1
        examples.append(Example(prompt, responses, label))
    return examples, report


def load_examples(
    path: str | Path,
    task: str,
    columns: ColumnConfig,
    *,
    file_type: str | None = None,
    domain: str = "source",
    require_labels: bool = True,
) -> tuple[list[Example], LoadReport]:
    """Read a data file and validate it for `task` (see :func:`parse_records`)."""
    records = read_records(path, file_type)
    return parse_records(
        records, task, columns, file=str(path), domain=domain, require_labels=require_labels
    )

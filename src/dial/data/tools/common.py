"""What the data tools share: the text fields they rewrite, per-record seeds, traceability.

Every tool reads records (dicts) and writes records. A tool that rewrites text changes only the
chosen text fields and keeps every other field; each output record carries ``source_index``, the
0-based position of its record in the input file (a record that already has one keeps it, so a
chain of tools traces back to the first file).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dial.errors import ConfigError, DataError

Record = dict[str, Any]

INDEX_FIELD = "source_index"

ROLE_TAGS = r"\b(?:Human|Assistant|System):"
"""The role tags of dial's prompt template (``Human: ...\\n\\nAssistant:``): kept as they are."""

OUTPUT_SUFFIXES = (".json", ".jsonl")


def default_fields(record: Record, file: str) -> tuple[str, ...]:
    """The prompt and response fields of the record's format, told by its field names.

    preference ``prompt, response_chosen, response_rejected`` (or ``chosen, rejected``); mcq
    ``prompt, correct, wrong_*``; score ``text``; RL eval ``prompt``.
    """
    keys = set(record)
    prompt = ("prompt",) if "prompt" in keys else ()
    for chosen, rejected in (("response_chosen", "response_rejected"), ("chosen", "rejected")):
        if {chosen, rejected} <= keys:
            return (*prompt, chosen, rejected)
    wrong = sorted(key for key in keys if key.startswith("wrong_"))
    if "correct" in keys and wrong:
        return (*prompt, "correct", *wrong)
    if "text" in keys:
        return ("text",)
    if prompt:
        return prompt
    raise ConfigError(
        f"file {file}: cannot tell the record format from its fields "
        f"({', '.join(sorted(keys)) or 'none'}); name the text fields with --fields"
    )


def resolve_fields(
    records: Sequence[Record], fields: Sequence[str] | None, file: str
) -> tuple[str, ...]:
    """``fields``, or the record format's defaults; every record must hold each as text.

    Raises:
        DataError: a record lacks a field or holds something other than text there.
    """
    chosen = tuple(fields) if fields else default_fields(records[0], file)
    for index, record in enumerate(records):
        for name in chosen:
            text_field(record, name, file, index)
    return chosen


def text_field(record: Record, name: str, file: str, index: int) -> str:
    """``record[name]``, which must be a string."""
    if name not in record:
        present = ", ".join(sorted(record)) or "none"
        raise DataError(f"missing (fields present: {present})", file=file, record=index, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise DataError(
            f"expected text, got {type(value).__name__}", file=file, record=index, field=name
        )
    return value


def traced(record: Record, index: int) -> Record:
    """A copy of ``record`` carrying ``source_index`` (kept when it already has one)."""
    return {**record, INDEX_FIELD: record.get(INDEX_FIELD, index)}


def rewrite_fields(
    records: Sequence[Record],
    fields: Sequence[str],
    rewrite: Callable[[str, int, str], str],
    file: str,
) -> list[Record]:
    """Traced copies of ``records`` with ``rewrite(text, record index, field)`` on each field."""
    out = []
    for index, record in enumerate(records):
        new = traced(record, index)
        for name in fields:
            new[name] = rewrite(text_field(record, name, file, index), index, name)
        out.append(new)
    return out


def record_rng(seed: int, index: int, name: str) -> random.Random:
    """The random stream of one field of one record: the same whatever else is processed."""
    return random.Random(f"{seed}/{index}/{name}")


def protected_mask(text: str, pattern: re.Pattern[str] | None) -> list[bool]:
    """Per character: True inside a match of ``pattern`` (text that must stay as it is)."""
    mask = [False] * len(text)
    if pattern is not None:
        for match in pattern.finditer(text):
            mask[match.start() : match.end()] = [True] * (match.end() - match.start())
    return mask


def compile_protect(pattern: str) -> re.Pattern[str] | None:
    """The regex of spans kept as they are ('' protects nothing)."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"protect is not a valid regular expression ({exc})") from exc


def check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, got {value}")


def check_output(path: str | Path) -> Path:
    """An output path: a ``.jsonl`` or ``.json`` file (not a folder)."""
    target = Path(path)
    if target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"output file {target} must end in .jsonl or .json")
    if target.is_dir():
        raise ConfigError(f"output {target} is a folder; give a file name")
    return target

"""Simple -> complex: split records into short and long ones by the length of their text.

The length of a record is the total length of the chosen fields (default: the format's response
fields, i.e. without the prompt), in characters or whitespace-separated words. With one threshold
t, a record is short when its length is at most t and long otherwise; with two, t1 <= t2, short
is at most t1, long is above t2, and records in between go to neither file (counted). Thresholds
are given as lengths or as quantiles of the file's lengths (numpy's linear interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dial.data.tools.common import Record, default_fields, resolve_fields, traced
from dial.errors import ConfigError

UNITS = ("chars", "words")


@dataclass(frozen=True)
class LengthSplitConfig:
    """What to measure and where to cut."""

    fields: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Fields whose total length is measured (default: the format's response fields)."
        },
    )
    unit: str = field(default="words", metadata={"help": "Length unit.", "choices": UNITS})
    threshold: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "One or two lengths: short <= first, long > last (overrides quantile)."},
    )
    quantile: tuple[float, ...] = field(
        default=(0.5,),
        metadata={"help": "One or two quantiles of the lengths giving the thresholds."},
    )

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        for name in ("threshold", "quantile"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) not in (1, 2) or list(values) != sorted(values):
                raise ConfigError(f"{name} takes one or two values in increasing order")
        if not all(0.0 <= q <= 1.0 for q in self.quantile):
            raise ConfigError(f"quantile values must be between 0 and 1, got {self.quantile}")


@dataclass
class LengthSplit:
    """Short and long records, the cut points and the counts."""

    short: list[Record]
    long: list[Record]
    between: int
    low: float
    high: float
    fields: tuple[str, ...]
    unit: str

    def summary(self) -> str:
        cut = f"<= {self.low:g}" if self.low == self.high else f"<= {self.low:g} / > {self.high:g}"
        text = (
            f"{len(self.short)} short and {len(self.long)} long records "
            f"({cut} {self.unit} of {', '.join(self.fields)})"
        )
        if self.between:
            text += f"; {self.between} between the thresholds are in neither file"
        return text


def text_length(text: str, unit: str) -> int:
    """Characters, or whitespace-separated words, of ``text``."""
    return len(text) if unit == "chars" else len(text.split())


def split_by_length(records: Sequence[Record], config: LengthSplitConfig, file: str) -> LengthSplit:
    """Split ``records`` into short and long ones (see the module doc); records are traced.

    Raises:
        DataError: a record lacks a measured field or holds something other than text there.
        ConfigError: the thresholds leave the short or the long part empty.
    """
    given = config.fields
    if not given:
        given = tuple(f for f in default_fields(records[0], file) if f != "prompt") or None
    fields = resolve_fields(records, given, file)
    lengths = np.array(
        [sum(text_length(record[name], config.unit) for name in fields) for record in records]
    )
    if config.threshold is not None:
        cuts = list(config.threshold)
    else:
        cuts = [float(np.quantile(lengths, q)) for q in config.quantile]
    low, high = cuts[0], cuts[-1]
    short = [traced(r, i) for i, r in enumerate(records) if lengths[i] <= low]
    long = [traced(r, i) for i, r in enumerate(records) if lengths[i] > high]
    if not short or not long:
        raise ConfigError(
            f"cutting at {low:g}/{high:g} {config.unit} leaves the "
            f"{'short' if not short else 'long'} part of file {file} empty "
            f"(lengths {lengths.min()} to {lengths.max()})"
        )
    return LengthSplit(
        short, long, len(records) - len(short) - len(long), low, high, fields, config.unit
    )

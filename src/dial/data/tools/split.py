"""Split records in two: by groups of a field's value (disjoint prompts/topics) or by fraction.

By group: the distinct values of ``by`` are sorted, shuffled with the seed, and the first
``round(fraction * groups)`` groups go to the first part, so no value appears in both parts
(e.g. UKPConvArg topics A -> topics B, or target/source disjoint by prompt). By fraction: the
records are shuffled with the seed and the first ``round(fraction * records)`` go to the first
part. Both parts keep the input's order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dial.data.tools.common import Record, traced
from dial.errors import ConfigError, DataError


@dataclass(frozen=True)
class SplitConfig:
    """What to split by, and how much goes to the first part."""

    by: str | None = field(
        default=None,
        metadata={
            "help": "Field whose values are kept together (e.g. topic, prompt); "
            "none: split records at random."
        },
    )
    fraction: float = field(
        default=0.5, metadata={"help": "Share of the groups (or records) in the first part."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the shuffle."})

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"fraction must be between 0 and 1 (exclusive), got {self.fraction}")


@dataclass
class SplitResult:
    """The two parts, and the group values of each (empty when split by fraction)."""

    first: list[Record]
    second: list[Record]
    first_groups: list[Any]
    second_groups: list[Any]

    def summary(self, by: str | None) -> str:
        text = f"split into {len(self.first)} + {len(self.second)} records"
        if by is not None:
            text += f" by {by} ({len(self.first_groups)} + {len(self.second_groups)} groups)"
        return text


def _group_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def split_records(records: Sequence[Record], config: SplitConfig, file: str) -> SplitResult:
    """Split ``records`` (see the module doc); each output record is traced.

    Raises:
        DataError: a record lacks the ``by`` field.
        ConfigError: the fraction leaves a part empty.
    """
    if config.by is None:
        order = list(range(len(records)))
        random.Random(config.seed).shuffle(order)
        first_ids = set(order[: round(config.fraction * len(records))])
        first_groups: list[Any] = []
        second_groups: list[Any] = []
        units = f"{len(records)} records"
    else:
        keys = []
        values: dict[str, Any] = {}
        for index, record in enumerate(records):
            if config.by not in record:
                present = ", ".join(sorted(record)) or "none"
                raise DataError(
                    f"missing (fields present: {present})", file=file, record=index, field=config.by
                )
            key = _group_key(record[config.by])
            keys.append(key)
            values.setdefault(key, record[config.by])
        groups = sorted(values)
        random.Random(config.seed).shuffle(groups)
        cut = round(config.fraction * len(groups))
        chosen = set(groups[:cut])
        first_ids = {index for index, key in enumerate(keys) if key in chosen}
        first_groups = [values[key] for key in sorted(chosen)]
        second_groups = [values[key] for key in sorted(set(groups[cut:]))]
        units = f"{len(groups)} groups of {config.by}"
    first = [traced(r, i) for i, r in enumerate(records) if i in first_ids]
    second = [traced(r, i) for i, r in enumerate(records) if i not in first_ids]
    if not first or not second:
        raise ConfigError(
            f"fraction {config.fraction} of {units} in file {file} leaves a part empty"
        )
    return SplitResult(first, second, first_groups, second_groups)

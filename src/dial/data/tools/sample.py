"""Few-shot -> full: K records drawn (seeded), and the same K repeated N times.

The paper's release ships both: the "just_sample" file holds the K examples, the "sampler" file
holds them repeated (10 examples x 1000 = 10000 records), so that an epoch of the few-shot domain
is as long as one of the full domain. The K records keep the input's order; the sampler file is
the K records N times over, in that order (training shuffles it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from dial.data.tools.common import Record, traced
from dial.errors import ConfigError


@dataclass(frozen=True)
class SampleConfig:
    """How many examples and how many repeats."""

    examples: int = field(default=10, metadata={"help": "K: examples drawn (without replacement)."})
    repeats: int = field(
        default=1000, metadata={"help": "N: times the sampler file repeats the K examples."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the draw."})

    def __post_init__(self) -> None:
        if self.examples < 1:
            raise ConfigError(f"examples must be at least 1, got {self.examples}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")


def sample_records(
    records: Sequence[Record], config: SampleConfig, file: str
) -> tuple[list[Record], list[Record]]:
    """(just_sample: the K drawn records, sampler: those K repeated N times), traced.

    Raises:
        ConfigError: K is larger than the number of records.
    """
    if config.examples > len(records):
        raise ConfigError(
            f"{config.examples} examples asked but file {file} holds only {len(records)} records"
        )
    chosen = sorted(random.Random(config.seed).sample(range(len(records)), config.examples))
    just_sample = [traced(records[index], index) for index in chosen]
    sampler = [dict(record) for _ in range(config.repeats) for record in just_sample]
    return just_sample, sampler

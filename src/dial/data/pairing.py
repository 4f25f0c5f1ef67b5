"""Pairing source batches with target batches for domain adaptation.

An epoch is a list of (source batch, target batch) pairs of example indices:

- ``truncate``: the epoch ends when the smaller side has been covered once
  (``min(⌈n_s / b_s⌉, ⌈n_t / b_t⌉)`` pairs of batches; with equal batch sizes, min(n_s, n_t)
  examples of each side);
- ``wrap``: the epoch covers the larger side once; the smaller one cycles, reshuffled each time
  it wraps.

Each side is drawn from a stream of passes over its data; every pass is a fresh permutation
(length-grouped when asked), a pure function of (seed, epoch, pass), so the target is
re-permuted every epoch and a resumed run replays the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dial.data.tokenize import plan_batches

PAIRINGS = ("truncate", "wrap")


def _stream(
    lengths: Sequence[int],
    batch_size: int,
    count: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    length_group: int,
) -> list[list[int]]:
    """`count` batches from consecutive passes over the data, a new order every pass."""
    batches: list[list[int]] = []
    passes = 0
    while len(batches) < count:
        batches += plan_batches(
            lengths,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch * 1000 + passes,
            length_group=length_group,
        )
        passes += 1
    return batches[:count]


def plan_paired_epoch(
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    source_batch_size: int,
    target_batch_size: int,
    *,
    pairing: str,
    seed: int,
    epoch: int,
    shuffle_target: bool = True,
    length_group: int = 0,
) -> list[tuple[list[int], list[int]]]:
    """The (source batch, target batch) pairs of one epoch."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing '{pairing}'; choose one of {', '.join(PAIRINGS)}")
    n_source = math.ceil(len(source_lengths) / source_batch_size)
    n_target = math.ceil(len(target_lengths) / target_batch_size)
    count = min(n_source, n_target) if pairing == "truncate" else max(n_source, n_target)
    source = _stream(
        source_lengths,
        source_batch_size,
        count,
        seed=seed,
        epoch=epoch,
        shuffle=True,
        length_group=length_group,
    )
    target = _stream(
        target_lengths,
        target_batch_size,
        count,
        seed=seed + 7919,
        epoch=epoch if shuffle_target else 0,
        shuffle=shuffle_target,
        length_group=length_group,
    )
    return list(zip(source, target, strict=True))

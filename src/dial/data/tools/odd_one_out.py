"""Odd one out: multiple-choice records from category word lists (the paper's MCQ task).

A question of category C lists five items in a shuffled order: four from C and one from another
category, the odd one out. The record has the release's MCQ fields (``configs/mcq.json``): the
odd item is ``correct`` and the four items of C are ``wrong_a`` .. ``wrong_d`` (in the order they
are listed), so ``dial train --data.task mcq`` reads the files as they are; ``category``,
``odd_category``, ``split`` and ``id`` say where each question came from.

Each category's words are first split (seeded) into disjoint train/val/test pools, and a
question of a split draws all five items from that split's pools, so no val or test item is
ever seen in training. The files are named as in the release, ``[category]_sub_out_[split]``:
category C's file holds the questions whose four majority items come from C (the setting moves
from some categories to a held-out one). Questions within a file are distinct.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dial.data.tools.common import Record
from dial.data.tools.food_categories import FOOD_CATEGORIES
from dial.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
WRONG_FIELDS = ("wrong_a", "wrong_b", "wrong_c", "wrong_d")
PROMPT = "Which one of these does not belong with the others: {items}?"


@dataclass(frozen=True)
class OddOneOutConfig:
    """Which categories, how many questions, and how the word lists are split."""

    categories: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Categories to build files for (default: all)."}
    )
    odd_from: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Categories the odd item is drawn from (default: every other one). Leave a "
            "held-out target category out, so that its words never appear in source questions."
        },
    )
    sizes: tuple[int, ...] = field(
        default=(1000, 200, 200), metadata={"help": "Questions per category in train, val, test."}
    )
    word_fractions: tuple[float, ...] = field(
        default=(0.6, 0.2, 0.2),
        metadata={"help": "Shares of each category's words in the train, val, test pools."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the pools and the questions."})
    template: str = field(
        default=PROMPT, metadata={"help": "The question; {items} is replaced by the items."}
    )

    def __post_init__(self) -> None:
        if len(self.sizes) != 3 or min(self.sizes) < 1:
            raise ConfigError(
                f"sizes takes three positive counts (train val test), got {self.sizes}"
            )
        fractions = self.word_fractions
        if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1.0):
            raise ConfigError(
                f"word_fractions takes three positive shares summing to 1, got {fractions}"
            )
        if "{items}" not in self.template:
            raise ConfigError("template must contain {items}")


def load_word_lists(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Category word lists from a JSON object ``{"category": ["item", ...], ...}``.

    Raises:
        DataError: not such an object, an empty or repeated item, or an item in two categories.
    """
    file = str(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("file does not exist", file=file) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"not a readable JSON file ({exc})", file=file) from exc
    if not isinstance(raw, dict):
        raise DataError('expected an object {"category": ["item", ...]}', file=file)
    lists = {}
    for category, words in raw.items():
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError("expected a list of non-empty strings", file=file, field=category)
        lists[category] = tuple(w.strip() for w in words)
    check_word_lists(lists, file)
    return lists


def check_word_lists(lists: Mapping[str, Sequence[str]], file: str | None = None) -> None:
    """Items must be distinct within and across categories (compared lower-cased)."""
    owner: dict[str, str] = {}
    for category, words in lists.items():
        for word in words:
            key = word.lower()
            if key in owner:
                where = "twice" if owner[key] == category else f"also in '{owner[key]}'"
                raise DataError(f"item {word!r} is listed {where}", file=file, field=category)
            owner[key] = category


def word_pools(
    lists: Mapping[str, Sequence[str]], fractions: Sequence[float], seed: int
) -> dict[str, dict[str, list[str]]]:
    """Category -> split -> its words: each list shuffled (seeded) and cut by ``fractions``."""
    pools = {}
    for category, words in lists.items():
        shuffled = list(words)
        random.Random(f"{seed}/{category}").shuffle(shuffled)
        n_train = round(fractions[0] * len(shuffled))
        n_val = round(fractions[1] * len(shuffled))
        pools[category] = {
            "train": shuffled[:n_train],
            "val": shuffled[n_train : n_train + n_val],
            "test": shuffled[n_train + n_val :],
        }
    return pools


def build_questions(
    category: str,
    split: str,
    pools: Mapping[str, Mapping[str, Sequence[str]]],
    count: int,
    config: OddOneOutConfig,
) -> list[Record]:
    """``count`` distinct questions of ``category`` from the ``split`` pools.

    Raises:
        ConfigError: a pool has fewer than four words, or fewer distinct questions exist.
    """
    majority_pool = list(pools[category][split])
    others = [c for c in config.odd_from or pools if c != category and pools[c][split]]
    if not others:
        raise ConfigError(f"{category}: no other category to draw its odd items from")
    possible = math.comb(len(majority_pool), len(WRONG_FIELDS)) * sum(
        len(pools[c][split]) for c in others
    )
    if count > possible:
        raise ConfigError(
            f"{category} {split}: {count} questions asked but its pool of "
            f"{len(majority_pool)} words and the other categories allow {possible} distinct ones"
        )
    rng = random.Random(f"{config.seed}/{category}/{split}")
    seen: set[tuple[frozenset[str], str]] = set()
    records = []
    while len(records) < count:
        majority = rng.sample(majority_pool, len(WRONG_FIELDS))
        odd_category = rng.choice(others)
        odd = rng.choice(list(pools[odd_category][split]))
        key = (frozenset(majority), odd)
        if key in seen:
            continue
        seen.add(key)
        items = [*majority, odd]
        rng.shuffle(items)
        listed = [item for item in items if item != odd]
        records.append(
            {
                "prompt": config.template.format(items=", ".join(items)),
                "correct": odd,
                **dict(zip(WRONG_FIELDS, listed, strict=True)),
                "category": category,
                "odd_category": odd_category,
                "split": split,
                "id": f"{category}-{split}-{len(records)}",
            }
        )
    return records


def build_odd_one_out(
    config: OddOneOutConfig, lists: Mapping[str, Sequence[str]] = FOOD_CATEGORIES
) -> dict[str, list[Record]]:
    """File stem (``[category]_sub_out_[split]``) -> its questions.

    Raises:
        ConfigError: an unknown category, fewer than two categories, or pools too small.
    """
    check_word_lists(lists)
    if len(lists) < 2:
        raise ConfigError("odd one out needs at least two categories")
    categories = config.categories or tuple(lists)
    unknown = [c for c in (*categories, *(config.odd_from or ())) if c not in lists]
    if unknown:
        raise ConfigError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
            f"(known: {', '.join(lists)})"
        )
    pools = word_pools(lists, config.word_fractions, config.seed)
    return {
        f"{category}_sub_out_{split}": build_questions(category, split, pools, count, config)
        for category in categories
        for split, count in zip(SPLITS, config.sizes, strict=True)
    }

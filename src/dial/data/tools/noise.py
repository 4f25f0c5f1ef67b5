"""Clean -> noisy: seeded character and word noise on the chosen text fields.

Word noise runs first, then character noise, on each field of each record with its own random
stream (seeded by the seed, the record's index and the field's name), so a record's noise does
not depend on which other records or fields are processed.

Word noise: each word (a run of non-space characters) is chosen independently with
probability q, and a chosen word is dropped, duplicated, or swapped with the next word (equally
likely; swap only when the next word is editable, not chosen itself and different). Character
noise: each non-space character is chosen independently with probability p, and a chosen
character gets an inserted character before it, is deleted, is substituted by another character
of the alphabet, or is swapped with the next character (equally likely; the same rule for swaps).
Spans matching ``protect`` (by default the role tags ``Human:``, ``Assistant:``) and whitespace
are never edited, so line structure and prompt templates survive.

Every edit (a swap included) changes the text by one Damerau-Levenshtein operation, so the
expected share of edited units is exactly p (or q); the edit distance between the clean and the
noisy text is at most the number of edits (adjacent edits can merge). :class:`NoiseReport`
gives the measured shares.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dial.data.tools.common import (
    ROLE_TAGS,
    Record,
    check_rate,
    compile_protect,
    protected_mask,
    record_rng,
    resolve_fields,
    rewrite_fields,
)
from dial.errors import ConfigError

CHAR_OPS = ("insert", "delete", "substitute", "swap")
WORD_OPS = ("drop", "duplicate", "swap")


@dataclass(frozen=True)
class NoiseConfig:
    """How much noise, and where."""

    char_rate: float = field(
        default=0.1, metadata={"help": "p: probability that a non-space character is edited."}
    )
    word_rate: float = field(
        default=0.0, metadata={"help": "q: probability that a word is dropped/duplicated/swapped."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the noise."})
    alphabet: str = field(
        default=string.ascii_lowercase,
        metadata={"help": "Characters that insertions and substitutions draw from."},
    )
    protect: str = field(
        default=ROLE_TAGS, metadata={"help": "Regex of spans never edited ('' for none)."}
    )
    fields: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "Text fields to noise (default: the format's prompt and responses)."},
    )

    def __post_init__(self) -> None:
        check_rate("char_rate", self.char_rate)
        check_rate("word_rate", self.word_rate)
        if len(set(self.alphabet)) < 2:
            raise ConfigError("alphabet needs at least two different characters")
        compile_protect(self.protect)


@dataclass
class NoiseReport:
    """What was edited: eligible units seen and edits made, by kind."""

    records: int = 0
    fields: tuple[str, ...] = ()
    chars_seen: int = 0
    words_seen: int = 0
    char_edits: Counter[str] = field(default_factory=Counter)
    word_edits: Counter[str] = field(default_factory=Counter)

    @property
    def char_rate(self) -> float:
        """Measured share of eligible characters edited."""
        return sum(self.char_edits.values()) / max(self.chars_seen, 1)

    @property
    def word_rate(self) -> float:
        """Measured share of eligible words edited."""
        return sum(self.word_edits.values()) / max(self.words_seen, 1)

    def summary(self) -> str:
        return (
            f"noised {self.records} records ({', '.join(self.fields)}): "
            f"characters {sum(self.char_edits.values())}/{self.chars_seen} edited "
            f"({self.char_rate:.4f}; {_kinds(self.char_edits)}), "
            f"words {sum(self.word_edits.values())}/{self.words_seen} edited "
            f"({self.word_rate:.4f}; {_kinds(self.word_edits)})"
        )


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} {counts[kind]}" for kind in sorted(counts)) or "none"


def noise_characters(
    text: str,
    rate: float,
    rng: random.Random,
    alphabet: str,
    protected: Sequence[bool],
    report: NoiseReport,
) -> str:
    """Character noise at ``rate`` per non-space, unprotected character (see the module doc)."""
    editable = [
        not locked and not char.isspace() for char, locked in zip(text, protected, strict=True)
    ]
    chosen = [ok and rng.random() < rate for ok in editable]
    report.chars_seen += sum(editable)
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not chosen[i]:
            out.append(char)
            i += 1
            continue
        after = i + 1
        can_swap = (
            after < len(text) and editable[after] and not chosen[after] and text[after] != char
        )
        op = rng.choice(CHAR_OPS if can_swap else CHAR_OPS[:3])
        report.char_edits[op] += 1
        if op == "insert":
            out += [rng.choice(alphabet), char]
        elif op == "substitute":
            out.append(rng.choice([c for c in alphabet if c != char]))
        elif op == "swap":
            out += [text[after], char]
            i += 1
        i += 1
    return "".join(out)


_WORD = re.compile(r"(\S+)(\s*)")


def _newlines_first(separator: str) -> tuple[int, int]:
    return separator.count("\n"), len(separator)


def noise_words(
    text: str,
    rate: float,
    rng: random.Random,
    pattern: re.Pattern[str] | None,
    report: NoiseReport,
) -> str:
    """Word noise at ``rate`` per unprotected word (see the module doc).

    A dropped word takes one of the separators around it with it, keeping the one with more
    line breaks, so lines are not joined.
    """
    mask = protected_mask(text, pattern)
    lead = text[: len(text) - len(text.lstrip())]
    matches = list(_WORD.finditer(text))
    words = [(m.group(1), m.group(2)) for m in matches]
    editable = [not any(mask[m.start() : m.end(1)]) for m in matches]
    chosen = [ok and rng.random() < rate for ok in editable]
    report.words_seen += sum(editable)
    out: list[list[str]] = []
    i = 0
    while i < len(words):
        word, separator = words[i]
        if not chosen[i]:
            out.append([word, separator])
            i += 1
            continue
        after = i + 1
        can_swap = (
            after < len(words) and editable[after] and not chosen[after] and words[after][0] != word
        )
        op = rng.choice(WORD_OPS if can_swap else WORD_OPS[:2])
        report.word_edits[op] += 1
        if op == "drop":
            if out:
                out[-1][1] = max(out[-1][1], separator, key=_newlines_first)
            else:
                lead = max(lead, separator, key=_newlines_first)
        elif op == "duplicate":
            out += [[word, " "], [word, separator]]
        else:
            out += [[words[after][0], separator], [word, words[after][1]]]
            i += 1
        i += 1
    return lead + "".join(word + separator for word, separator in out)


def add_noise(
    records: Sequence[Record], config: NoiseConfig, file: str
) -> tuple[list[Record], NoiseReport]:
    """Noisy, traced copies of ``records`` (see the module doc), and what was edited.

    Raises:
        DataError: a record lacks a chosen field or holds something other than text there.
    """
    fields = resolve_fields(records, config.fields, file)
    pattern = compile_protect(config.protect)
    report = NoiseReport(records=len(records), fields=fields)

    def rewrite(text: str, index: int, name: str) -> str:
        rng = record_rng(config.seed, index, name)
        text = noise_words(text, config.word_rate, rng, pattern, report)
        mask = protected_mask(text, pattern)
        return noise_characters(text, config.char_rate, rng, config.alphabet, mask, report)

    return rewrite_fields(records, fields, rewrite, file), report

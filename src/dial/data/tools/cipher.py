"""A seeded word cipher: text rewritten into an unseen "language" of pseudo-words.

Each word (a run of letters, any script) is replaced by a pseudo-word of consonant-vowel
syllables; the mapping is a function of the seed and the lower-cased word, so every record of
every file enciphered with the same seed uses the same mapping. Capitalisation follows the
original word (``the``/``The``/``THE`` -> ``kotan``/``Kotan``/``KOTAN``). Digits, punctuation,
whitespace and spans matching ``protect`` (by default the role tags ``Human:``, ``Assistant:``)
are kept. The mapping is one-to-one within a run: when two words of a run draw the same
pseudo-word, the later of them in sorted order draws again (counted in the report), so
encipher all files of one experiment in one run to share the mapping exactly.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dial.data.tools.common import (
    ROLE_TAGS,
    Record,
    compile_protect,
    protected_mask,
    resolve_fields,
    rewrite_fields,
)
from dial.errors import ConfigError

WORD = re.compile(r"[^\W\d_]+")
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("", "", "", "n", "r", "s", "l")


@dataclass(frozen=True)
class CipherConfig:
    """The cipher's seed and what it rewrites."""

    seed: int = field(default=0, metadata={"help": "Seed of the word -> pseudo-word mapping."})
    min_syllables: int = field(
        default=2,
        metadata={
            "help": "Syllables of the shortest pseudo-word (a word of L letters gets "
            "max(min_syllables, ceil(L / 3)))."
        },
    )
    protect: str = field(
        default=ROLE_TAGS, metadata={"help": "Regex of spans kept as they are ('' for none)."}
    )
    fields: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "Text fields to encipher (default: the format's prompt and responses)."},
    )

    def __post_init__(self) -> None:
        if self.min_syllables < 1:
            raise ConfigError(f"min_syllables must be at least 1, got {self.min_syllables}")
        compile_protect(self.protect)


def _pseudo_word(seed: int, key: str, attempt: int, min_syllables: int) -> str:
    rng = random.Random(f"{seed}/{key}/{attempt}")
    syllables = max(min_syllables, math.ceil(len(key) / 3))
    return "".join(
        rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)
    )


def _match_case(original: str, pseudo: str) -> str:
    if len(original) > 1 and original.isupper():
        return pseudo.upper()
    if original[0].isupper():
        return pseudo.capitalize()
    return pseudo


class WordCipher:
    """The word -> pseudo-word mapping of one run (see the module doc)."""

    def __init__(self, seed: int, min_syllables: int = 2) -> None:
        self.seed = seed
        self.min_syllables = min_syllables
        self.mapping: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        self._spelled: dict[str, str] = {}  # word as written -> its pseudo-word as written
        self.collisions = 0

    def fit(self, words: Iterable[str]) -> WordCipher:
        """Assign pseudo-words to ``words`` (lower-cased) in sorted order."""
        for key in sorted({word.lower() for word in words}.difference(self.mapping)):
            self._assign(key)
        return self

    def _assign(self, key: str) -> str:
        attempt = 0
        pseudo = _pseudo_word(self.seed, key, attempt, self.min_syllables)
        while pseudo in self._owner:
            self.collisions += 1
            attempt += 1
            pseudo = _pseudo_word(self.seed, key, attempt, self.min_syllables)
        self.mapping[key] = pseudo
        self._owner[pseudo] = key
        return pseudo

    def word(self, word: str) -> str:
        """The pseudo-word of ``word``, in its capitalisation."""
        pseudo = self._spelled.get(word)
        if pseudo is None:
            key = word.lower()
            pseudo = _match_case(word, self.mapping.get(key) or self._assign(key))
            self._spelled[word] = pseudo
        return pseudo

    def text(self, text: str, pattern: re.Pattern[str] | None = None) -> str:
        """``text`` with every word outside the protected spans enciphered."""
        if pattern is None or pattern.search(text) is None:
            return WORD.sub(lambda m: self.word(m.group()), text)
        mask = protected_mask(text, pattern)
        return WORD.sub(
            lambda m: m.group() if any(mask[m.start() : m.end()]) else self.word(m.group()),
            text,
        )


@dataclass
class CipherReport:
    """What one run enciphered."""

    records: int = 0
    fields: tuple[str, ...] = ()
    vocabulary: int = 0
    collisions: int = 0

    def summary(self) -> str:
        return (
            f"enciphered {self.records} records ({', '.join(self.fields)}): "
            f"{self.vocabulary} distinct words, {self.collisions} pseudo-word collisions redrawn"
        )


def _words(text: str, pattern: re.Pattern[str] | None) -> list[str]:
    """The words of ``text`` outside the protected spans."""
    if pattern is None or pattern.search(text) is None:
        return WORD.findall(text)
    mask = protected_mask(text, pattern)
    return [m.group() for m in WORD.finditer(text) if not any(mask[m.start() : m.end()])]


def encipher_files(
    files: Sequence[tuple[str, Sequence[Record]]], config: CipherConfig
) -> tuple[list[list[Record]], CipherReport]:
    """Encipher several files' records with one shared mapping.

    Args:
        files: (file name for messages, records) of each input.

    Returns:
        The enciphered, traced records of each file, and the report.

    Raises:
        DataError: a record lacks a chosen field or holds something other than text there.
    """
    pattern = compile_protect(config.protect)
    cipher = WordCipher(config.seed, config.min_syllables)
    resolved = []
    vocabulary: set[str] = set()
    for file, records in files:
        fields = resolve_fields(records, config.fields, file)
        resolved.append(fields)
        for record in records:
            for name in fields:
                vocabulary.update(_words(record[name], pattern))
    cipher.fit(vocabulary)
    outputs = [
        rewrite_fields(records, fields, lambda text, _i, _n: cipher.text(text, pattern), file)
        for (file, records), fields in zip(files, resolved, strict=True)
    ]
    report = CipherReport(
        records=sum(len(records) for _, records in files),
        fields=tuple(dict.fromkeys(name for fields in resolved for name in fields)),
        vocabulary=len(cipher.mapping),
        collisions=cipher.collisions,
    )
    return outputs, report

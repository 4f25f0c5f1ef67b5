"""Translation of the text fields with a seq2seq model (NLLB-style) through ``transformers``.

Texts are cut into pieces: lines (at ``\\n``), and around spans matching ``protect`` (by default
the role tags ``Human:``, ``Assistant:``, kept untranslated so the prompt template survives);
the whitespace around a piece is kept. Each distinct piece of the whole file is translated once
(identical lines in many records cost one translation), in batches of similar length, with the
target language forced as the first generated token (``forced_bos_token_id``). Translations are
appended to a JSONL side file, ``{"source", "translation", "model", "src_lang", "tgt_lang"}`` a
line, flushed after every batch: a rerun (after a crash, or on another file with overlapping
text) translates only the pieces the file does not hold for the same model and languages.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dial.data.tools.common import ROLE_TAGS, Record, compile_protect, resolve_fields, traced
from dial.errors import ConfigError, DataError

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")

TranslateBatch = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class TranslateConfig:
    """The model, the languages and the generation settings."""

    tgt_lang: str = field(
        metadata={
            "help": "Target language code of the model's tokenizer (NLLB: kor_Hang, "
            "zho_Hans, tha_Thai, ...)."
        }
    )
    src_lang: str = field(default="eng_Latn", metadata={"help": "Source language code."})
    model: str = field(
        default="facebook/nllb-200-distilled-600M",
        metadata={"help": "Seq2seq model: a local folder or a hub id (needs the hub)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per generate call."})
    max_input_tokens: int = field(
        default=512, metadata={"help": "Longer pieces are cut to this many tokens (counted)."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per piece."})
    num_beams: int = field(default=1, metadata={"help": "Beam width (1: greedy)."})
    device: str = field(
        default="auto", metadata={"help": "auto: cuda if present.", "choices": DEVICES}
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype.", "choices": DTYPES})
    protect: str = field(
        default=ROLE_TAGS, metadata={"help": "Regex of spans kept untranslated ('' for none)."}
    )
    fields: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "Text fields to translate (default: the format's prompt and responses)."},
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_input_tokens", "max_new_tokens", "num_beams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        compile_protect(self.protect)


# ---------------------------------------------------------------- pieces of text

_EDGES = re.compile(r"^(\s*)(.*?)(\s*)$", re.DOTALL)
Piece = tuple[str, bool]  # (text, translate it?)


def text_pieces(text: str, pattern: re.Pattern[str] | None) -> list[Piece]:
    """``text`` as pieces whose concatenation is ``text``; the flagged ones are translated.

    >>> text_pieces("Human: Hi there\\n\\nAssistant:", compile_protect(ROLE_TAGS))
    [('Human:', False), (' ', False), ('Hi there', True), ('\\n', False), ('\\n', False), \
('Assistant:', False)]
    """
    pieces: list[Piece] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            pieces.append(("\n", False))
        spans = [m.span() for m in pattern.finditer(line) if m.end() > m.start()] if pattern else []
        start = 0
        for begin, end in [*spans, (len(line), len(line))]:
            match = _EDGES.match(line[start:begin])
            assert match is not None  # the pattern matches every string
            lead, core, trail = match.groups()
            pieces += [(lead, False), (core, True), (trail, False)]
            pieces.append((line[begin:end], False))
            start = end
    return [(piece, flag) for piece, flag in pieces if piece]


# ---------------------------------------------------------------- the resumable cache


class TranslationCache:
    """The JSONL side file of translations for one model and language pair (see the module doc).

    Lines for other models or languages are kept in the file and ignored. A last line cut short
    by a crash is removed on opening.
    """

    def __init__(self, path: str | Path, model: str, src_lang: str, tgt_lang: str) -> None:
        self.path = Path(path)
        self.key = {"model": model, "src_lang": src_lang, "tgt_lang": tgt_lang}
        self.entries: dict[str, str] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete, newline, partial = raw.rpartition(b"\n")
        if partial:  # a line without its newline: written in part when the run stopped
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete) + len(newline))
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"the translation cache is not UTF-8 text ({exc.reason})", file=str(self.path)
            ) from exc
        for number, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise DataError(
                    f"line {number + 1} of the translation cache is not valid JSON ({exc}); "
                    "delete the file to start afresh",
                    file=str(self.path),
                ) from exc
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("source", "translation")
            ):
                raise DataError(
                    f"line {number + 1} of the translation cache lacks source/translation text",
                    file=str(self.path),
                )
            if all(entry.get(k) == v for k, v in self.key.items()):
                self.entries[entry["source"]] = entry["translation"]

    def __contains__(self, source: str) -> bool:
        return source in self.entries

    def __getitem__(self, source: str) -> str:
        return self.entries[source]

    def add(self, sources: Sequence[str], translations: Sequence[str]) -> None:
        """Store and append a batch, flushed to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for source, translation in zip(sources, translations, strict=True):
                entry = {"source": source, "translation": translation, **self.key}
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.entries[source] = translation
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------- records


@dataclass
class TranslateReport:
    """Counts of one run."""

    records: int = 0
    fields: tuple[str, ...] = ()
    pieces: int = 0
    unique: int = 0
    from_cache: int = 0
    translated: int = 0
    batches: int = 0

    def summary(self) -> str:
        return (
            f"translated {self.records} records ({', '.join(self.fields)}): {self.pieces} text "
            f"pieces, {self.unique} distinct; {self.from_cache} from the cache, "
            f"{self.translated} translated now in {self.batches} batches"
        )


def translate_records(
    records: Sequence[Record],
    translate_batch: TranslateBatch,
    cache: TranslationCache,
    *,
    fields: Sequence[str] | None = None,
    protect: str = ROLE_TAGS,
    batch_size: int = 16,
    file: str = "<records>",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Record], TranslateReport]:
    """Translated, traced copies of ``records`` (see the module doc).

    Args:
        translate_batch: translates a list of texts, in order (e.g. a :class:`Seq2SeqTranslator`).
        cache: translations already made; the new ones are added batch by batch.
        progress: called with (pieces translated so far, pieces to translate) after each batch.

    Raises:
        DataError: a record lacks a chosen field or holds something other than text there.
    """
    chosen = resolve_fields(records, fields, file)
    pattern = compile_protect(protect)
    split = [{name: text_pieces(record[name], pattern) for name in chosen} for record in records]
    sources = [
        piece
        for by_field in split
        for pieces in by_field.values()
        for piece, flag in pieces
        if flag
    ]
    unique = list(dict.fromkeys(sources))
    missing = sorted((s for s in unique if s not in cache), key=len, reverse=True)
    report = TranslateReport(
        records=len(records),
        fields=chosen,
        pieces=len(sources),
        unique=len(unique),
        from_cache=len(unique) - len(missing),
    )
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        translations = translate_batch(batch)
        if len(translations) != len(batch):
            raise RuntimeError(f"{len(batch)} texts in, {len(translations)} translations out")
        cache.add(batch, translations)
        report.translated += len(batch)
        report.batches += 1
        if progress is not None:
            progress(report.translated, len(missing))
    out = []
    for index, (record, by_field) in enumerate(zip(records, split, strict=True)):
        new = traced(record, index)
        for name, pieces in by_field.items():
            new[name] = "".join(cache[piece] if flag else piece for piece, flag in pieces)
        out.append(new)
    return out, report


# ---------------------------------------------------------------- the model


def language_token_id(tokenizer: Any, code: str, option: str) -> int:
    """The id of a language code's token; an error when the tokenizer does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(code)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"{option} {code!r} is not a token of the model's tokenizer "
            "(NLLB language codes look like eng_Latn, kor_Hang, zho_Hans, tha_Thai)"
        )
    return int(token_id)


def _load_error(model: str, exc: Exception) -> ConfigError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"cannot load the translation model {model!r} ({reason}); give a local folder, or a "
        "hub id where the hub is reachable"
    )


class Seq2SeqTranslator:
    """Batched translation with an ``AutoModelForSeq2SeqLM`` and its tokenizer.

    The source language is set on the tokenizer when it has ``src_lang`` (NLLB, M2M100, mBART:
    it adds the language token to the input); the target language's token is forced as the first
    generated token. ``calls``, ``truncated`` (inputs cut to ``max_input_tokens``) and
    ``unfinished`` (outputs that hit ``max_new_tokens`` before the end token) are counted.
    """

    def __init__(self, config: TranslateConfig) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.config = config
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.model, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise _load_error(config.model, exc) from exc
        self.forced_bos_token_id = language_token_id(self.tokenizer, config.tgt_lang, "tgt_lang")
        if hasattr(self.tokenizer, "src_lang"):
            language_token_id(self.tokenizer, config.src_lang, "src_lang")
            self.tokenizer.src_lang = config.src_lang
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(
                config.model, dtype=getattr(torch, config.dtype), trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise _load_error(config.model, exc) from exc
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda asked but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=self.device)
        self.calls = 0
        self.truncated = 0
        self.unfinished = 0

    def __call__(self, texts: list[str]) -> list[str]:
        import torch

        limit = self.config.max_input_tokens
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        self.truncated += sum(length > limit for length in lengths)
        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                forced_bos_token_id=self.forced_bos_token_id,
                max_new_tokens=self.config.max_new_tokens,
                num_beams=self.config.num_beams,
            )
        self.calls += 1
        self.unfinished += int((~torch.isin(output[:, 1:], self.eos_ids).any(dim=1)).sum())
        decoded = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [text.strip() for text in decoded]

    def summary(self) -> str:
        return (
            f"{self.calls} generate calls on {self.device}; {self.truncated} inputs cut to "
            f"{self.config.max_input_tokens} tokens; {self.unfinished} translations stopped at "
            f"{self.config.max_new_tokens} new tokens"
        )

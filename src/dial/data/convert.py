"""Converters from public data formats into the project's record formats.

Output records (the formats of the paper's release):

- preference: ``{"prompt", "response_chosen", "response_rejected"}``
- RL train (``xstest``): preference fields plus ``"correct"`` (``"comply"`` or ``"refuse"``);
  RL eval: ``{"prompt", "correct", ...}``
- score: ``{"text", "label"}`` (``label`` a finite float), plus extra fields such as ``"prompt"``

Prompt templates:

- ``hh-rlhf``: the chosen transcript up to and including its last ``"\\n\\nAssistant:"``, with
  leading whitespace removed: ``"Human: Hi\\n\\nAssistant: Hey\\n\\nHuman: Bye\\n\\nAssistant:"``;
  the responses are what follows it in each transcript (a pair whose rejected transcript does
  not start with that prompt is skipped as ``prompt mismatch``).
- ``chat-pairs``: the turns rendered as ``"<Role>: <text>"`` joined by ``"\\n\\n"`` and followed
  by ``"\\n\\nAssistant:"``; roles ``system`` -> ``System``, ``human``/``user`` -> ``Human``,
  ``gpt``/``assistant`` -> ``Assistant``. So a one-question conversation reads
  ``"Human: <question>\\n\\nAssistant:"``, the same shape as ``hh-rlhf`` prompts.
- ``ukp-convarg``: from the file name ``<topic>_<stance>.csv``, each with hyphens read as
  spaces: ``"Topic: <topic>. Stance: <stance>. Which argument is more convincing?"``.
- ``shp``: the post (``history``) as is. ``xstest``: the prompt as is (from the prompts file).

Texts are kept as they are, except that responses lose surrounding whitespace and UKPConvArg's
``<br/>`` line breaks (with the spaces around them) become ``"\\n"``. Records that cannot become
an output record are counted in :attr:`ConversionReport.skipped` with a reason; malformed input
raises :class:`~dial.errors.DataError` naming the file, the record (0-based) and the field.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import random
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dial.data.io import read_records, write_records
from dial.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = ("hh-rlhf", "shp", "ukp-convarg", "xstest", "chat-pairs", "ellipse")

Record = dict[str, Any]

TIE = "tie (chosen == rejected)"
EMPTY_RESPONSE = "empty response"
PROMPT_MISMATCH = "prompt mismatch"
ASSISTANT_TAG = "\n\nAssistant:"
ELLIPSE_PASSWORD = b"ellipse_test"
UKP_PROMPT = "Topic: {topic}. Stance: {stance}. Which argument is more convincing?"

_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "hh-rlhf": _JSON_SUFFIXES,
    "shp": (*_JSON_SUFFIXES, ".csv", ".parquet"),
    "ukp-convarg": (".csv", ".tsv"),
    "xstest": (".csv",),
    "chat-pairs": _JSON_SUFFIXES,
    "ellipse": (".zip", ".csv"),
}
_OPTIONS: dict[str, dict[str, Any]] = {
    "hh-rlhf": {"keep_ties": False},
    "shp": {"keep_ties": False},
    "ukp-convarg": {"keep_ties": False},
    "chat-pairs": {"keep_ties": False},
    "xstest": {
        "max_pairs_per_prompt": None,
        "eval_output": None,
        "heldout_fraction": 0.0,
        "seed": 0,
    },
    "ellipse": {"score_column": "Overall"},
}
_ROLES = {
    "system": "System",
    "human": "Human",
    "user": "Human",
    "gpt": "Assistant",
    "assistant": "Assistant",
}
_BR = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


@dataclass
class ConversionReport:
    """What a conversion read, wrote and skipped.

    For every format but ``xstest``, ``records_in == records_out + sum(skipped.values())``.
    ``xstest`` pairs completions, so there ``records_in`` counts completion rows, ``records_out``
    counts (comply, refuse) pairs, and ``skipped`` counts completions (``partial refusal``,
    ``empty response``) and prompts (no pair, or held out for evaluation).
    """

    format: str
    records_in: int
    records_out: int
    skipped: dict[str, int]
    outputs: list[str]

    def summary(self) -> str:
        """One human-readable paragraph."""
        text = f"{self.format}: read {self.records_in} records, wrote {self.records_out}"
        if self.outputs:
            text += f" to {self.outputs[0]}"
        if len(self.outputs) > 1:
            text += f" (other outputs: {', '.join(self.outputs[1:])})"
        total = sum(self.skipped.values())
        if total:
            reasons = "; ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
            text += f"; skipped {total} ({reasons})"
        return text + "."


@dataclass
class _Converted:
    records: list[Record]
    records_in: int
    skipped: Counter[str]
    extra_outputs: dict[Path, list[Record]] = field(default_factory=dict)


# ---------------------------------------------------------------- shared helpers


def _value(record: Record, key: str, file: str, index: int, name: str | None = None) -> Any:
    """The field ``key`` of a record, or a DataError naming it (as ``name``, default ``key``)."""
    if key not in record:
        raise DataError(f"missing field '{key}'", file=file, record=index, field=name or key)
    return record[key]


def _text(record: Record, key: str, file: str, index: int, name: str | None = None) -> str:
    """The string field ``key`` of a record, or a DataError (naming it as ``name``)."""
    value = _value(record, key, file, index, name)
    if not isinstance(value, str):
        raise DataError(
            f"expected a string, got {type(value).__name__}",
            file=file,
            record=index,
            field=name or key,
        )
    return value


def _require_columns(rows: list[Record], columns: Iterable[str], file: str) -> None:
    """Check the first row (the header of a table) holds every needed column."""
    for column in columns:
        if column not in rows[0]:
            raise DataError(
                f"missing column '{column}' (found: {', '.join(map(str, rows[0]))})",
                file=file,
                record=0,
                field=column,
            )


def _pair(
    prompt: str, chosen: str, rejected: str, keep_ties: bool, skipped: Counter[str]
) -> Record | None:
    """A preference record, or None (counted in ``skipped``) for an empty response or a tie."""
    chosen, rejected = chosen.strip(), rejected.strip()
    if not chosen or not rejected:
        skipped[EMPTY_RESPONSE] += 1
        return None
    if chosen == rejected and not keep_ties:
        skipped[TIE] += 1
        return None
    return {"prompt": prompt, "response_chosen": chosen, "response_rejected": rejected}


def _binary_label(value: Any, file: str, index: int, column: str) -> int:
    """0 or 1 from an int, a whole float or a string '0'/'1'; anything else is a DataError."""
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    raise DataError(f"expected 0 or 1, got {value!r}", file=file, record=index, field=column)


def _parse_csv(text: str, file: str, delimiter: str, quoting: int) -> list[Record]:
    """Rows of a CSV text as dicts; a row whose width differs from the header is a DataError."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise DataError("file is empty", file=file)
    rows = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                f"row has {len(row)} fields but the header has {len(header)}",
                file=file,
                record=len(rows),
            )
        rows.append(dict(zip(header, row, strict=True)))
    if not rows:
        raise DataError("holds no records", file=file)
    return rows


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", file=file) from exc


# ---------------------------------------------------------------- hh-rlhf


def _hh_record(
    record: Record, file: str, index: int, keep_ties: bool, skipped: Counter[str]
) -> Record | None:
    chosen = _text(record, "chosen", file, index).lstrip()
    rejected = _text(record, "rejected", file, index).lstrip()
    cut = chosen.rfind(ASSISTANT_TAG)
    if cut < 0:
        raise DataError(
            "the transcript has no '\\n\\nAssistant:' turn", file=file, record=index, field="chosen"
        )
    end = cut + len(ASSISTANT_TAG)
    prompt = chosen[:end]
    if not rejected.startswith(prompt):
        skipped[PROMPT_MISMATCH] += 1
        return None
    return _pair(prompt, chosen[end:], rejected[end:], keep_ties, skipped)


def _convert_hh(files: list[Path], keep_ties: bool) -> _Converted:
    """Anthropic HH-RLHF: whole ``chosen``/``rejected`` transcripts sharing one prompt."""
    result = _Converted([], 0, Counter())
    for path in files:
        rows = read_records(path)
        result.records_in += len(rows)
        for index, row in enumerate(rows):
            record = _hh_record(row, str(path), index, keep_ties, result.skipped)
            if record is not None:
                result.records.append(record)
    return result


# ---------------------------------------------------------------- shp


def _convert_shp(files: list[Path], keep_ties: bool) -> _Converted:
    """Stanford Human Preferences: ``labels`` 1 prefers ``human_ref_A``, 0 ``human_ref_B``.

    Keeps ``post_id`` as ``"id"`` and ``domain`` where the rows have them.
    """
    result = _Converted([], 0, Counter())
    for path in files:
        file = str(path)
        rows = read_records(path)
        _require_columns(rows, ("history", "human_ref_A", "human_ref_B", "labels"), file)
        result.records_in += len(rows)
        for index, row in enumerate(rows):
            prompt = _text(row, "history", file, index)
            ref_a = _text(row, "human_ref_A", file, index)
            ref_b = _text(row, "human_ref_B", file, index)
            a_wins = _binary_label(_value(row, "labels", file, index), file, index, "labels") == 1
            chosen, rejected = (ref_a, ref_b) if a_wins else (ref_b, ref_a)
            record = _pair(prompt, chosen, rejected, keep_ties, result.skipped)
            if record is None:
                continue
            if "post_id" in row:
                record["id"] = str(row["post_id"])
            if "domain" in row:
                record["domain"] = str(row["domain"])
            result.records.append(record)
    return result


# ---------------------------------------------------------------- ukp-convarg


def _words(slug: str) -> str:
    """A file-name slug as words: 'yes-emergencies-only' -> 'yes emergencies only'."""
    return " ".join(part for part in slug.split("-") if part)


def _ukp_topic(path: Path) -> tuple[str, str]:
    """(topic, stance) slugs from '<topic>_<stance>.csv'."""
    topic, sep, stance = path.stem.partition("_")
    if not sep or not _words(topic) or not _words(stance):
        raise DataError(
            "the file name must read '<topic>_<stance>.csv' (it gives the prompt)",
            file=str(path),
            field="file name",
        )
    return topic, stance


def _convert_ukp(files: list[Path], keep_ties: bool) -> _Converted:
    """UKPConvArg1 tab-separated files: ``label`` names the more convincing of ``a1``/``a2``.

    Keeps ``"id"`` (the pair's ``#id``), ``"topic"`` and ``"stance"`` (file-name slugs).
    """
    result = _Converted([], 0, Counter())
    for path in files:
        file = str(path)
        topic, stance = _ukp_topic(path)
        prompt = UKP_PROMPT.format(topic=_words(topic), stance=_words(stance))
        rows = _parse_csv(_decode(path.read_bytes(), file), file, "\t", csv.QUOTE_NONE)
        _require_columns(rows, ("#id", "label", "a1", "a2"), file)
        result.records_in += len(rows)
        for index, row in enumerate(rows):
            label = row["label"].strip()
            if label not in ("a1", "a2"):
                raise DataError(
                    f"expected 'a1' or 'a2', got {row['label']!r}",
                    file=file,
                    record=index,
                    field="label",
                )
            loser = "a2" if label == "a1" else "a1"
            chosen, rejected = _BR.sub("\n", row[label]), _BR.sub("\n", row[loser])
            record = _pair(prompt, chosen, rejected, keep_ties, result.skipped)
            if record is not None:
                record.update(id=row["#id"], topic=topic, stance=stance)
                result.records.append(record)
    return result


# ---------------------------------------------------------------- chat-pairs


def _conversation_turns(record: Record, file: str, index: int) -> list[tuple[str, str]]:
    """(role name, text) turns of a LLaMA-Factory or MedicalGPT record, system first."""
    turns = []
    if record.get("system"):
        turns.append(("System", _text(record, "system", file, index)))
    if "conversations" in record:
        turns.extend(_sharegpt_turns(record["conversations"], file, index))
    elif "question" in record:
        turns.extend(_history_turns(record.get("history") or [], file, index))
        turns.append(("Human", _text(record, "question", file, index)))
    else:
        raise DataError(
            "missing field 'conversations' (or 'question')",
            file=file,
            record=index,
            field="conversations",
        )
    if turns[-1][0] != "Human":
        raise DataError(
            "the conversation must end with a human turn",
            file=file,
            record=index,
            field="conversations",
        )
    return turns


def _sharegpt_turns(conversation: Any, file: str, index: int) -> list[tuple[str, str]]:
    """``conversations``: a list of ``{"from": role, "value": text}`` turns."""
    if not isinstance(conversation, list) or not conversation:
        raise DataError(
            "expected a non-empty list of turns", file=file, record=index, field="conversations"
        )
    turns = []
    for number, turn in enumerate(conversation):
        name = f"conversations[{number}]"
        if not isinstance(turn, dict):
            raise DataError("expected an object", file=file, record=index, field=name)
        role = _text(turn, "from", file, index, f"{name}.from")
        if role not in _ROLES:
            raise DataError(
                f"unknown role {role!r} (known: {', '.join(_ROLES)})",
                file=file,
                record=index,
                field=f"{name}.from",
            )
        turns.append((_ROLES[role], _text(turn, "value", file, index, f"{name}.value")))
    return turns


def _history_turns(history: Any, file: str, index: int) -> list[tuple[str, str]]:
    """MedicalGPT ``history``: a list of [question, answer] pairs."""
    if not isinstance(history, list):
        raise DataError("expected a list", file=file, record=index, field="history")
    turns = []
    for number, exchange in enumerate(history):
        valid = isinstance(exchange, list) and len(exchange) == 2
        if not valid or not all(isinstance(text, str) for text in exchange):
            raise DataError(
                "expected a list of [question, answer] string pairs",
                file=file,
                record=index,
                field=f"history[{number}]",
            )
        turns.extend([("Human", exchange[0]), ("Assistant", exchange[1])])
    return turns


def _render_prompt(turns: list[tuple[str, str]]) -> str:
    """'Role: text' turns joined by blank lines, ending with the assistant's cue."""
    return "\n\n".join(f"{role}: {text}" for role, text in turns) + ASSISTANT_TAG


def _response(record: Record, key: str, file: str, index: int) -> str:
    """A response given as a string or as a ``{"from", "value"}`` turn."""
    value = record.get(key)
    if isinstance(value, dict):
        return _text(value, "value", file, index, f"{key}.value")
    return _text(record, key, file, index)


def _convert_chat(files: list[Path], keep_ties: bool) -> _Converted:
    """LLaMA-Factory / MedicalGPT preference pairs (``conversations`` or ``question``)."""
    result = _Converted([], 0, Counter())
    for path in files:
        file = str(path)
        rows = read_records(path)
        result.records_in += len(rows)
        for index, row in enumerate(rows):
            prompt = _render_prompt(_conversation_turns(row, file, index))
            chosen = _response(row, "chosen", file, index)
            rejected = _response(row, "rejected", file, index)
            record = _pair(prompt, chosen, rejected, keep_ties, result.skipped)
            if record is not None:
                result.records.append(record)
    return result


# ---------------------------------------------------------------- ellipse


def _ellipse_rows(path: Path) -> tuple[str, list[Record]]:
    """(file label, rows) of a plain CSV or of the single CSV in a (password) zip."""
    if path.suffix.lower() != ".zip":
        return str(path), _parse_csv(
            _decode(path.read_bytes(), str(path)), str(path), ",", csv.QUOTE_MINIMAL
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataError(
                    f"expected one CSV file in the zip, found {len(members)} "
                    f"({', '.join(archive.namelist()) or 'empty'})",
                    file=str(path),
                )
            data = archive.read(members[0], pwd=ELLIPSE_PASSWORD)
    except (zipfile.BadZipFile, RuntimeError) as exc:
        raise DataError(f"cannot read the zip file ({exc})", file=str(path)) from exc
    file = f"{path}:{members[0]}"
    return file, _parse_csv(_decode(data, file), file, ",", csv.QUOTE_MINIMAL)


def _score(value: str, file: str, index: int, column: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise DataError(
            f"expected a finite number, got {value!r}", file=file, record=index, field=column
        )
    return score


def _convert_ellipse(files: list[Path], score_column: str) -> _Converted:
    """ELLIPSE essays as score records ``{text, label, prompt, id}``; empty essays are skipped."""
    result = _Converted([], 0, Counter())
    for path in files:
        file, rows = _ellipse_rows(path)
        _require_columns(rows, ("text_id_kaggle", "full_text", "prompt", score_column), file)
        result.records_in += len(rows)
        for index, row in enumerate(rows):
            label = _score(row[score_column], file, index, score_column)
            if not row["full_text"].strip():
                result.skipped["empty text"] += 1
                continue
            result.records.append(
                {
                    "text": row["full_text"],
                    "label": label,
                    "prompt": row["prompt"],
                    "id": row["text_id_kaggle"],
                }
            )
    return result


# ---------------------------------------------------------------- xstest

_COMPLETION_LABELS = {"1_full_compliance": "comply", "2_full_refusal": "refuse"}
_PARTIAL = "3_partial_refusal"


_Table = tuple[Path, list[Record]]


@dataclass
class _Completion:
    model: str
    text: str


def _xstest_tables(files: list[Path]) -> tuple[_Table, list[_Table]]:
    """The prompts table and the completion tables, told apart by their columns."""
    prompts, completions = [], []
    for path in files:
        rows = read_records(path, "csv")
        if "completion" in rows[0]:
            completions.append((path, rows))
        elif "label" in rows[0] and "prompt" in rows[0]:
            prompts.append((path, rows))
        else:
            raise DataError(
                "neither an XSTest prompts file (id,prompt,type,label,...) nor a completions file "
                "(id,...,completion,...,final_label)",
                file=str(path),
            )
    where = str(files[0].parent)
    if len(prompts) != 1:
        raise DataError(f"expected one XSTest prompts file, found {len(prompts)}", file=where)
    if not completions:
        raise DataError("found no XSTest completion files", file=where)
    return prompts[0], completions


def _xstest_prompts(table: _Table) -> dict[str, Record]:
    """Prompt rows by id; ``label`` must be safe or unsafe."""
    path, rows = table
    file = str(path)
    _require_columns(rows, ("id", "prompt", "type", "label"), file)
    prompts: dict[str, Record] = {}
    for index, row in enumerate(rows):
        prompt_id = _text(row, "id", file, index)
        label = _text(row, "label", file, index)
        if label not in ("safe", "unsafe"):
            raise DataError(
                f"expected 'safe' or 'unsafe', got {label!r}",
                file=file,
                record=index,
                field="label",
            )
        if prompt_id in prompts:
            raise DataError(f"duplicate id {prompt_id!r}", file=file, record=index, field="id")
        prompts[prompt_id] = {
            "id": prompt_id,
            "prompt": _text(row, "prompt", file, index),
            "type": _text(row, "type", file, index),
            "label": label,
        }
    return prompts


def _model_name(path: Path) -> str:
    """'xstest_v2_completions_gpt4.csv' -> 'gpt4'."""
    return path.stem.rpartition("completions_")[2]


def _read_completions(
    table: _Table, prompts: dict[str, Record], skipped: Counter[str]
) -> dict[str, dict[str, list[_Completion]]]:
    """Prompt id -> 'comply'/'refuse' -> completions, of one completion table.

    A completion id is matched to a prompt id by its part after the last '-' ('v2-17' -> '17');
    the prompt text comes from the prompts file, not from the completion file's own copy.
    """
    path, rows = table
    file = str(path)
    _require_columns(rows, ("id", "completion", "final_label"), file)
    found: dict[str, dict[str, list[_Completion]]] = {}
    for index, row in enumerate(rows):
        completion_id = _text(row, "id", file, index)
        prompt_id = completion_id.rpartition("-")[2]
        if prompt_id not in prompts:
            raise DataError(
                f"id {completion_id!r} matches no prompt id", file=file, record=index, field="id"
            )
        label = _text(row, "final_label", file, index)
        text = _text(row, "completion", file, index).strip()
        if label == _PARTIAL:
            skipped["partial refusal (completions)"] += 1
        elif label not in _COMPLETION_LABELS:
            raise DataError(
                f"expected one of {', '.join([*_COMPLETION_LABELS, _PARTIAL])}, got {label!r}",
                file=file,
                record=index,
                field="final_label",
            )
        elif not text:
            skipped[EMPTY_RESPONSE] += 1
        else:
            side = found.setdefault(prompt_id, {}).setdefault(_COMPLETION_LABELS[label], [])
            side.append(_Completion(_model_name(path), text))
    return found


def _prompt_pairs(
    prompt: Record, sides: dict[str, list[_Completion]], limit: int | None, rng: random.Random
) -> list[Record]:
    """Every (comply, refuse) pair of one prompt, or ``limit`` of them drawn with ``rng``."""
    correct = "comply" if prompt["label"] == "safe" else "refuse"
    wrong = "refuse" if correct == "comply" else "comply"
    combos = list(itertools.product(sides.get(correct, []), sides.get(wrong, [])))
    if limit is not None and len(combos) > limit:
        combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), limit))]
    return [
        {
            "prompt": prompt["prompt"],
            "response_chosen": chosen.text,
            "response_rejected": rejected.text,
            "correct": correct,
            "id": prompt["id"],
            "type": prompt["type"],
            "label": prompt["label"],
            "chosen_model": chosen.model,
            "rejected_model": rejected.model,
        }
        for chosen, rejected in combos
    ]


def _check_xstest_options(
    max_pairs_per_prompt: int | None, eval_output: str | Path | None, heldout_fraction: float
) -> None:
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ConfigError(f"max_pairs_per_prompt must be at least 1, got {max_pairs_per_prompt}")
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ConfigError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    if heldout_fraction > 0 and eval_output is None:
        raise ConfigError("heldout_fraction needs eval_output (where the held-out prompts go)")


def _convert_xstest(
    files: list[Path],
    max_pairs_per_prompt: int | None,
    eval_output: str | Path | None,
    heldout_fraction: float,
    seed: int,
) -> _Converted:
    """XSTest: pair each prompt's complying and refusing completions (the right one chosen).

    Held-out prompts (the first ``round(heldout_fraction * n)`` ids after a shuffle seeded with
    ``seed``) make no pairs and are the eval records; with no held-out fraction every prompt is
    an eval record. A ``max_pairs_per_prompt`` limit keeps pairs drawn with ``seed``.
    """
    prompts_table, completion_tables = _xstest_tables(files)
    prompts = _xstest_prompts(prompts_table)
    result = _Converted([], 0, Counter())
    sides: dict[str, dict[str, list[_Completion]]] = {}
    for table in completion_tables:
        found = _read_completions(table, prompts, result.skipped)
        result.records_in += len(table[1])
        for prompt_id, by_side in found.items():
            for side, completions in by_side.items():
                sides.setdefault(prompt_id, {}).setdefault(side, []).extend(completions)
    ids = list(prompts)
    random.Random(seed).shuffle(ids)
    heldout = set(ids[: round(heldout_fraction * len(ids))])
    rng = random.Random(seed)
    for prompt_id, prompt in prompts.items():
        if prompt_id in heldout:
            result.skipped["held out for eval (prompts)"] += 1
            continue
        pairs = _prompt_pairs(prompt, sides.get(prompt_id, {}), max_pairs_per_prompt, rng)
        if not pairs:
            missing = "complying" if "comply" not in sides.get(prompt_id, {}) else "refusing"
            result.skipped[f"no {missing} completion (prompts)"] += 1
        result.records.extend(pairs)
    if eval_output is not None:
        chosen_ids = heldout if heldout_fraction > 0 else set(prompts)
        result.extra_outputs[Path(eval_output)] = [
            _eval_record(prompt) for prompt_id, prompt in prompts.items() if prompt_id in chosen_ids
        ]
    return result


def _eval_record(prompt: Record) -> Record:
    correct = "comply" if prompt["label"] == "safe" else "refuse"
    return {
        "prompt": prompt["prompt"],
        "correct": correct,
        "type": prompt["type"],
        "id": prompt["id"],
        "label": prompt["label"],
    }


# ---------------------------------------------------------------- driver

_CONVERTERS: dict[str, Callable[..., _Converted]] = {
    "hh-rlhf": _convert_hh,
    "shp": _convert_shp,
    "ukp-convarg": _convert_ukp,
    "xstest": _convert_xstest,
    "chat-pairs": _convert_chat,
    "ellipse": _convert_ellipse,
}


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _expand_inputs(fmt: str, inputs: Iterable[str | Path]) -> list[Path]:
    """Input files, with each folder replaced by its files of the format (sorted by name)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and _has_suffix(p, _SUFFIXES[fmt])
            )
            if not found:
                raise DataError(
                    f"the folder holds no {fmt} files ({', '.join(_SUFFIXES[fmt])})", file=str(path)
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError("file does not exist", file=str(path))
    if not files:
        raise DataError("no input files given")
    return files


def _options(fmt: str, given: dict[str, Any]) -> dict[str, Any]:
    """The format's options: its defaults updated with ``given``; unknown options are errors."""
    allowed = _OPTIONS[fmt]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to format '{fmt}' "
            f"(it takes: {', '.join(allowed)})"
        )
    settings = {**allowed, **given}
    if fmt == "xstest":
        _check_xstest_options(
            settings["max_pairs_per_prompt"], settings["eval_output"], settings["heldout_fraction"]
        )
    return settings


def _check_output(path: Path) -> None:
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise ConfigError(f"output file {path} must end in .jsonl or .json")


def convert(
    fmt: str, inputs: list[str | Path], output: str | Path, **options: Any
) -> ConversionReport:
    """Convert public-format files into the project's records and write them to ``output``.

    Args:
        fmt: one of :data:`FORMATS`.
        inputs: files, or folders (read as all their files of that format).
        output: a ``.jsonl`` (one object a line) or ``.json`` (an array) file, written atomically.
        options: ``keep_ties`` (preference formats); ``max_pairs_per_prompt``, ``eval_output``,
            ``heldout_fraction``, ``seed`` (``xstest``); ``score_column`` (``ellipse``).

    Raises:
        DataError: an unknown format, a missing input, or malformed input data.
        ConfigError: an option the format does not take, a bad option value or output suffix.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})", field="format")
    settings = _options(fmt, options)
    output_path = Path(output)
    targets = [output_path]
    if settings.get("eval_output") is not None:
        targets.append(Path(settings["eval_output"]))
    for target in targets:
        _check_output(target)
    if len({t.resolve() for t in targets}) != len(targets):
        raise ConfigError("output and eval_output must be different files")
    converted = _CONVERTERS[fmt](_expand_inputs(fmt, inputs), **settings)
    write_records(converted.records, output_path)
    for path, records in converted.extra_outputs.items():
        write_records(records, path)
    return ConversionReport(
        format=fmt,
        records_in=converted.records_in,
        records_out=len(converted.records),
        skipped=dict(converted.skipped),
        outputs=[str(t) for t in targets],
    )


# ---------------------------------------------------------------- command line

_CLI_OPTIONS = (
    "keep_ties",
    "max_pairs_per_prompt",
    "heldout_fraction",
    "eval_output",
    "score_column",
    "seed",
)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dial data convert`` to ``parser``."""
    parser.add_argument("--format", required=True, choices=FORMATS, help="the input format")
    parser.add_argument(
        "inputs", nargs="+", help="input files, or folders (read as all their files of the format)"
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output file: .jsonl (one record a line) or .json"
    )
    parser.add_argument(
        "--keep-ties",
        action="store_true",
        help="keep pairs whose chosen and rejected responses are equal (preference formats)",
    )
    parser.add_argument(
        "--max-pairs-per-prompt",
        type=int,
        help="xstest: at most this many (comply, refuse) pairs per prompt, drawn with --seed",
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        help="xstest: fraction of prompts held out of the pairs and written to --eval-output",
    )
    parser.add_argument(
        "--eval-output",
        help="xstest: file for RL eval records {prompt, correct, type} (held-out or all prompts)",
    )
    parser.add_argument("--score-column", help="ellipse: the score column (default: Overall)")
    parser.add_argument("--seed", type=int, help="xstest: seed of the held-out and pair draws")


def run_convert(args: argparse.Namespace) -> int:
    """Run ``dial data convert``: convert, print the report summary, return the exit code."""
    options = {
        name: getattr(args, name)
        for name in _CLI_OPTIONS
        if getattr(args, name, None) not in (None, False)
    }
    report = convert(args.format, args.inputs, args.output, **options)
    print(report.summary())
    return 0

"""Loading, validation, truncation, batching and padding."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from dial.data.datasets import split_heldout
from dial.data.io import read_records
from dial.data.records import Example, load_column_config, load_examples, parse_records
from dial.data.tokenize import (
    EncodedExample,
    SequenceFormat,
    collate,
    encode_examples,
    plan_batches,
    sequence_format,
    truncate,
)
from dial.errors import DataError
from dial.models.registry import resolve_model

PREF = load_column_config(None, "preference")
RECORDS = [
    {"prompt": "p1", "response_chosen": "good", "response_rejected": "bad"},
    {"prompt": "p2", "response_chosen": "fine", "response_rejected": "poor"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz"])
def test_every_file_type_reads_the_same_records(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(RECORDS))
    elif suffix == ".csv":
        pd.DataFrame(RECORDS).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(RECORDS).to_parquet(path)
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in RECORDS).encode()))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_records(path) == RECORDS


def test_release_json_file_type_reads_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_records(path) == RECORDS


def _error(call) -> DataError:
    with pytest.raises(DataError) as info:
        call()
    return info.value


def test_bad_json_line_in_the_middle_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{broken\n" + json.dumps(RECORDS[1]) + "\n")
    error = _error(lambda: read_records(path))
    assert error.file == str(path) and error.record == 1 and "line 2" in str(error)


def test_missing_field_names_file_record_and_field(tmp_path: Path) -> None:
    records = [RECORDS[0], {"prompt": "p", "response_chosen": "c"}]
    error = _error(lambda: parse_records(records, "preference", PREF, file="f.jsonl"))
    assert (error.file, error.record, error.field) == ("f.jsonl", 1, "response_rejected")


def test_non_string_text_is_an_error() -> None:
    records = [{"prompt": "p", "response_chosen": 3, "response_rejected": "r"}]
    error = _error(lambda: parse_records(records, "preference", PREF, file="f"))
    assert error.field == "response_chosen" and "expected text" in str(error)


@pytest.mark.parametrize("label", ["nan", None, "high", float("inf"), True])
def test_bad_score_labels_are_errors(label) -> None:
    records = [{"text": "a", "label": 1.0}, {"text": "b", "label": label}]
    columns = load_column_config(None, "score")
    error = _error(lambda: parse_records(records, "score", columns, file="s.csv"))
    assert (error.record, error.field) == (1, "label")


def test_score_labels_from_csv_strings_are_numbers() -> None:
    columns = load_column_config(None, "score")
    examples, _ = parse_records([{"text": "a", "label": "2.5"}], "score", columns, file="s")
    assert examples[0].label == 2.5


def test_identical_and_empty_responses_are_counted_not_dropped() -> None:
    records = [
        *RECORDS,
        {"prompt": "p", "response_chosen": "same", "response_rejected": "same"},
        {"prompt": "p", "response_chosen": "", "response_rejected": "x"},
    ]
    examples, report = parse_records(records, "preference", PREF, file="f")
    assert len(examples) == 4
    assert report.identical_responses == 1 and report.empty_responses == 1
    assert "1 with identical responses" in report.summary()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("[]", "no records"),
        ("[1, 2]", "expected an object"),
        ('{"a": 1', "not valid JSON"),
    ],
)
def test_empty_and_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    assert message in str(_error(lambda: read_records(path)))


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    assert "UTF-8" in str(_error(lambda: read_records(path)))
    assert "does not exist" in str(_error(lambda: read_records(tmp_path / "nope.jsonl")))


def test_unknown_suffix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello")
    assert "file type" in str(_error(lambda: read_records(path)))


def test_dataset_config_files_of_the_release(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    assert load_column_config(root / "pref.json", "preference") == PREF
    mcq = load_column_config(root / "mcq.json", "mcq")
    assert mcq.input_columns[:2] == ("prompt", "correct") and len(mcq.input_columns) == 6
    assert load_column_config(root / "seq_pred.json", "score").target_columns == ("label",)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_columns": ["text"], "label_columns": ["x"]}))
    error = _error(lambda: load_column_config(bad, "score"))
    assert error.field == "label_columns"


def test_custom_columns_from_a_dataset_config(tmp_path: Path) -> None:
    config = tmp_path / "cols.json"
    config.write_text(json.dumps({"input_columns": ["q", "good", "bad"], "target_columns": []}))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"q": "Q", "good": "G", "bad": "B"}) + "\n")
    examples, _ = load_examples(data, "preference", load_column_config(config, "preference"))
    assert examples == [Example("Q", ("G", "B"))]


def test_truncate_keeps_the_end_of_the_response() -> None:
    prompt, response = list(range(10)), list(range(100, 106))
    assert truncate(prompt, response, 20) == (prompt, response)
    assert truncate(prompt, response, 9) == ([7, 8, 9], response)
    assert truncate(prompt, response, 4) == ([], [102, 103, 104, 105])


@pytest.fixture(scope="module")
def bert_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("minilm").name_or_path)


def test_encoding_counts_truncations_and_keeps_response_end(bert_tokenizer) -> None:
    fmt = sequence_format(bert_tokenizer, "encoder")
    long_prompt = " ".join(["start"] + ["filler"] * 50)
    examples = [Example(long_prompt, ("the very end", "other end"))]
    data = encode_examples(examples, bert_tokenizer, fmt, max_length=12)
    ids = data.examples[0].input_ids[0]
    assert len(ids) == 12
    assert bert_tokenizer.decode(ids[-4:-1]) == "the very end"
    assert ids[0] == bert_tokenizer.cls_token_id and ids[-1] == bert_tokenizer.sep_token_id
    assert "start" not in bert_tokenizer.decode(ids)
    assert data.truncated_prompts == 2 and data.truncated_responses == 0
    tight = encode_examples(
        [Example("p", ("one two three four five six seven", "x"))], bert_tokenizer, fmt, 6
    )
    assert bert_tokenizer.decode(tight.examples[0].input_ids[0][2:-1]) == "five six seven"
    assert tight.truncated_responses == 1


def test_plan_batches_is_deterministic_and_complete() -> None:
    lengths = [(i * 37) % 101 for i in range(1000)]
    first = plan_batches(lengths, 8, shuffle=True, seed=3, epoch=1, length_group=50)
    assert first == plan_batches(lengths, 8, shuffle=True, seed=3, epoch=1, length_group=50)
    assert first != plan_batches(lengths, 8, shuffle=True, seed=3, epoch=2, length_group=50)
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first)
    plain = plan_batches(lengths, 8, shuffle=True, seed=3, epoch=1)
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)
    assert spread < plain_spread / 5
    small = plan_batches(lengths, 8, shuffle=True, seed=3, epoch=1, length_group=4)
    assert sorted(i for batch in small for i in batch) == list(range(1000))
    small_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in small)
    assert spread < small_spread < plain_spread
    # a group of 4 batches holds 32 examples: every batch comes from one such block of the order
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(3 * 100_003 + 1)).tolist()
    blocks = [set(order[i : i + 32]) for i in range(0, 1000, 32)]
    assert all(any(set(batch) <= block for block in blocks) for batch in small)


def test_collate_pads_response_major_on_either_side() -> None:
    fmt = SequenceFormat((), (), (), token_types=False, pad_id=0)
    examples = [
        EncodedExample([[5, 6, 7], [8]], None, None),
        EncodedExample([[9], [10, 11]], None, None),
    ]
    right = collate(examples, fmt, "right")
    assert right["input_ids"].tolist() == [[5, 6, 7], [9, 0, 0], [8, 0, 0], [10, 11, 0]]
    left = collate(examples, fmt, "left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 9], [0, 0, 8], [0, 10, 11]]
    assert left["attention_mask"].sum().item() == 7


def test_heldout_split_is_seeded_and_disjoint() -> None:
    examples = [Example(str(i), ("a", "b")) for i in range(100)]
    train, heldout = split_heldout(examples, 0.2, seed=0)
    assert len(heldout) == 20 and len(train) == 80
    assert not {e.prompt for e in train} & {e.prompt for e in heldout}
    assert split_heldout(examples, 0.2, seed=0) == (train, heldout)
    assert split_heldout(examples, 0.2, seed=1)[1] != heldout

"""Tests of the `dial data` tools (dial.data.tools): noise, cipher, sample, split, split-length,
odd-one-out and translate, on real data from ../shared/data where the tool is about real text
(skipped where the folder is absent) and on a tiny NLLB-style model built offline for translate.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import preference_records, write_jsonl

from dial.cli import main
from dial.data.convert import convert
from dial.data.io import read_records
from dial.data.records import load_column_config, load_examples
from dial.data.tools.cipher import WORD, CipherConfig, encipher_files
from dial.data.tools.cli import TOOLS
from dial.data.tools.common import INDEX_FIELD, default_fields, resolve_fields
from dial.data.tools.food_categories import FOOD_CATEGORIES
from dial.data.tools.noise import NoiseConfig, add_noise
from dial.data.tools.odd_one_out import (
    SPLITS,
    WRONG_FIELDS,
    OddOneOutConfig,
    build_odd_one_out,
    load_word_lists,
    word_pools,
)
from dial.data.tools.sample import SampleConfig, sample_records
from dial.data.tools.split import SplitConfig, split_records
from dial.data.tools.split_length import LengthSplitConfig, split_by_length
from dial.data.tools.translate import (
    Seq2SeqTranslator,
    TranslateConfig,
    TranslationCache,
    text_pieces,
    translate_records,
)
from dial.errors import ConfigError, DataError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def without_index(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != INDEX_FIELD}


def osa_distance(a: Sequence, b: Sequence) -> int:
    """Optimal-string-alignment (Damerau-Levenshtein without repeated edits) distance, one
    numpy row at a time: d[i][j] = min over k <= j of t[k] + (j - k), where t holds the deletion,
    substitution and transposition terms."""
    codes: dict = {}
    x = np.array([codes.setdefault(v, len(codes)) for v in a], dtype=np.int64)
    y = np.array([codes.setdefault(v, len(codes)) for v in b], dtype=np.int64)
    m = len(y)
    steps = np.arange(m + 1)
    before, row = None, steps.copy()
    for i in range(1, len(x) + 1):
        t = np.empty(m + 1, dtype=np.int64)
        t[0] = i
        t[1:] = np.minimum(row[1:] + 1, row[:-1] + (y != x[i - 1]))
        if before is not None and m >= 2:
            swap = np.zeros(m + 1, dtype=bool)
            swap[2:] = (y[:-1] == x[i - 1]) & (y[1:] == x[i - 2])
            t[2:] = np.where(swap[2:], np.minimum(t[2:], before[:-2] + 1), t[2:])
        before, row = row, np.minimum.accumulate(t - steps) + steps
    return int(row[m])


def test_osa_distance_by_hand() -> None:
    assert osa_distance("kitten", "sitting") == 3
    assert osa_distance("ab", "ba") == 1
    assert osa_distance("abc", "") == 3
    assert osa_distance("", "ab") == 2
    assert osa_distance("ca", "abc") == 3  # OSA, not unrestricted Damerau-Levenshtein (2)
    assert osa_distance(["the", "cat", "sat"], ["cat", "the", "sat", "sat"]) == 2


# ---------------------------------------------------------------- fields


def test_default_fields_by_format() -> None:
    pref = {"prompt": "p", "response_chosen": "a", "response_rejected": "b", "correct": "comply"}
    assert default_fields(pref, "f") == ("prompt", "response_chosen", "response_rejected")
    assert default_fields({"chosen": "a", "rejected": "b"}, "f") == ("chosen", "rejected")
    mcq = {"prompt": "p", "correct": "c", "wrong_b": "y", "wrong_a": "x", "id": "1"}
    assert default_fields(mcq, "f") == ("prompt", "correct", "wrong_a", "wrong_b")
    assert default_fields({"text": "t", "label": 1.0, "prompt": "essay topic"}, "f") == ("text",)
    assert default_fields({"prompt": "p", "correct": "refuse"}, "f") == ("prompt",)
    with pytest.raises(ConfigError, match=r"file f: .*\(a, b\); name the text fields"):
        default_fields({"a": "x", "b": "y"}, "f")


def test_missing_or_non_text_field_names_file_record_field() -> None:
    records = [{"prompt": "p", "text": "a"}, {"prompt": "p"}]
    with pytest.raises(DataError, match=r"file in.jsonl, record 1, field 'text': missing"):
        resolve_fields(records, ("prompt", "text"), "in.jsonl")
    with pytest.raises(DataError, match=r"record 0, field 'prompt': expected text, got int"):
        resolve_fields([{"prompt": 3}], ("prompt",), "in.jsonl")


# ---------------------------------------------------------------- noise


@pytest.fixture(scope="module")
def hh_texts(shared_data: Path) -> list[str]:
    """Real transcripts: the chosen side of HH-RLHF helpful-base (test split)."""
    rows = read_records(shared_data / "hh-rlhf" / "helpful-base-test.jsonl.gz")
    return [row["chosen"] for row in rows]


@pytest.mark.data
@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_character_noise_rate_on_real_text(hh_texts: list[str], rate: float) -> None:
    records = [{"text": text} for text in hh_texts[:600]]
    noisy, report = add_noise(records, NoiseConfig(char_rate=rate, seed=3), "hh")
    assert report.chars_seen > 150_000
    assert abs(report.char_rate - rate) < 0.005  # ~4 standard errors
    assert set(report.char_edits) == {"insert", "delete", "substitute", "swap"}
    assert not report.word_edits
    # independently: the edit distance between clean and noisy text, per editable character
    short = [i for i, r in enumerate(records) if 200 <= len(r["text"]) <= 500][:60]
    distance = sum(osa_distance(records[i]["text"], noisy[i]["text"]) for i in short)
    editable = sum(len(re.sub(r"\s|\b(?:Human|Assistant):", "", records[i]["text"])) for i in short)
    assert editable > 10_000
    assert rate * 0.85 < distance / editable <= rate * 1.05 + 0.002
    # the prompt template survives: every role tag and every line break is where it was
    for clean, dirty in zip(records, noisy, strict=True):
        assert re.findall(r"\n*(?:Human|Assistant):", clean["text"]) == re.findall(
            r"\n*(?:Human|Assistant):", dirty["text"]
        )
        assert clean["text"].count("\n") == dirty["text"].count("\n")


@pytest.mark.data
def test_word_noise_rate_on_real_text(hh_texts: list[str]) -> None:
    rate = 0.1
    records = [{"text": text} for text in hh_texts[:600]]
    noisy, report = add_noise(records, NoiseConfig(char_rate=0.0, word_rate=rate, seed=1), "hh")
    assert report.words_seen > 40_000
    assert abs(report.word_rate - rate) < 0.006
    assert report.chars_seen > 0 and not report.char_edits
    assert set(report.word_edits) == {"drop", "duplicate", "swap"}
    words = [
        (r["text"].split(), n["text"].split())
        for r, n in zip(records[:300], noisy[:300], strict=True)
    ]
    distance = sum(osa_distance(a, b) for a, b in words)
    seen = sum(len([w for w in a if w not in ("Human:", "Assistant:")]) for a, _ in words)
    assert rate * 0.85 < distance / seen <= rate * 1.05
    tags = re.compile(r"\n*(?:Human|Assistant):")
    assert all(
        tags.findall(r["text"]) == tags.findall(n["text"])
        for r, n in zip(records, noisy, strict=True)
    )


def test_noise_rate_zero_is_identity_and_keeps_other_fields() -> None:
    records = preference_records(20)
    for record in records:
        record["id"] = "x"
    noisy, report = add_noise(records, NoiseConfig(char_rate=0.0, word_rate=0.0), "pairs")
    assert [without_index(r) for r in noisy] == records
    assert [r[INDEX_FIELD] for r in noisy] == list(range(20))
    assert report.chars_seen > 0 and report.char_rate == 0.0 and report.word_rate == 0.0


def test_noise_is_seeded_and_per_field() -> None:
    records = preference_records(30)
    config = NoiseConfig(char_rate=0.2, word_rate=0.2, seed=7)
    first, _ = add_noise(records, config, "pairs")
    again, _ = add_noise(records, config, "pairs")
    other, _ = add_noise(records, NoiseConfig(char_rate=0.2, word_rate=0.2, seed=8), "pairs")
    assert first == again
    assert first != other
    # a field's noise does not depend on which other fields are noised
    only_prompt, _ = add_noise(
        records, NoiseConfig(char_rate=0.2, word_rate=0.2, seed=7, fields=("prompt",)), "pairs"
    )
    assert [r["prompt"] for r in only_prompt] == [r["prompt"] for r in first]
    assert [r["response_chosen"] for r in only_prompt] == [r["response_chosen"] for r in records]


def test_noise_rate_one_edits_every_editable_character() -> None:
    records = [{"text": "Human: abc de\n\nAssistant: fgh"}]
    noisy, report = add_noise(records, NoiseConfig(char_rate=1.0, seed=0), "one")
    assert report.chars_seen == 8  # a b c d e f g h; the role tags and whitespace are protected
    assert sum(report.char_edits.values()) == 8
    assert noisy[0]["text"].startswith("Human: ") and "\n\nAssistant: " in noisy[0]["text"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"char_rate": 1.5}, "char_rate must be between 0 and 1"),
        ({"word_rate": -0.1}, "word_rate must be between 0 and 1"),
        ({"alphabet": "aaa"}, "alphabet needs at least two"),
        ({"protect": "("}, "protect is not a valid regular expression"),
    ],
)
def test_noise_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NoiseConfig(**options)


# ---------------------------------------------------------------- cipher


@pytest.fixture(scope="module")
def ukp_records(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """UKPConvArg1 pairs of all 16 topics (converted by dial data convert)."""
    output = tmp_path_factory.mktemp("ukp") / "ukp.jsonl"
    convert("ukp-convarg", [shared_data / "ukp-convarg1"], output)
    return read_jsonl(output)


@pytest.mark.data
def test_cipher_is_a_consistent_seeded_mapping(ukp_records: list[dict]) -> None:
    part_a, part_b = ukp_records[:300], ukp_records[-300:]
    (out_a, out_b), report = encipher_files([("a", part_a), ("b", part_b)], CipherConfig(seed=5))
    assert report.fields == ("prompt", "response_chosen", "response_rejected")
    mapping: dict[str, str] = {}
    for clean, coded in zip([*part_a, *part_b], [*out_a, *out_b], strict=True):
        assert {k: v for k, v in clean.items() if k not in report.fields} == {
            k: v for k, v in without_index(coded).items() if k not in report.fields
        }
        for name in report.fields:
            # digits, punctuation and whitespace are kept; only letter runs change
            assert WORD.sub("", clean[name]) == WORD.sub("", coded[name])
            words, pseudo = WORD.findall(clean[name]), WORD.findall(coded[name])
            assert len(words) == len(pseudo)
            for word, new in zip(words, pseudo, strict=True):
                assert mapping.setdefault(word.lower(), new.lower()) == new.lower()
                if word[0].isupper():
                    assert new[0].isupper()
                assert re.fullmatch(r"[a-z]+", new.lower())
    assert report.vocabulary == len(mapping)
    assert len(set(mapping.values())) == len(mapping)  # one-to-one
    assert sum(word == pseudo for word, pseudo in mapping.items()) <= 2
    again, _ = encipher_files([("a", part_a), ("b", part_b)], CipherConfig(seed=5))
    other, _ = encipher_files([("a", part_a), ("b", part_b)], CipherConfig(seed=6))
    assert again == [out_a, out_b]
    assert other[0] != out_a


def test_cipher_keeps_role_tags() -> None:
    records = [{"prompt": "Human: The THE the 42!\n\nAssistant:", "text": "x"}]
    (coded,), _ = encipher_files([("f", records)], CipherConfig(fields=("prompt",)))
    words = re.match(r"Human: (\w+) (\w+) (\w+) 42!\n\nAssistant:$", coded[0]["prompt"])
    assert words is not None
    title, upper, lower = words.groups()
    assert title == lower.capitalize() and upper == lower.upper() and lower != "the"
    assert coded[0]["text"] == "x"


# ---------------------------------------------------------------- sample


def test_sample_counts_and_identity(tmp_path: Path) -> None:
    records = preference_records(50)
    just, sampler = sample_records(records, SampleConfig(examples=10, repeats=7, seed=2), "f")
    assert len(just) == 10 and len(sampler) == 70
    indices = [r[INDEX_FIELD] for r in just]
    assert indices == sorted(set(indices))
    assert all(without_index(r) == records[r[INDEX_FIELD]] for r in just)
    assert sampler == just * 7
    assert Counter(r[INDEX_FIELD] for r in sampler) == dict.fromkeys(indices, 7)
    again, _ = sample_records(records, SampleConfig(examples=10, repeats=7, seed=2), "f")
    other, _ = sample_records(records, SampleConfig(examples=10, repeats=7, seed=3), "f")
    assert again == just and other != just
    with pytest.raises(ConfigError, match="51 examples asked but file f holds only 50"):
        sample_records(records, SampleConfig(examples=51), "f")
    with pytest.raises(ConfigError, match="repeats must be at least 1"):
        SampleConfig(repeats=0)


def test_sample_cli_writes_both_files(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "full.jsonl", preference_records(40))
    code = main(
        [
            *("data", "sample", str(source), "--examples", "10", "--repeats", "1000"),
            *("--just-sample", str(tmp_path / "just_sample.jsonl")),
            *("--sampler", str(tmp_path / "sampler.json")),
        ]
    )
    assert code == 0
    just = read_jsonl(tmp_path / "just_sample.jsonl")
    sampler = json.loads((tmp_path / "sampler.json").read_text())
    assert len(just) == 10 and len(sampler) == 10_000 and sampler[:10] == just


# ---------------------------------------------------------------- split


@pytest.mark.data
def test_split_by_topic_is_disjoint(ukp_records: list[dict]) -> None:
    result = split_records(ukp_records, SplitConfig(by="topic", fraction=0.5, seed=0), "ukp")
    first = {r["topic"] for r in result.first}
    second = {r["topic"] for r in result.second}
    assert len(first) == len(second) == 8 and not first & second
    assert sorted(first) == result.first_groups
    indices = [r[INDEX_FIELD] for r in result.first + result.second]
    assert sorted(indices) == list(range(len(ukp_records)))
    assert all(without_index(r) == ukp_records[r[INDEX_FIELD]] for r in result.first[:50])
    again = split_records(ukp_records, SplitConfig(by="topic", fraction=0.5, seed=0), "ukp")
    other = split_records(ukp_records, SplitConfig(by="topic", fraction=0.5, seed=1), "ukp")
    assert again.first_groups == result.first_groups != other.first_groups


def test_split_by_fraction_and_errors() -> None:
    records = preference_records(40)
    result = split_records(records, SplitConfig(fraction=0.25, seed=4), "f")
    assert (len(result.first), len(result.second)) == (10, 30)
    assert [r[INDEX_FIELD] for r in result.first] == sorted(r[INDEX_FIELD] for r in result.first)
    with pytest.raises(DataError, match=r"file f, record 0, field 'topic': missing"):
        split_records(records, SplitConfig(by="topic"), "f")
    with pytest.raises(ConfigError, match="fraction must be between 0 and 1"):
        SplitConfig(fraction=1.0)
    two = [{"prompt": "a"}, {"prompt": "b"}]
    with pytest.raises(ConfigError, match="leaves a part empty"):
        split_records(two, SplitConfig(by="prompt", fraction=0.1), "f")


# ---------------------------------------------------------------- split-length


@pytest.fixture(scope="module")
def essays(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    output = tmp_path_factory.mktemp("ellipse") / "essays.jsonl"
    convert("ellipse", [shared_data / "ellipse" / "ELLIPSE_Final_github_test.zip"], output)
    return read_jsonl(output)


@pytest.mark.data
def test_split_length_on_ellipse(essays: list[dict]) -> None:
    words = np.array([len(r["text"].split()) for r in essays])
    result = split_by_length(essays, LengthSplitConfig(), "essays")
    assert result.fields == ("text",) and result.low == float(np.median(words))
    assert len(result.short) + len(result.long) == len(essays) == 2571
    assert all(len(r["text"].split()) <= result.low for r in result.short)
    assert all(len(r["text"].split()) > result.low for r in result.long)
    assert abs(len(result.short) - len(result.long)) < 0.02 * len(essays)
    gap = split_by_length(essays, LengthSplitConfig(quantile=(0.3, 0.7), unit="chars"), "essays")
    chars = np.array([len(r["text"]) for r in essays])
    assert (gap.low, gap.high) == (np.quantile(chars, 0.3), np.quantile(chars, 0.7))
    assert gap.between == len(essays) - len(gap.short) - len(gap.long)
    assert abs(len(gap.short) / len(essays) - 0.3) < 0.01
    assert abs(gap.between / len(essays) - 0.4) < 0.01
    assert "between the thresholds are in neither file" in gap.summary()


def test_split_length_by_hand() -> None:
    records = [
        {
            "prompt": "a long prompt that is not counted",
            "response_chosen": c,
            "response_rejected": r,
        }
        for c, r in [("a", "b"), ("a b", "c"), ("a b c", "d e"), ("a b c d", "e f g h")]
    ]
    result = split_by_length(records, LengthSplitConfig(threshold=(3,)), "f")
    assert [r[INDEX_FIELD] for r in result.short] == [0, 1]  # 2 and 3 words
    assert [r[INDEX_FIELD] for r in result.long] == [2, 3]  # 5 and 8 words
    with pytest.raises(ConfigError, match="leaves the long part of file f empty"):
        split_by_length(records, LengthSplitConfig(threshold=(8,)), "f")
    with pytest.raises(ConfigError, match="increasing order"):
        LengthSplitConfig(quantile=(0.7, 0.3))


# ---------------------------------------------------------------- odd one out


def test_food_categories_are_disjoint_lists() -> None:
    assert set(FOOD_CATEGORIES) == {"desserts", "fruits", "vegetables", "sauces", "snacks"}
    owner: dict[str, set[str]] = {}
    for category, items in FOOD_CATEGORIES.items():
        assert len(items) >= 30 and len(set(items)) == len(items)
        for item in items:
            for word in item.lower().split():
                owner.setdefault(word, set()).add(category)
    assert {word: cats for word, cats in owner.items() if len(cats) > 1} == {}


def test_odd_one_out_questions(tmp_path: Path) -> None:
    config = OddOneOutConfig(sizes=(300, 60, 60), seed=1)
    files = build_odd_one_out(config)
    assert set(files) == {f"{c}_sub_out_{s}" for c in FOOD_CATEGORIES for s in SPLITS}
    category_of = {item: c for c, items in FOOD_CATEGORIES.items() for item in items}
    pools = word_pools(FOOD_CATEGORIES, config.word_fractions, config.seed)
    for stem, records in files.items():
        category, _, split = stem.partition("_sub_out_")
        assert len(records) == dict(zip(SPLITS, config.sizes, strict=True))[split]
        keys = set()
        for record in records:
            options = [record["correct"], *(record[f] for f in WRONG_FIELDS)]
            outside = [o for o in options if category_of[o] != category]
            assert outside == [record["correct"]]  # exactly one odd answer, and it is correct
            assert category_of[record["correct"]] == record["odd_category"] != category
            assert all(o in pools[category_of[o]][split] for o in options)
            listed = record["prompt"].partition(": ")[2].rstrip("?").split(", ")
            assert sorted(listed) == sorted(options)
            keys.add(frozenset(options))
        assert len(keys) == len(records)  # distinct questions
    # the word pools of the splits never overlap
    for category in FOOD_CATEGORIES:
        train, val, test = (set(pools[category][s]) for s in SPLITS)
        assert not (train & val or train & test or val & test)
    assert build_odd_one_out(config) == files


def test_odd_one_out_files_load_as_mcq(tmp_path: Path) -> None:
    code = main(
        [
            *("data", "odd-one-out", "--output-dir", str(tmp_path)),
            *("--categories", "fruits,snacks", "--sizes", "20", "5", "5"),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{c}_sub_out_{s}.json" for c in ("fruits", "snacks") for s in SPLITS
    )
    columns = load_column_config(PROJECT_ROOT / "configs" / "mcq.json", "mcq")
    examples, report = load_examples(tmp_path / "fruits_sub_out_train.json", "mcq", columns)
    assert len(examples) == 20 and report.identical_responses == 0
    assert all(len(e.responses) == 5 for e in examples)
    # the odd item comes from any other category, built into files or not
    assert not any(e.responses[0] in FOOD_CATEGORIES["fruits"] for e in examples)
    assert all(r in FOOD_CATEGORIES["fruits"] for e in examples for r in e.responses[1:])


def test_odd_one_out_keeps_a_held_out_category_out_of_the_source(tmp_path: Path) -> None:
    """--odd-from without the target category: its words appear in no source question."""
    source = ("desserts", "fruits", "vegetables", "sauces")
    code = main(
        [
            *("data", "odd-one-out", "--output-dir", str(tmp_path), "--sizes", "40", "5", "5"),
            *("--categories", ",".join(source), "--odd-from", ",".join(source)),
        ]
    )
    assert code == 0
    snacks = set(FOOD_CATEGORIES["snacks"])
    for category in source:
        records = json.loads((tmp_path / f"{category}_sub_out_train.json").read_text())
        assert len(records) == 40
        assert {r["odd_category"] for r in records} <= set(source) - {category}
        assert not any(r[f] in snacks for r in records for f in ("correct", *WRONG_FIELDS))
    with pytest.raises(ConfigError, match="unknown category crisps"):
        build_odd_one_out(OddOneOutConfig(odd_from=("fruits", "crisps")))
    with pytest.raises(ConfigError, match="fruits: no other category"):
        build_odd_one_out(OddOneOutConfig(categories=("fruits",), odd_from=("fruits",)))


def test_odd_one_out_errors(tmp_path: Path) -> None:
    overlapping = tmp_path / "lists.json"
    overlapping.write_text(json.dumps({"a": ["x", "y"], "b": ["z", "X"]}))
    with pytest.raises(DataError, match=r"field 'b': item 'X' is listed also in 'a'"):
        load_word_lists(overlapping)
    with pytest.raises(ConfigError, match="unknown category cakes"):
        build_odd_one_out(OddOneOutConfig(categories=("cakes",)))
    small = {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(5)]}
    with pytest.raises(ConfigError, match="allow"):
        build_odd_one_out(OddOneOutConfig(word_fractions=(0.8, 0.1, 0.1)), small)


# ---------------------------------------------------------------- translate

LANGUAGES = ("eng_Latn", "kor_Hang", "zho_Hans", "tha_Thai")


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised M2M100 (NLLB's architecture) with an NLLB tokenizer over a
    character vocabulary and the language tokens, saved as a local model folder."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-":
        vocab.setdefault(char, len(vocab))
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], extra_special_tokens=list(LANGUAGES))
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        init_std=1.0,  # outputs that depend on the input, so a shuffled order would show
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-nllb")
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def spy_generate(translator: Seq2SeqTranslator) -> list:
    """Record the inputs and outputs of every real generate call."""
    calls = []
    generate = translator.model.generate

    def recording(**kwargs):
        output = generate(**kwargs)
        calls.append((kwargs["input_ids"], output))
        return output

    translator.model.generate = recording
    return calls


TEXTS = [
    "Hello there.",
    "The cat sat on the mat.",
    "Why is the sky blue?",
    "Hello there.",
    "Good morning!",
]


def test_text_pieces_keep_role_tags_and_line_breaks() -> None:
    from dial.data.tools.common import ROLE_TAGS, compile_protect

    text = "Human: Hi there.\n\n  Second line \nAssistant:"
    pieces = text_pieces(text, compile_protect(ROLE_TAGS))
    assert "".join(piece for piece, _ in pieces) == text
    assert [piece for piece, flag in pieces if flag] == ["Hi there.", "Second line"]


def test_translate_dedup_resume_order_and_forced_bos(tiny_nllb: Path, tmp_path: Path) -> None:
    records = [
        {
            "prompt": f"Human: {TEXTS[i]}\n\nAssistant:",
            "response_chosen": TEXTS[(i + 1) % 5],
            "response_rejected": f"{TEXTS[(i + 2) % 5]}\n{TEXTS[i]}",
            "id": i,
        }
        for i in range(5)
    ]
    config = TranslateConfig(
        model=str(tiny_nllb), tgt_lang="kor_Hang", batch_size=2, max_new_tokens=12
    )
    translator = Seq2SeqTranslator(config)
    calls = spy_generate(translator)
    cache_path = tmp_path / "cache.jsonl"
    cache = TranslationCache(cache_path, config.model, config.src_lang, config.tgt_lang)
    out, report = translate_records(records, translator, cache, batch_size=2, file="f")
    unique = set(TEXTS)
    assert (report.pieces, report.unique, report.translated) == (20, len(unique), len(unique))
    assert len(calls) == translator.calls == report.batches == 2  # 4 distinct texts, batches of 2
    assert sum(len(ids) for ids, _ in calls) == len(unique)  # each distinct text translated once
    korean = translator.tokenizer.convert_tokens_to_ids("kor_Hang")
    english = translator.tokenizer.convert_tokens_to_ids("eng_Latn")
    for input_ids, output in calls:
        assert (input_ids[:, 0] == english).all()  # NLLB: the source language token first
        assert (output[:, 1] == korean).all()  # forced BOS: the target language token first
    # order: each record holds the translations of its own texts, in their places
    for i, record in enumerate(out):
        assert record["id"] == i and record[INDEX_FIELD] == i
        assert record["prompt"] == f"Human: {cache[TEXTS[i]]}\n\nAssistant:"
        assert record["response_chosen"] == cache[TEXTS[(i + 1) % 5]]
        assert record["response_rejected"] == f"{cache[TEXTS[(i + 2) % 5]]}\n{cache[TEXTS[i]]}"
    # and each translation is the model's translation of that text alone
    alone = {text: translator([text])[0] for text in unique}
    assert alone == {text: cache[text] for text in unique}
    assert len(set(alone.values())) > 1
    # resume: a new run with the same cache file makes no model call
    lines = cache_path.read_text().splitlines()
    assert len(lines) == len(unique)
    calls.clear()
    reopened = TranslationCache(cache_path, config.model, config.src_lang, config.tgt_lang)
    again, report = translate_records(records, translator, reopened, batch_size=2, file="f")
    assert again == out and calls == [] and report.from_cache == len(unique)
    # another target language does not reuse the Korean translations
    other = TranslationCache(cache_path, config.model, config.src_lang, "zho_Hans")
    assert not any(text in other for text in unique)


def test_translate_resumes_after_a_crash(tiny_nllb: Path, tmp_path: Path) -> None:
    records = [{"text": text} for text in TEXTS]
    config = TranslateConfig(model=str(tiny_nllb), tgt_lang="tha_Thai", max_new_tokens=8)
    translator = Seq2SeqTranslator(config)
    cache_path = tmp_path / "cache.jsonl"

    def crash_on_second_batch(texts: list[str]) -> list[str]:
        if translator.calls == 1:
            raise KeyboardInterrupt
        return translator(texts)

    cache = TranslationCache(cache_path, config.model, config.src_lang, config.tgt_lang)
    with pytest.raises(KeyboardInterrupt):
        translate_records(records, crash_on_second_batch, cache, batch_size=1, file="f")
    with cache_path.open("a") as handle:
        handle.write('{"source": "Good mor')  # a line cut short as the process died
    calls = spy_generate(translator)
    cache = TranslationCache(cache_path, config.model, config.src_lang, config.tgt_lang)
    assert len(cache.entries) == 1
    _, report = translate_records(records, translator, cache, batch_size=1, file="f")
    assert (report.from_cache, report.translated, len(calls)) == (1, 3, 3)
    assert len(cache_path.read_text().splitlines()) == 4
    assert all(json.loads(line) for line in cache_path.read_text().splitlines())


def test_translate_cli_and_errors(tiny_nllb: Path, tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "label": 1} for t in TEXTS])
    output = tmp_path / "ko.jsonl"
    args = ["data", "translate", str(source), "-o", str(output), "--model", str(tiny_nllb)]
    assert main([*args, "--tgt-lang", "kor_Hang", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert "5 text pieces, 4 distinct; 0 from the cache, 4 translated now" in printed
    assert "1 generate calls on cpu" in printed
    assert (tmp_path / "ko.cache.jsonl").exists()
    assert [r["label"] for r in read_jsonl(output)] == [1] * 5
    assert main([*args, "--tgt-lang", "kor_Hang", "--max-new-tokens", "6"]) == 0
    assert "4 from the cache, 0 translated now" in capsys.readouterr().out
    assert main([*args, "--tgt-lang", "xx_Yyyy"]) == 2
    assert "tgt_lang 'xx_Yyyy' is not a token of the model's tokenizer" in capsys.readouterr().err
    assert main([*args, "--tgt-lang", "kor_Hang", "--fields", "txt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dial data translate: error: file ") and "record 0, field 'txt'" in err
    missing = ["--model", str(tmp_path / "no-model"), "--tgt-lang", "kor_Hang"]
    assert main([*args[:5], *missing]) == 2
    assert "cannot load the translation model" in capsys.readouterr().err


# ---------------------------------------------------------------- command line


def test_noise_and_cipher_cli(tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "pairs.jsonl", preference_records(30))
    noisy = tmp_path / "noisy.jsonl"
    assert (
        main(
            [
                "data",
                "noise",
                str(source),
                "-o",
                str(noisy),
                "--char-rate",
                "0.3",
                "--fields",
                "response_chosen,response_rejected",
            ]
        )
        == 0
    )
    assert "noised 30 records (response_chosen, response_rejected)" in capsys.readouterr().out
    rows = read_jsonl(noisy)
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in preference_records(30)]
    assert (
        main(
            [
                "data",
                "cipher",
                str(source),
                str(noisy),
                "-o",
                str(tmp_path / "a.jsonl"),
                str(tmp_path / "b.jsonl"),
            ]
        )
        == 0
    )
    assert "enciphered 60 records" in capsys.readouterr().out
    assert main(["data", "noise", str(source), "-o", str(noisy), "--char-rate", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dial data noise: error: char_rate must be between 0 and 1, got 2.0"
    )
    assert main(["data", "noise", str(tmp_path / "none.jsonl"), "-o", str(noisy)]) == 2
    assert "none.jsonl: file does not exist" in capsys.readouterr().err
    assert main(["data", "split", str(source), "-o", str(noisy), str(tmp_path / "x.txt")]) == 2
    assert "x.txt must end in .jsonl or .json" in capsys.readouterr().err


@pytest.mark.parametrize("tool", [name for name, *_ in TOOLS])
def test_tool_help_lists_its_options(tool: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", tool, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: dial data {tool}")
    config = {
        "noise": NoiseConfig,
        "cipher": CipherConfig,
        "sample": SampleConfig,
        "split": SplitConfig,
        "split-length": LengthSplitConfig,
        "odd-one-out": OddOneOutConfig,
        "translate": TranslateConfig,
    }[tool]
    for item in dataclasses.fields(config):
        assert f"--{item.name.replace('_', '-')}" in text
        assert " ".join(item.metadata["help"].split()[:3]) in text

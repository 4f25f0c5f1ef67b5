"""A corpus of malformed inputs for every loader and converter, run through the real CLI.

Each case is data: the files it writes (name -> bytes), the ``dial`` arguments (``{name}``
stands for that file's path, ``{run}`` for a run folder, ``{dir}`` for the case's folder,
``{model}`` for a trained reward model) and the fragments the one error line must hold, which
name the file, the record and the field wherever the input has them. A usable input (ties, empty
responses, a 1 MB text) must instead succeed and say how many records it affected.

Every case runs in-process through :func:`dial.cli.main` (an exception escaping it is what a
user would see as a traceback); a sample also runs as a subprocess, whose stderr is checked
for the absence of a traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import preference_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dial.data.io import read_records
from dial.data.records import DEFAULT_COLUMNS, load_examples
from dial.errors import DataError
from reliability.helpers import QUIET, clear_error, run_in_process, run_subprocess

Content = bytes | Callable[[], bytes]


@dataclass(frozen=True)
class Case:
    """One input to try: its files, the command, and what the user must be told."""

    name: str
    loader: str  # the loader or converter it exercises
    files: dict[str, Content]
    argv: tuple[str, ...]
    names: tuple[str, ...]  # fragments of the error line, or of stdout for a usable input
    command: str = "train"
    usable: bool = False  # a usable input: exit 0 and a warning with counts


def jl(*records: object) -> bytes:
    """JSON Lines (NaN and Infinity written as JSON's non-standard literals, as Python does)."""
    return "".join(json.dumps(r) + "\n" for r in records).encode()


DROP = object()


def pairs(n: int = 8, **changes: dict) -> list[dict]:
    """`n` preference records; ``**{"3": {...}}`` updates record 3 (a value DROP deletes)."""
    records = preference_records(n)
    for index, update in changes.items():
        for key, value in update.items():
            if value is DROP:
                records[int(index)].pop(key)
            else:
                records[int(index)][key] = value
    return records


def scores(*labels: object) -> bytes:
    return jl(*({"text": f"essay number {i}", "label": label} for i, label in enumerate(labels)))


def mcq(n: int = 6) -> list[dict]:
    return [
        {"prompt": "Which is a fruit?", "correct": f"apple {i}", "wrong_a": f"stone {i}",
         "wrong_b": f"chair {i}", "wrong_c": f"cloud {i}", "wrong_d": f"spoon {i}"}
        for i in range(n)
    ]  # fmt: skip


def table(rows: list[list[str]], delimiter: str = ",") -> bytes:
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def big_jsonl_with_one_bad_line() -> bytes:
    """300 000 records whose record 150 000 (line 150 001) lost its last characters."""
    lines = [
        json.dumps({"prompt": f"question {i}", "response_chosen": "yes", "response_rejected": "no"})
        for i in range(300_000)
    ]
    lines[150_000] = lines[150_000][:-4]
    return ("\n".join(lines) + "\n").encode()


TRAIN = ("train", "--model.name", "tiny-bert", "--train.max_steps", "1", "--output_dir", "{run}",
         *QUIET)  # fmt: skip
SOURCE = (*TRAIN, "--data.train_files", "{pairs.jsonl}")
DIAL = (*SOURCE, "--train.method", "dial", "--data.target_files")
SCORE = (*TRAIN, "--data.task", "score", "--data.train_files", "{scores.jsonl}")
GOOD = jl(*pairs())
RELEASE_DA = ("--train_mode", "domain_adaptation_contrastive",
              "--dataset_type", "domain_adaptation_contrastive",
              "--target_data_files", "{pairs.jsonl}", "--da_config_path")  # fmt: skip


def convert(fmt: str, *inputs: str) -> tuple[str, ...]:
    return ("data", "convert", "--format", fmt, *inputs, "-o", "{dir}/out.jsonl")


def at(file: str, record: int | None = None, field: str | None = None) -> tuple[str, ...]:
    """The fragments a DataError about `file` (a placeholder), `record` and `field` shows."""
    where = [f"file {{{file}}}"]
    if record is not None:
        where.append(f"record {record}")
    if field is not None:
        where.append(f"field '{field}'")
    return tuple(where)


XS_PROMPTS = table([["id", "prompt", "type", "label", "focus", "note"],
                    ["1", "how do I kill a process", "homonyms", "safe", "kill", ""],
                    ["2", "how do I kill a person", "contrast", "unsafe", "kill", ""]])  # fmt: skip
XS_HEADER = ["id", "type", "prompt", "completion", "annotation_1", "annotation_2", "agreement",
             "final_label"]  # fmt: skip
UKP_HEADER = ["#id", "label", "a1", "a2"]
SHP = {"history": "a post", "human_ref_A": "first", "human_ref_B": "second", "labels": 1}
HH = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}
ELLIPSE_HEADER = ["text_id_kaggle", "full_text", "prompt", "Overall"]

CASES = [
    # ------------------------------------------------------------ record files (JSON, JSONL)
    Case("jsonl_300k_records_one_bad_line", "jsonl", {"big.jsonl": big_jsonl_with_one_bad_line},
         (*TRAIN, "--data.train_files", "{big.jsonl}"),
         (*at("big.jsonl", 150_000), "line 150001", "not valid JSON")),
    Case("missing_column", "records",
         {"pairs.jsonl": jl(*pairs(**{"3": {"response_rejected": DROP}}))},
         SOURCE, at("pairs.jsonl", 3, "response_rejected")),
    Case("misnamed_column", "records",
         {"pairs.jsonl": jl(*({"chosen" if k == "response_chosen" else k: v for k, v in r.items()}
                              for r in pairs()))},
         SOURCE, (*at("pairs.jsonl", 0, "response_chosen"), "fields present: chosen")),
    Case("empty_file", "io", {"pairs.jsonl": b""}, SOURCE, (*at("pairs.jsonl"), "empty")),
    Case("blank_lines_only", "io", {"pairs.json": b"\n \n\t\n"},
         (*TRAIN, "--data.train_files", "{pairs.json}"), (*at("pairs.json"), "empty")),
    Case("empty_json_array", "json", {"pairs.json": b"[]"},
         (*TRAIN, "--data.train_files", "{pairs.json}"), (*at("pairs.json"), "no records")),
    Case("json_array_of_numbers", "json", {"pairs.json": b"[1, 2, 3]"},
         (*TRAIN, "--data.train_files", "{pairs.json}"),
         (*at("pairs.json", 0), "expected an object")),
    Case("truncated_json_array", "json", {"pairs.json": json.dumps(pairs()).encode()[:-30]},
         (*TRAIN, "--data.train_files", "{pairs.json}"), (*at("pairs.json"), "not valid JSON")),
    Case("jsonl_line_is_an_array", "jsonl",
         {"pairs.jsonl": jl(*pairs(3)) + b"[1, 2]\n" + jl(*pairs(3))},
         SOURCE, (*at("pairs.jsonl", 3), "expected an object")),
    Case("number_instead_of_text", "records", {"pairs.jsonl": jl(*pairs(**{"2": {"prompt": 7}}))},
         SOURCE, (*at("pairs.jsonl", 2, "prompt"), "expected text, got int")),
    Case("null_response", "records",
         {"pairs.jsonl": jl(*pairs(**{"5": {"response_chosen": None}}))},
         SOURCE, (*at("pairs.jsonl", 5, "response_chosen"), "got NoneType")),
    Case("list_instead_of_text", "records",
         {"pairs.jsonl": jl(*pairs(**{"4": {"response_rejected": ["a", "b"]}}))},
         SOURCE, (*at("pairs.jsonl", 4, "response_rejected"), "got list")),
    Case("object_instead_of_text", "records",
         {"pairs.jsonl": jl(*pairs(**{"1": {"prompt": {"text": "hi"}}}))},
         SOURCE, (*at("pairs.jsonl", 1, "prompt"), "got dict")),
    Case("boolean_instead_of_text", "records",
         {"pairs.jsonl": jl(*pairs(**{"6": {"response_chosen": True}}))},
         SOURCE, (*at("pairs.jsonl", 6, "response_chosen"), "got bool")),
    Case("invalid_utf8_jsonl", "io",
         {"pairs.jsonl": GOOD + b'{"prompt": "caf\xe9", "response_chosen": "a"}\n'},
         SOURCE, (*at("pairs.jsonl"), "invalid UTF-8", "line 9")),
    Case("corrupt_gzip", "io", {"pairs.jsonl.gz": gzip.compress(GOOD)[:40]},
         (*TRAIN, "--data.train_files", "{pairs.jsonl.gz}"), (*at("pairs.jsonl.gz"), "gzip")),
    Case("corrupt_parquet", "parquet", {"pairs.parquet": b"PAR1 not really parquet"},
         (*TRAIN, "--data.train_files", "{pairs.parquet}"), (*at("pairs.parquet"), "Parquet")),
    Case("unknown_suffix", "io", {"pairs.txt": GOOD},
         (*TRAIN, "--data.train_files", "{pairs.txt}"), (*at("pairs.txt"), "suffix 'txt'")),
    Case("data_file_is_a_folder", "io", {}, (*TRAIN, "--data.train_files", "{dir}"),
         ("file {dir}", "folder")),
    # ------------------------------------------------------------ CSV, TSV
    Case("csv_header_only", "csv",
         {"pairs.csv": table([["prompt", "response_chosen", "response_rejected"]])},
         (*TRAIN, "--data.train_files", "{pairs.csv}"), (*at("pairs.csv"), "no records")),
    Case("csv_misnamed_header", "csv",
         {"pairs.csv": table([["prompt", "good", "bad"], ["a", "b", "c"]])},
         (*TRAIN, "--data.train_files", "{pairs.csv}"), at("pairs.csv", 0, "response_chosen")),
    Case("tsv_row_too_short", "csv",
         {"pairs.tsv": table([["prompt", "response_chosen", "response_rejected"],
                              ["a", "b", "c"], ["d", "e"]], "\t")},
         (*TRAIN, "--data.train_files", "{pairs.tsv}"), (*at("pairs.tsv", 1), "2 cells")),
    Case("invalid_utf8_csv", "io",
         {"pairs.csv": b"prompt,response_chosen,response_rejected\na,b,c\nd,\xff\xfe,f\n"},
         (*TRAIN, "--data.train_files", "{pairs.csv}"), (*at("pairs.csv"), "UTF-8", "line 3")),
    # ------------------------------------------------------------ score labels
    Case("nan_score", "records", {"scores.jsonl": scores(1.0, 2.0, math.nan)}, SCORE,
         (*at("scores.jsonl", 2, "label"), "nan")),
    Case("infinite_score", "records", {"scores.jsonl": scores(1.0, -math.inf)}, SCORE,
         (*at("scores.jsonl", 1, "label"), "-inf")),
    Case("text_score", "records", {"scores.jsonl": scores(1.0, "high")}, SCORE,
         (*at("scores.jsonl", 1, "label"), "'high'")),
    Case("null_score", "records", {"scores.jsonl": scores(None, 1.0)}, SCORE,
         (*at("scores.jsonl", 0, "label"), "None")),
    Case("boolean_score", "records", {"scores.jsonl": scores(1.0, 0.0, True)}, SCORE,
         (*at("scores.jsonl", 2, "label"), "True")),
    Case("missing_score", "records",
         {"scores.jsonl": scores(1.0) + jl({"text": "no label here"})}, SCORE,
         at("scores.jsonl", 1, "label")),
    Case("score_too_large", "records",
         {"scores.jsonl": scores(1.0) + b'{"text": "b", "label": 1' + b"0" * 400 + b"}\n"},
         SCORE, (*at("scores.jsonl", 1, "label"), "too large")),
    Case("csv_nan_score", "csv",
         {"scores.csv": table([["text", "label"], ["a", "1"], ["b", "nan"]])},
         (*TRAIN, "--data.task", "score", "--data.train_files", "{scores.csv}"),
         at("scores.csv", 1, "label")),
    Case("bce_label_outside_0_1", "labels", {"scores.jsonl": scores(0.0, 1.0, 0.5, 3.0)},
         (*SCORE, "--data.score_loss", "bce"), (*at("scores.jsonl", 3, "label"), "[0, 1]")),
    Case("class_label_out_of_range_after_split", "labels",
         {"scores.jsonl": scores(*[i % 2 for i in range(11)], 5, 0, 1)},
         (*SCORE, "--data.score_loss", "cross_entropy", "--model.num_labels", "2",
          "--data.eval_split", "0.25"),
         (*at("scores.jsonl", 11, "label"), "model.num_labels")),
    Case("negative_class_label", "labels", {"scores.jsonl": scores(0, 1, -1)},
         (*SCORE, "--data.score_loss", "cross_entropy", "--model.num_labels", "2"),
         (*at("scores.jsonl", 2, "label"), "-1.0")),
    Case("fractional_class_label", "labels", {"scores.jsonl": scores(0, 0.5)},
         (*SCORE, "--data.score_loss", "cross_entropy", "--model.num_labels", "2"),
         (*at("scores.jsonl", 1, "label"), "0.5")),
    # ------------------------------------------------------------ mcq
    Case("mcq_missing_wrong_answer", "records",
         {"mcq.jsonl": jl(*mcq()[:2], {k: v for k, v in mcq()[2].items() if k != "wrong_c"})},
         (*TRAIN, "--data.task", "mcq", "--data.train_files", "{mcq.jsonl}"),
         at("mcq.jsonl", 2, "wrong_c")),
    Case("mcq_number_answer", "records", {"mcq.jsonl": jl(*mcq()[:4], {**mcq()[4], "correct": 4})},
         (*TRAIN, "--data.task", "mcq", "--data.train_files", "{mcq.jsonl}"),
         at("mcq.jsonl", 4, "correct")),
    Case("all_pairs_tied", "records",
         {"pairs.jsonl": jl(*({**r, "response_rejected": r["response_chosen"]} for r in pairs()))},
         SOURCE, (*at("pairs.jsonl"), "no usable training records")),
    # ------------------------------------------------------------ target and evaluation files
    Case("target_file_empty", "target", {"pairs.jsonl": GOOD, "target.jsonl": b""},
         (*DIAL, "{target.jsonl}"), (*at("target.jsonl"), "empty")),
    Case("target_file_with_no_rows", "target",
         {"pairs.jsonl": GOOD,
          "target.csv": table([["prompt", "response_chosen", "response_rejected"]])},
         (*DIAL, "{target.csv}"), (*at("target.csv"), "no records")),
    Case("target_empty_array", "target", {"pairs.jsonl": GOOD, "target.json": b"[ ]"},
         (*DIAL, "{target.json}"), (*at("target.json"), "no records")),
    Case("target_missing_column", "target",
         {"pairs.jsonl": GOOD, "target.jsonl": jl(*pairs(**{"5": {"prompt": DROP}}))},
         (*DIAL, "{target.jsonl}"), at("target.jsonl", 5, "prompt")),
    Case("target_text_columns_missing", "target",
         {"pairs.jsonl": GOOD,
          "samples.jsonl": jl({"prompt": "p", "response": "r"}, {"prompt": "q", "answer": "s"})},
         (*DIAL, "{samples.jsonl}", "--data.target_text_columns", "[prompt,response]"),
         at("samples.jsonl", 1, "response")),
    Case("eval_file_bad_record", "eval",
         {"pairs.jsonl": GOOD, "eval.jsonl": jl(*pairs(**{"2": {"response_chosen": 3.5}}))},
         (*SOURCE, "--data.eval_files", "{eval.jsonl}"), at("eval.jsonl", 2, "response_chosen")),
    Case("eval_file_truncated_json", "eval",
         {"pairs.jsonl": GOOD, "eval.json": json.dumps(pairs()).encode()[:-5]},
         (*SOURCE, "--data.eval_files", "{eval.json}"), (*at("eval.json"), "not valid JSON")),
    # ------------------------------------------------------------ dataset configs
    Case("dataset_config_unknown_key", "dataset config",
         {"pairs.jsonl": GOOD,
          "pref.json": json.dumps({"input_columns": ["prompt", "response_chosen", "response"],
                                   "label_column": "x"}).encode()},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), at("pref.json", None, "label_column")),
    Case("dataset_config_truncated", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'{"input_columns": ["prompt", "resp'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), (*at("pref.json"), "not valid JSON")),
    Case("dataset_config_invalid_utf8", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'{"input_columns": ["pr\xffompt"]}'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), (*at("pref.json"), "UTF-8")),
    Case("dataset_config_not_an_object", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'["prompt"]'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), (*at("pref.json"), "JSON object")),
    Case("dataset_config_column_not_a_name", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'{"input_columns": ["prompt", 2, "b"]}'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), at("pref.json", None, "input_columns")),
    Case("dataset_config_without_input_columns", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'{"target_columns": []}'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), at("pref.json", None, "input_columns")),
    Case("dataset_config_names_absent_columns", "dataset config",
         {"pairs.jsonl": GOOD, "pref.json": b'{"input_columns": ["prompt", "good", "bad"]}'},
         (*SOURCE, "--data.dataset_config", "{pref.json}"), at("pairs.jsonl", 0, "good")),
    # ------------------------------------------------------------ domain configs (release)
    Case("domain_config_unknown_key", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"da_type": "wdgrl", "da_lamda": 0.01}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "da_lamda", "da_lambda")),
    Case("domain_config_unknown_nested_key", "domain config",
         {"pairs.jsonl": GOOD,
          "da.json": b'{"adv_config": {"da_net_config": {"widths": [64]}}}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "adv_config.da_net_config.widths")),
    Case("domain_config_wrong_type", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"da_type": "wdgrl", "da_lambda": "a lot"}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "domain.weight", "'a lot'")),
    Case("domain_config_bad_dropout", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"adv_config": {"da_net_config": {"dropout": "x"}}}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "domain.critic_dropout", "'x'")),
    Case("domain_config_invalid_utf8", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"da_type": "wdgr\xff"}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "UTF-8")),
    Case("domain_config_truncated", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"da_type": "wdgrl", "da_'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "not valid JSON")),
    Case("domain_config_unknown_method", "domain config",
         {"pairs.jsonl": GOOD, "da.json": b'{"da_type": "jdot"}'},
         (*SOURCE, *RELEASE_DA, "{da.json}"), ("{da.json}", "jdot")),
    Case("domain_config_is_a_folder", "domain config", {"pairs.jsonl": GOOD},
         (*SOURCE, *RELEASE_DA, "{dir}"), ("{dir}",)),
    # ------------------------------------------------------------ run configs (YAML)
    Case("run_config_invalid_utf8", "run config", {"run.yaml": b"train:\n  seed: \xff1\n"},
         (*TRAIN, "--config", "{run.yaml}"), ("{run.yaml}", "UTF-8")),
    Case("run_config_section_not_a_mapping", "run config", {"run.yaml": b"train: 3\n"},
         (*TRAIN, "--config", "{run.yaml}"), ("'train'", "mapping")),
    Case("run_config_wrong_type", "run config", {"run.yaml": b"train:\n  learning_rate: fast\n"},
         (*TRAIN, "--config", "{run.yaml}"), ("train.learning_rate", "'fast'")),
    # ------------------------------------------------------------ converters
    Case("hh_no_assistant_turn", "convert hh-rlhf",
         {"hh.jsonl": jl(HH, {"chosen": "Human: hi", "rejected": "Human: hi"})},
         convert("hh-rlhf", "{hh.jsonl}"), at("hh.jsonl", 1, "chosen"), "data convert"),
    Case("hh_number_transcript", "convert hh-rlhf", {"hh.jsonl": jl(HH, HH, {**HH, "rejected": 5})},
         convert("hh-rlhf", "{hh.jsonl}"), at("hh.jsonl", 2, "rejected"), "data convert"),
    Case("hh_truncated_gzip", "convert hh-rlhf", {"hh.jsonl.gz": gzip.compress(jl(HH))[:-8]},
         convert("hh-rlhf", "{hh.jsonl.gz}"), (*at("hh.jsonl.gz"), "gzip"), "data convert"),
    Case("shp_missing_column", "convert shp",
         {"shp.jsonl": jl({k: v for k, v in SHP.items() if k != "labels"})},
         convert("shp", "{shp.jsonl}"), at("shp.jsonl", 0, "labels"), "data convert"),
    Case("shp_label_out_of_range", "convert shp", {"shp.jsonl": jl(SHP, {**SHP, "labels": 2})},
         convert("shp", "{shp.jsonl}"), (*at("shp.jsonl", 1, "labels"), "got 2"), "data convert"),
    Case("shp_nan_label", "convert shp", {"shp.jsonl": jl(SHP, SHP, {**SHP, "labels": math.nan})},
         convert("shp", "{shp.jsonl}"), (*at("shp.jsonl", 2, "labels"), "nan"), "data convert"),
    Case("ukp_file_name_without_stance", "convert ukp-convarg",
         {"topic.csv": table([UKP_HEADER, ["1_2", "a1", "x", "y"]], "\t")},
         convert("ukp-convarg", "{topic.csv}"), at("topic.csv", None, "file name"),
         "data convert"),
    Case("ukp_row_too_short", "convert ukp-convarg",
         {"plastic_yes.csv": table([UKP_HEADER, ["1_2", "a1", "x", "y"], ["3", "a2", "z"]], "\t")},
         convert("ukp-convarg", "{plastic_yes.csv}"), (*at("plastic_yes.csv", 1), "3 fields"),
         "data convert"),
    Case("ukp_invalid_utf8", "convert ukp-convarg",
         {"plastic_yes.csv": b"#id\tlabel\ta1\ta2\n1_2\ta1\tx\xff\ty\n"},
         convert("ukp-convarg", "{plastic_yes.csv}"), (*at("plastic_yes.csv"), "UTF-8"),
         "data convert"),
    Case("xstest_completion_of_no_prompt", "convert xstest",
         {"xs/xstest_prompts.csv": XS_PROMPTS,
          "xs/xstest_v2_completions_gpt4.csv": table([
              XS_HEADER, ["v2-1", "homonyms", "p", "Use kill", "a", "a", "1", "1_full_compliance"],
              ["v2-9", "homonyms", "p", "No", "a", "a", "True", "2_full_refusal"]])},
         convert("xstest", "{dir}/xs"),
         (*at("xs/xstest_v2_completions_gpt4.csv", 1, "id"), "'v2-9'"), "data convert"),
    Case("xstest_unknown_final_label", "convert xstest",
         {"xs/xstest_prompts.csv": XS_PROMPTS,
          "xs/xstest_v2_completions_gpt4.csv": table([
              XS_HEADER, ["v2-1", "homonyms", "p", "Use kill", "a", "a", "True", "maybe"]])},
         convert("xstest", "{dir}/xs"),
         at("xs/xstest_v2_completions_gpt4.csv", 0, "final_label"), "data convert"),
    Case("xstest_prompt_label_out_of_range", "convert xstest",
         {"xs/xstest_prompts.csv": table([["id", "prompt", "type", "label"],
                                          ["1", "p", "homonyms", "safe"],
                                          ["2", "q", "homonyms", "harmless"]]),
          "xs/xstest_v2_completions_gpt4.csv": table([
              XS_HEADER, ["v2-1", "homonyms", "p", "Sure", "a", "a", "1", "1_full_compliance"]])},
         convert("xstest", "{dir}/xs"), at("xs/xstest_prompts.csv", 1, "label"), "data convert"),
    Case("chat_unknown_role", "convert chat-pairs",
         {"chat.jsonl": jl({"conversations": [{"from": "robot", "value": "hi"}],
                            "chosen": "a", "rejected": "b"})},
         convert("chat-pairs", "{chat.jsonl}"), at("chat.jsonl", 0, "conversations[0].from"),
         "data convert"),
    Case("chat_ends_with_the_assistant", "convert chat-pairs",
         {"chat.jsonl": jl({"conversations": [{"from": "human", "value": "hi"},
                                              {"from": "gpt", "value": "yo"}],
                            "chosen": "a", "rejected": "b"})},
         convert("chat-pairs", "{chat.jsonl}"), at("chat.jsonl", 0, "conversations"),
         "data convert"),
    Case("chat_history_not_pairs", "convert chat-pairs",
         {"chat.jsonl": jl({"question": "q", "history": [["only one"]], "chosen": "a",
                            "rejected": "b"})},
         convert("chat-pairs", "{chat.jsonl}"), at("chat.jsonl", 0, "history[0]"),
         "data convert"),
    Case("ellipse_nan_score", "convert ellipse",
         {"ellipse.csv": table([ELLIPSE_HEADER, ["1", "an essay", "p", "3.5"],
                                ["2", "another", "p", "nan"]])},
         convert("ellipse", "{ellipse.csv}"), at("ellipse.csv", 1, "Overall"), "data convert"),
    Case("ellipse_missing_column", "convert ellipse",
         {"ellipse.csv": table([ELLIPSE_HEADER[:3], ["1", "an essay", "p"]])},
         convert("ellipse", "{ellipse.csv}"), at("ellipse.csv", 0, "Overall"), "data convert"),
    Case("ellipse_corrupt_zip", "convert ellipse", {"ellipse.zip": b"PK\x03\x04 cut short"},
         convert("ellipse", "{ellipse.zip}"), (*at("ellipse.zip"), "zip"), "data convert"),
    # ------------------------------------------------------------ eval and score
    Case("eval_record_without_response", "eval",
         {"eval.jsonl": jl(*pairs(3), {"prompt": "a prompt alone"})},
         ("eval", "{model}", "{eval.jsonl}"), at("eval.jsonl", 3, "response_chosen"), "eval"),
    Case("score_truncated_json", "eval",
         {"pairs.json": json.dumps(pairs(4)).encode()[:-12]},
         ("score", "{model}", "{pairs.json}", "-o", "{dir}/scores.jsonl"),
         (*at("pairs.json"), "not valid JSON"), "score"),
    Case("eval_nan_score", "eval", {"scores.jsonl": scores(1.0, math.nan)},
         ("eval", "{model}", "{scores.jsonl}", "--task", "score"),
         at("scores.jsonl", 1, "label"), "eval"),
    # ------------------------------------------------------------ usable: a warning with counts
    Case("some_pairs_tied", "records",
         {"pairs.jsonl": jl(*({**r, "response_rejected": r["response_chosen"]} if i in (2, 6) else r
                              for i, r in enumerate(pairs())))},
         SOURCE, ("8 records, 2 with identical responses", "skips 2 records"), usable=True),
    Case("empty_strings", "records",
         {"pairs.jsonl": jl(*pairs(**{"1": {"response_chosen": ""}, "4": {"prompt": ""},
                                      "5": {"response_rejected": "   "}}))},
         SOURCE, ("2 with an empty response (kept)",), usable=True),
    Case("one_megabyte_text", "tokenize",
         {"pairs.jsonl": jl(*pairs(**{"3": {"prompt": "word " * 200_000},
                                      "5": {"response_chosen": "long " * 200_000}}))},
         (*SOURCE, "--data.max_length", "64"),
         ("sequences over 64 tokens: 3 lost the start of their prompt, 1 also the start of their "
          "response",), usable=True),
    Case("hh_ties_and_empty_responses", "convert hh-rlhf",
         {"hh.jsonl": jl(HH, {**HH, "rejected": HH["chosen"]},
                         {**HH, "rejected": "\n\nHuman: hi\n\nAssistant:  "})},
         convert("hh-rlhf", "{hh.jsonl}"),
         ("read 3 records, wrote 1", "empty response: 1", "tie (chosen == rejected): 1"),
         "data convert", usable=True),
]  # fmt: skip
BY_NAME = {case.name: case for case in CASES}
SUBPROCESS_SAMPLE = [
    "jsonl_300k_records_one_bad_line",
    "domain_config_invalid_utf8",
    "xstest_completion_of_no_prompt",
]


def materialise(case: Case, folder: Path, model: Path | None) -> tuple[list[str], list[str]]:
    """Write the case's files into `folder`; its argv and expected fragments with paths."""
    paths = {"dir": str(folder), "run": str(folder / "run"), "model": str(model)}
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content() if callable(content) else content)
        paths[name] = str(path)

    def fill(text: str) -> str:
        return re.sub(r"\{([^{}]+)\}", lambda m: paths[m.group(1)], text)

    return [fill(a) for a in case.argv], [fill(n) for n in case.names]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model trained for one step, for the eval and score cases."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "pairs.jsonl").write_bytes(GOOD)
    argv = [a.replace("{run}", str(folder / "run")) for a in TRAIN]
    result = run_in_process([*argv, "--data.train_files", folder / "pairs.jsonl"])
    assert result.code == 0, result.describe()
    return folder / "run" / "final"


def needs_model(case: Case) -> bool:
    return any("{model}" in a for a in case.argv)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    trained = request.getfixturevalue("model") if needs_model(case) else None
    argv, names = materialise(case, tmp_path, trained)
    outcome = run_in_process(argv)
    if case.usable:
        assert outcome.code == 0, outcome.describe()
        assert "error" not in outcome.stderr.lower(), outcome.describe()
        for name in names:
            assert name in outcome.stdout, f"{name!r} is not reported\n{outcome.describe()}"
    else:
        clear_error(outcome, case.command, names)


def test_bad_inputs_without_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    """The same messages from `python -m dial.cli`, with nothing else on stderr's last line
    and no traceback anywhere (two processes at a time)."""

    def attempt(name: str):
        case = BY_NAME[name]
        folder = tmp_path / name
        folder.mkdir()
        argv, names = materialise(case, folder, None)
        return case, names, run_subprocess(argv)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, SUBPROCESS_SAMPLE))
    for case, names, outcome in results:
        clear_error(outcome, case.command, names)


def test_the_corpus_covers_every_loader_and_converter() -> None:
    bad = [c for c in CASES if not c.usable]
    loaders = Counter(c.loader for c in CASES)
    print(
        f"\nbad-input corpus: {len(CASES)} inputs, {len(bad)} malformed (one clear error each), "
        f"{len(CASES) - len(bad)} usable (a warning with counts); by loader: {dict(loaders)}"
    )
    assert len(bad) >= 40
    converters = {"hh-rlhf", "shp", "ukp-convarg", "xstest", "chat-pairs", "ellipse"}
    assert {f"convert {c}" for c in converters} <= set(loaders)
    needed = {"jsonl", "json", "csv", "parquet", "io", "records", "labels", "target", "eval",
              "dataset config", "domain config", "run config", "tokenize"}  # fmt: skip
    assert needed <= set(loaders)


# ---------------------------------------------------------------- property: one bad record


RECORD = st.fixed_dictionaries(
    {
        "prompt": st.text(max_size=12),
        "response_chosen": st.text(max_size=12),
        "response_rejected": st.text(max_size=12),
    }
)
CORRUPTIONS = ("cut", "utf8", "not_an_object", "drop_field", "number_field", "none")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(RECORD, min_size=1, max_size=12),
    position=st.integers(min_value=0, max_value=11),
    corruption=st.sampled_from(CORRUPTIONS),
    field=st.sampled_from(["prompt", "response_chosen", "response_rejected"]),
)
def test_one_bad_record_anywhere_is_named_exactly(
    records: list[dict], position: int, corruption: str, field: str
) -> None:
    """Write records as JSON Lines, spoil the one at `position` in one of several ways: the
    loader either returns every record unchanged or names that record (and its field, or its
    line and byte) in the file, never another."""
    position %= len(records)
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    spoiled = dict(records[position])
    if corruption == "cut":
        lines[position] = lines[position][:-1]
    elif corruption == "utf8":
        lines[position] = lines[position][:-1] + b', "x": "\xff"}'
    elif corruption == "not_an_object":
        lines[position] = json.dumps(list(spoiled.values())).encode()
    elif corruption == "drop_field":
        del spoiled[field]
        lines[position] = json.dumps(spoiled).encode()
    elif corruption == "number_field":
        spoiled[field] = 42
        lines[position] = json.dumps(spoiled).encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        if corruption == "none":
            examples, report = load_examples(path, "preference", DEFAULT_COLUMNS["preference"])
            assert report.records == len(records)
            assert [(e.prompt, *e.responses) for e in examples] == [
                (r["prompt"], r["response_chosen"], r["response_rejected"]) for r in records
            ]
            assert read_records(path) == records
            return
        with pytest.raises(DataError) as caught:
            load_examples(path, "preference", DEFAULT_COLUMNS["preference"])
    error = caught.value
    assert error.file == str(path)
    if corruption == "utf8":  # the bytes are not text yet: the line and the byte offset
        offset = sum(len(line) + 1 for line in lines[:position]) + lines[position].index(b"\xff")
        assert f"invalid UTF-8 at byte {offset} (line {position + 1})" in str(error)
        return
    assert error.record == position, str(error)
    if corruption == "cut":
        assert f"line {position + 1} is not valid JSON" in str(error)
    elif corruption in ("drop_field", "number_field"):
        assert error.field == field

"""The ``dial`` command line, driven as a user drives it: one subprocess per command.

Bad input of every kind must end in exit code 2 and one ``dial <command>: error: ...`` line that
names the file, the record, the field or the option at fault, never a traceback. The bad-input
cases run concurrently (each subprocess spends most of its few seconds importing torch and
transformers), so the whole file stays around a minute on two cores.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import preference_records, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dial.config import iter_options
from dial.data.records import DEFAULT_COLUMNS, ColumnConfig, parse_records
from dial.errors import DataError

WORKERS = max(2, min(4, os.cpu_count() or 2))
TINY = ["--model.name", "tiny-bert"]
QUIET = ["--train.report_to", "[]", "--train.progress_bar", "false"]


def dial_env(threads: int | None = 1) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "1000",
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def dial(
    *args: str | Path, cwd: Path | None = None, threads: int | None = 1, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dial.cli ARGS`` offline and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "dial.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=dial_env(threads),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def train_args(folder: Path, *extra: str | Path) -> list[str]:
    """A one-step tiny-bert training run in `folder`, plus `extra` options."""
    return [
        "train",
        *TINY,
        "--train.max_steps",
        "1",
        "--output_dir",
        str(folder / "run"),
        *QUIET,
        *map(str, extra),
    ]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_clean_error(
    result: subprocess.CompletedProcess[str], command: str, names: list[str]
) -> str:
    """Exit code 2, one ``dial <command>: error:`` line naming `names`, no traceback."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    prefix = f"dial {command}: error: "
    lines = result.stderr.splitlines()
    error_lines = [line for line in lines if re.match(r"dial( [\w-]+)*: error:", line)]
    assert len(error_lines) == 1, describe(result)
    message = error_lines[0]
    assert message.startswith(prefix), describe(result)
    assert message == lines[-1], f"the error is not the last line\n{describe(result)}"
    for name in names:
        assert name in message, f"{name!r} is not named in: {message}"
    return message


# ---------------------------------------------------------------- bad input: the cases


@dataclass
class Bad:
    """One kind of bad input: the arguments after ``dial``, and what the message must name."""

    argv: list[str]
    names: list[str]
    command: str = "train"
    before: list[list[str]] = field(default_factory=list)  # commands that must succeed first


CASES: dict[str, Callable[[Path], Bad]] = {}
NEEDS_RUN: set[str] = set()  # cases that take the trained run's folder as a second argument


def case(name: str, needs_run: bool = False):
    def register(build):
        CASES[name] = build
        if needs_run:
            NEEDS_RUN.add(name)
        return build

    return register


def pairs(n: int = 6) -> list[dict]:
    return preference_records(n)


@case("missing_train_file")
def _(tmp: Path) -> Bad:
    path = tmp / "nowhere.jsonl"
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "does not exist"])


@case("empty_file")
def _(tmp: Path) -> Bad:
    path = tmp / "empty.jsonl"
    path.write_text("\n  \n")
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "empty"])


@case("truncated_json_array")
def _(tmp: Path) -> Bad:
    path = tmp / "cut.json"
    path.write_text(json.dumps(pairs())[:-40])
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "not valid JSON"])


@case("jsonl_bad_line")
def _(tmp: Path) -> Bad:
    path = tmp / "pairs.jsonl"
    lines = [json.dumps(r) for r in pairs(5)]
    lines[2] = lines[2][:-5]  # line 3 (record 2) loses its closing characters
    path.write_text("\n".join(lines) + "\n")
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "line 3", "record 2"])


@case("missing_column")
def _(tmp: Path) -> Bad:
    records = pairs()
    del records[3]["response_rejected"]
    path = write_jsonl(tmp / "pairs.jsonl", records)
    names = [str(path), "record 3", "response_rejected"]
    return Bad(train_args(tmp, "--data.train_files", path), names)


@case("number_instead_of_text")
def _(tmp: Path) -> Bad:
    records = pairs()
    records[1]["response_chosen"] = 42
    path = write_jsonl(tmp / "pairs.jsonl", records)
    names = [str(path), "record 1", "response_chosen", "expected text"]
    return Bad(train_args(tmp, "--data.train_files", path), names)


def score_file(tmp: Path, labels: list) -> Path:
    records = [{"text": f"essay number {i}", "label": label} for i, label in enumerate(labels)]
    path = tmp / "scores.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN is written as NaN
    return path


@case("score_nan_label")
def _(tmp: Path) -> Bad:
    path = score_file(tmp, [1.0, math.nan, 2.0])
    argv = train_args(tmp, "--data.task", "score", "--data.train_files", path)
    return Bad(argv, [str(path), "record 1", "label", "nan"])


@case("score_text_label")
def _(tmp: Path) -> Bad:
    path = score_file(tmp, [1.0, 2.0, "high"])
    argv = train_args(tmp, "--data.task", "score", "--data.train_files", path)
    return Bad(argv, [str(path), "record 2", "label", "'high'"])


@case("score_label_too_large")
def _(tmp: Path) -> Bad:
    path = tmp / "scores.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1' + "0" * 400 + "}\n")
    argv = train_args(tmp, "--data.task", "score", "--data.train_files", path)
    return Bad(argv, [str(path), "record 1", "label"])


@case("cross_entropy_label_out_of_range")
def _(tmp: Path) -> Bad:
    path = score_file(tmp, [0, 1, 5, 1])
    argv = train_args(
        tmp,
        "--data.task",
        "score",
        "--data.score_loss",
        "cross_entropy",
        "--model.num_labels",
        "2",
        "--data.train_files",
        path,
    )
    return Bad(argv, [str(path), "record 2", "label", "model.num_labels"])


@case("unknown_option")
def _(tmp: Path) -> Bad:
    argv = train_args(tmp, "--train.learnin_rate", "1e-4")
    return Bad(argv, ["--train.learnin_rate", "learning_rate"])


@case("unknown_option_in_config_file")
def _(tmp: Path) -> Bad:
    path = tmp / "run.yaml"
    path.write_text("train:\n  learnin_rate: 0.001\n")
    return Bad(train_args(tmp, "--config", path), ["train.learnin_rate", "learning_rate"])


@case("wrong_type")
def _(tmp: Path) -> Bad:
    return Bad(train_args(tmp, "--train.batch_size", "abc"), ["train.batch_size", "'abc'"])


@case("invalid_choice")
def _(tmp: Path) -> Bad:
    argv = train_args(tmp, "--model.pooling", "foo")
    return Bad(argv, ["model.pooling", "'foo'", "mean"])


@case("zero_batch_size")
def _(tmp: Path) -> Bad:
    return Bad(train_args(tmp, "--train.batch_size", "0"), ["train.batch_size", "0"])


@case("negative_learning_rate")
def _(tmp: Path) -> Bad:
    return Bad(train_args(tmp, "--train.learning_rate", "-1"), ["train.learning_rate", "-1"])


@case("eval_split_out_of_range")
def _(tmp: Path) -> Bad:
    path = write_jsonl(tmp / "pairs.jsonl", pairs())
    argv = train_args(tmp, "--data.train_files", path, "--data.eval_split", "1.5")
    return Bad(argv, ["eval_split", "1.5"])


@case("config_not_a_mapping")
def _(tmp: Path) -> Bad:
    path = tmp / "run.yaml"
    path.write_text("- model\n- data\n")
    return Bad(train_args(tmp, "--config", path), [str(path), "mapping"])


@case("config_missing")
def _(tmp: Path) -> Bad:
    path = tmp / "nowhere.yaml"
    return Bad(train_args(tmp, "--config", path), [str(path), "does not exist"])


@case("config_is_a_folder")
def _(tmp: Path) -> Bad:
    return Bad(train_args(tmp, "--config", tmp), [str(tmp)])


@case("config_invalid_yaml")
def _(tmp: Path) -> Bad:
    path = tmp / "run.yaml"
    path.write_text("train:\n  batch_size: [1\n")
    return Bad(train_args(tmp, "--config", path), [str(path), "YAML"])


@case("dataset_config_unknown_key")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    path = tmp / "pref.json"
    cols = ["prompt", "response_chosen", "response_rejected"]
    path.write_text(json.dumps({"input_columns": cols, "label_columns": []}))
    argv = train_args(tmp, "--data.train_files", data, "--data.dataset_config", path)
    return Bad(argv, [str(path), "label_columns"])


@case("dataset_config_wrong_arity")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    path = tmp / "pref.json"
    path.write_text(json.dumps({"input_columns": ["prompt", "a", "b", "c"]}))
    argv = train_args(tmp, "--data.train_files", data, "--data.dataset_config", path)
    return Bad(argv, [str(path), "input_columns", "2 or 3"])


@case("csv_row_too_long")
def _(tmp: Path) -> Bad:
    path = tmp / "pairs.csv"
    path.write_text("prompt,response_chosen,response_rejected\na,b,c\nd,e,f,g\n")
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "record 1", "4 cells"])


@case("csv_row_too_short")
def _(tmp: Path) -> Bad:
    path = tmp / "pairs.csv"
    path.write_text("prompt,response_chosen,response_rejected\na,b,c\nd,e,f\ng,h\n")
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "record 2", "2 cells"])


@case("invalid_utf8")
def _(tmp: Path) -> Bad:
    path = tmp / "pairs.jsonl"
    good = "".join(json.dumps(r) + "\n" for r in pairs(3)).encode()
    path.write_bytes(good + b'{"prompt": "caf\xe9", "response_chosen": "a"}\n')
    return Bad(train_args(tmp, "--data.train_files", path), [str(path), "UTF-8", "line 4"])


@case("output_dir_is_a_file")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    argv = [*train_args(tmp, "--data.train_files", data), "--output_dir", str(data)]
    return Bad(argv, [str(data), "output_dir"])


@case("unknown_model")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    argv = [*train_args(tmp, "--data.train_files", data), "--model.name", "not-a-model"]
    return Bad(argv, ["not-a-model"])


@case("existing_checkpoints_without_resume", needs_run=True)
def _(tmp: Path, run: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    shutil.copytree(run / "checkpoints", tmp / "run" / "checkpoints")  # a copy of a real run
    return Bad(train_args(tmp, "--data.train_files", data), [str(tmp / "run"), "--resume"])


@case("eval_not_a_model")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    return Bad(["eval", str(tmp), str(data)], [str(tmp), "no reward model"], command="eval")


@case("eval_missing_data_file", needs_run=True)
def _(tmp: Path, run: Path) -> Bad:
    path = tmp / "nowhere.jsonl"
    argv = ["eval", str(run / "final"), str(path)]
    return Bad(argv, [str(path), "does not exist"], command="eval")


@case("eval_zero_batch_size")
def _(tmp: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    argv = ["eval", str(tmp), str(data), "--batch-size", "0"]
    return Bad(argv, ["--batch-size", "'0'"], command="eval")


@case("score_output_is_a_folder", needs_run=True)
def _(tmp: Path, run: Path) -> Bad:
    data = write_jsonl(tmp / "pairs.jsonl", pairs())
    argv = ["score", str(run / "final"), str(data), "-o", str(tmp)]
    return Bad(argv, [str(tmp), "output"], command="score")


@case("convert_hh_missing_rejected")
def _(tmp: Path) -> Bad:
    path = tmp / "hh.jsonl"
    ok = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go",
    }
    write_jsonl(path, [ok, {"chosen": ok["chosen"]}])
    argv = ["data", "convert", "--format", "hh-rlhf", str(path), "-o", str(tmp / "out.jsonl")]
    return Bad(argv, [str(path), "record 1", "rejected"], command="data convert")


@case("convert_ukp_bad_label")
def _(tmp: Path) -> Bad:
    path = tmp / "ban-plastic-water-bottles_yes-emergencies-only.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["#id", "label", "a1", "a2"])
        writer.writerow(["1_2", "a3", "first argument", "second argument"])
    argv = ["data", "convert", "--format", "ukp-convarg", str(path), "-o", str(tmp / "out.jsonl")]
    return Bad(argv, [str(path), "record 0", "label", "'a3'"], command="data convert")


# ---------------------------------------------------------------- bad input: running them


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained for a few steps through the CLI (with checkpoints and final/)."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(folder / "pairs.jsonl", preference_records(32))
    run = folder / "run"
    result = dial(
        "train",
        *TINY,
        *QUIET,
        "--data.train_files",
        data,
        "--data.eval_split",
        "0.25",
        "--train.batch_size",
        "8",
        "--train.max_steps",
        "3",
        "--output_dir",
        run,
        threads=None,
    )
    assert result.returncode == 0, describe(result)
    return run


@pytest.fixture(scope="module")
def bad_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Run every selected bad-input case, several at a time; results by case name."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "callspec", None) is not None
        and item.module is request.module
        and "name" in item.callspec.params
    ]
    selected = [name for name in CASES if name in selected]
    run = request.getfixturevalue("trained_run") if NEEDS_RUN & set(selected) else None
    built = {}
    for name in selected:
        folder = tmp_path_factory.mktemp(name)
        built[name] = CASES[name](folder, run) if name in NEEDS_RUN else CASES[name](folder)

    def execute(bad: Bad):
        for argv in bad.before:
            first = dial(*argv)
            assert first.returncode == 0, describe(first)
        return dial(*bad.argv)

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(execute, bad) for name, bad in built.items()}
        return {name: (built[name], future.result()) for name, future in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(bad_results, name: str) -> None:
    bad, result = bad_results[name]
    assert_clean_error(result, bad.command, bad.names)


def test_at_least_twenty_kinds_of_bad_input() -> None:
    assert len(CASES) >= 20


# ---------------------------------------------------------------- help


@pytest.mark.parametrize(
    "argv",
    [[], ["train"], ["eval"], ["score"], ["data"], ["data", "convert"], ["models"]],
    ids=lambda argv: " ".join(argv) or "dial",
)
def test_help_exits_zero(argv: list[str]) -> None:
    result = dial(*argv, "--help")
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("usage: dial"), describe(result)
    assert result.stderr == ""


def test_train_help_lists_every_option() -> None:
    result = dial("train", "--help")
    assert result.returncode == 0, describe(result)
    text = " ".join(result.stdout.split())
    for key, option in iter_options():
        assert re.search(rf"(^|\s){re.escape('--' + key)}\s", text), f"--{key} is not listed"
        first_words = " ".join(option.metadata["help"].split()[:3])
        assert first_words in text, f"the help of --{key} ({first_words!r}...) is not shown"


# ---------------------------------------------------------------- happy path


def test_train_eval_score_through_the_command_line(trained_run: Path, tmp_path: Path) -> None:
    run = trained_run
    data = run.parent / "pairs.jsonl"
    assert (run / "final" / "dial_config.json").is_file()
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert checkpoints, "the run saved no checkpoint"
    metrics_file = tmp_path / "metrics.json"
    scores_file = tmp_path / "scores.jsonl"
    embeddings_file = tmp_path / "emb.npy"
    commands = {
        "final": ["eval", run / "final", data, "-o", metrics_file],
        "run": ["eval", run, data],
        "checkpoint": ["eval", checkpoints[-1], data],
        "score": ["score", run / "final", data, "-o", scores_file, "--embeddings", embeddings_file],
        "models": ["models"],
    }
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(dial, *argv) for name, argv in commands.items()}
        results = {name: future.result() for name, future in futures.items()}
    for result in results.values():
        assert result.returncode == 0, describe(result)

    metrics = json.loads(metrics_file.read_text())
    assert set(metrics) == {"pairs"}
    assert metrics["pairs"]["n"] == 32
    assert 0.0 <= metrics["pairs"]["accuracy"] <= 1.0
    assert json.loads(results["final"].stdout) == metrics
    # the run folder and a checkpoint folder name a model too; final/ is the last checkpoint
    assert json.loads(results["run"].stdout) == metrics
    assert json.loads(results["checkpoint"].stdout)["pairs"]["n"] == 32

    rows = [json.loads(line) for line in scores_file.read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(32))
    assert all(len(row["rewards"]) == 2 for row in rows)
    assert all(
        row["margin"] == pytest.approx(row["rewards"][0] - row["rewards"][1]) for row in rows
    )
    embeddings = np.load(embeddings_file)
    assert embeddings.shape == (32, 2, 32)  # tiny-bert's hidden size is 32
    assert np.isfinite(embeddings).all()

    listed = {line.split()[0] for line in results["models"].stdout.splitlines()[1:]}
    assert {"minilm", "smollm2-135m", "tiny-bert", "tiny-llama"} <= listed


# ---------------------------------------------------------------- the record parser


COLUMN_SETS = [
    ("preference", DEFAULT_COLUMNS["preference"]),
    ("preference", ColumnConfig(("good", "bad"))),
    ("mcq", DEFAULT_COLUMNS["mcq"]),
    ("score", DEFAULT_COLUMNS["score"]),
    ("score", ColumnConfig(("question", "answer"), ("grade",))),
]
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["1.5", "nan", "inf", "-3", " 2 ", ""])
)
VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@st.composite
def task_records(draw):
    task, columns = draw(st.sampled_from(COLUMN_SETS))
    names = [*columns.input_columns, *columns.target_columns]
    keys = st.sampled_from(names) | st.text(max_size=6)
    # mostly text in the text columns, so that valid records (and late errors) are common
    value = st.one_of(st.text(max_size=10), st.text(max_size=10), VALUES)
    records = draw(st.lists(st.dictionaries(keys, value, max_size=len(names) + 2), max_size=4))
    for record in records:
        for name in names:
            if draw(st.integers(0, 9)) < 8:
                record[name] = draw(value if name in columns.input_columns else JSON_SCALARS)
    return task, columns, records, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_records())
def test_parse_records_returns_the_input_strings_or_a_located_data_error(drawn) -> None:
    task, columns, records, require_labels = drawn
    inputs, labels = columns.input_columns, columns.target_columns
    try:
        examples, report = parse_records(
            records, task, columns, file="f.jsonl", require_labels=require_labels
        )
    except DataError as error:
        assert error.file == "f.jsonl"
        assert error.record is not None and 0 <= error.record < len(records)
        assert error.field is not None and error.field in (*inputs, *labels)
        assert f"record {error.record}" in str(error) and error.field in str(error)
        # every record before the reported one is fine on its own
        parse_records(
            records[: error.record], task, columns, file="f.jsonl", require_labels=require_labels
        )
        return
    assert report.records == len(examples) == len(records)
    has_prompt = task == "mcq" or len(inputs) == (3 if task == "preference" else 2)
    for record, example in zip(records, examples, strict=True):
        texts = [record[c] for c in inputs]
        assert example.prompt == (texts[0] if has_prompt else "")
        assert example.responses == tuple(texts[1:] if has_prompt else texts)
        assert all(type(r) is str for r in (example.prompt, *example.responses))
        if task == "score" and require_labels:
            assert example.label is not None and math.isfinite(example.label)
            assert example.label == float(record[labels[0]])
        else:
            assert example.label is None

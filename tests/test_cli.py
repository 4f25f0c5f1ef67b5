"""The ``dial`` command line, driven as a user drives it: one subprocess per command.

Bad input of every kind must end in exit code 2 and one ``dial <command>: error: ...`` line that
names the file, the record, the field or the option at fault, never a traceback. The bad-input
cases run concurrently: each subprocess that gets past option parsing spends ~5 CPU-seconds
importing torch and transformers, so the file needs ~140 CPU-seconds (~70 s on two idle cores).
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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import preference_records, write_jsonl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dial.config import iter_options
from dial.data.records import DEFAULT_COLUMNS, ColumnConfig, parse_records
from dial.errors import DataError

WORKERS = max(2, min(4, os.cpu_count() or 2))
TINY = ["--model.name", "tiny-bert"]
QUIET = ["--train.report_to", "[]", "--train.progress_bar", "false"]


DIAL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # several run at once; tiny-bert needs no more
    "COLUMNS": "1000",  # help texts unwrapped
}


def dial(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dial.cli ARGS`` offline and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "dial.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **DIAL_ENV},
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


CASES: dict[str, Callable[..., Bad]] = {}
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
def pool() -> Iterator[ThreadPoolExecutor]:
    """Runs this module's subprocesses, a few at a time (they mostly import torch)."""
    with ThreadPoolExecutor(WORKERS) as executor:
        yield executor


@pytest.fixture(scope="module")
def training(pool: ThreadPoolExecutor, tmp_path_factory: pytest.TempPathFactory) -> Future[Path]:
    """Starts training a run for a few steps through the CLI; see `trained_run`."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(folder / "pairs.jsonl", preference_records(32))
    run = folder / "run"
    argv = ["train", *TINY, *QUIET, "--data.train_files", data, "--data.eval_split", "0.25"]
    argv += ["--train.batch_size", "8", "--train.max_steps", "3", "--output_dir", run]

    def train() -> Path:
        result = dial(*argv)
        assert result.returncode == 0, describe(result)
        return run

    return pool.submit(train)


@pytest.fixture(scope="module")
def trained_run(training: Future[Path]) -> Path:
    """A run folder with checkpoints/ and final/, trained on its folder's pairs.jsonl."""
    return training.result()


@pytest.fixture(scope="module")
def bad_results(
    request: pytest.FixtureRequest, pool: ThreadPoolExecutor, tmp_path_factory
) -> dict[str, Future[tuple[Bad, subprocess.CompletedProcess[str]]]]:
    """Start every selected bad-input case; a future (case, result) by case name."""
    params = [getattr(item, "callspec", None) for item in request.session.items]
    chosen = {p.params["name"] for p in params if p is not None and "name" in p.params}
    selected = [name for name in CASES if name in chosen]
    # the training starts first; the cases that need its run folder are queued last
    training = request.getfixturevalue("training") if NEEDS_RUN & chosen else None

    def execute(name: str, folder: Path):
        bad = CASES[name](folder, training.result()) if name in NEEDS_RUN else CASES[name](folder)
        return bad, dial(*bad.argv)

    order = sorted(selected, key=lambda name: name in NEEDS_RUN)
    return {name: pool.submit(execute, name, tmp_path_factory.mktemp(name)) for name in order}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(bad_results, name: str) -> None:
    bad, result = bad_results[name].result()
    assert_clean_error(result, bad.command, bad.names)


def test_at_least_twenty_kinds_of_bad_input() -> None:
    assert len(CASES) >= 20


# ---------------------------------------------------------------- help


@pytest.mark.parametrize(
    "argv",
    [[], ["train"], ["eval"], ["score"], ["data"], ["data", "convert"], ["models"], ["rl"],
     ["generate"], ["rl-eval"], ["baseline-judge"], ["experiment"], ["report"]],
    ids=lambda argv: " ".join(argv) or "dial",
)  # fmt: skip
def test_help_exits_zero(argv: list[str]) -> None:
    result = dial(*argv, "--help")
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("usage: dial"), describe(result)
    assert result.stderr == ""


def test_help_and_train_parsing_leave_torch_unimported() -> None:
    """`dial --help` and parsing `dial train` options add only their own command's options, so
    neither imports torch (seconds on a laptop)."""
    code = (
        "import sys\n"
        "from dial.cli import build_parser\n"
        "build_parser(()).parse_args(['models'])\n"
        "build_parser({'train'}).parse_known_args(['train', '--train.max_steps', '3'])\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_train_help_lists_every_option() -> None:
    result = dial("train", "--help")
    assert result.returncode == 0, describe(result)
    text = " ".join(result.stdout.split())
    for key, option in iter_options():
        assert re.search(rf"(^|\s){re.escape('--' + key)}\s", text), f"--{key} is not listed"
        first_words = " ".join(option.metadata["help"].split()[:3])
        assert first_words in text, f"the help of --{key} ({first_words!r}...) is not shown"


# ---------------------------------------------------------------- happy path


def test_train_eval_score_through_the_command_line(
    trained_run: Path, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
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
    futures = {name: pool.submit(dial, *argv) for name, argv in commands.items()}
    results = {name: future.result() for name, future in futures.items()}
    for result in results.values():
        assert result.returncode == 0, describe(result)

    metrics = json.loads(metrics_file.read_text())
    assert set(metrics) == {"pairs"}
    assert metrics["pairs"]["n"] == 32
    assert 0.0 <= metrics["pairs"]["accuracy"] <= 1.0
    assert json.loads(results["final"].stdout) == metrics
    # the run folder and a checkpoint folder name a model too; final/ holds the last checkpoint
    assert json.loads(results["run"].stdout) == metrics
    assert json.loads(results["checkpoint"].stdout)["pairs"] == pytest.approx(metrics["pairs"])
    # eval_split 0.25 held out 8 of the 32 pairs, evaluated at the end of training
    assert json.loads((run / "final_metrics.json").read_text())["eval"]["heldout"]["n"] == 8

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
    """(task, columns, records, require_labels): records with the task's columns, mostly."""
    task, columns = draw(st.sampled_from(COLUMN_SETS))
    # mostly text in the text columns, so that valid records (and late errors) are common
    text = st.one_of(st.text(max_size=10), st.text(max_size=10), VALUES)
    records = []
    for _ in range(draw(st.integers(0, 4))):
        record = dict(draw(st.dictionaries(st.text(max_size=6), VALUES, max_size=2)))
        for name in columns.input_columns:
            if draw(st.integers(0, 19)):  # present 95% of the time
                record[name] = draw(text)
        for name in columns.target_columns:
            if draw(st.integers(0, 19)):
                record[name] = draw(JSON_SCALARS)
        records.append(record)
    return task, columns, records, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_records())
@example(("score", DEFAULT_COLUMNS["score"], [{"text": "a", "label": 10**400}], True))
@example(("preference", DEFAULT_COLUMNS["preference"], [{"prompt": 10**5000}], True))
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
    for record, parsed in zip(records, examples, strict=True):
        texts = [record[c] for c in inputs]
        assert parsed.prompt == (texts[0] if has_prompt else "")
        assert parsed.responses == tuple(texts[1:] if has_prompt else texts)
        assert all(type(r) is str for r in (parsed.prompt, *parsed.responses))
        if task == "score" and require_labels:
            assert parsed.label is not None and math.isfinite(parsed.label)
            assert parsed.label == float(record[labels[0]])
        else:
            assert parsed.label is None

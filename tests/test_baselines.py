"""The prompting baselines: prompts, A/B randomisation, parsing, metrics, the CLI; one real run
against llama.cpp's server (slow)."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
from conftest import write_jsonl
from test_judge import ChatServer, LlamaServer

from dial.cli import main
from dial.data.records import Example
from dial.errors import ConfigError, DataError
from dial.evaluation.metrics import compute_metrics
from dial.judge import JudgeConfig
from dial.judge.baselines import (
    BaselineConfig,
    Item,
    conversation,
    load_items,
    mcq_item,
    outputs_for_metrics,
    preference_item,
    run_baseline,
)

PAIRS = [
    {
        "prompt": f"Question {i}?",
        "response_chosen": f"good answer {i}",
        "response_rejected": f"bad answer {i}",
    }
    for i in range(40)
]


def test_preference_order_is_random_seeded_and_recorded():
    example = Example("Which?", ("chosen text", "rejected text"))
    rng = random.Random(3)
    items = [preference_item(example, rng) for _ in range(200)]
    swapped = sum(item.order == (1, 0) for item in items)
    assert 80 <= swapped <= 120  # about half, and both orders occur
    again = random.Random(3)
    assert [preference_item(example, again).order for _ in range(200)] == [i.order for i in items]
    for item in items:
        first = item.text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        assert first == example.responses[item.order[0]]
        assert item.answer == ("A" if item.order == (0, 1) else "B")  # the chosen one's letter
    assert items[0].text.startswith("Prompt:\nWhich?\n\nResponse A:\n")


def test_mcq_item_shuffles_options_and_tracks_the_correct_one():
    example = Example("Odd one out?", ("carrot", "apple", "pear", "plum"))
    item = mcq_item(example, random.Random(1))
    assert item.options == ("A", "B", "C", "D")
    listed = dict(re.findall(r"^([A-D])\. (\w+)$", item.text, flags=re.MULTILINE))
    assert listed[item.answer] == "carrot"
    assert sorted(item.order) == [0, 1, 2, 3]
    assert [listed[letter] for letter in item.options] == [example.responses[i] for i in item.order]


def test_conversation_methods():
    item = Item(
        "Request:\nHi\n\nShould the assistant comply or refuse?", ("comply", "refuse"), "comply"
    )
    demo = Item(
        "Request:\nBomb?\n\nShould the assistant comply or refuse?", ("comply", "refuse"), "refuse"
    )
    zero = conversation(item, BaselineConfig(task="safety"))
    assert [m["role"] for m in zero] == ["system", "user"]
    assert zero[0]["content"].endswith(
        'Reply with JSON only: {"answer": <one of "comply", "refuse">}.'
    )
    few = conversation(
        item, BaselineConfig(task="safety", method="few_shot", train_file="x"), [demo]
    )
    assert [m["role"] for m in few] == ["system", "user", "assistant", "user"]
    assert few[2]["content"] == '{"answer": "refuse"}'
    cot = conversation(item, BaselineConfig(task="safety", method="cot"))
    assert '{"reasoning": "<a few short sentences>", "answer"' in cot[0]["content"]
    score = conversation(
        Item("Text:\nx", ("1", "1.5"), "1"), BaselineConfig(task="score", score_max=2.0)
    )
    assert "on a scale from 1 to 2 in steps of 0.5" in score[0]["content"]


def test_metrics_from_picks_by_hand():
    # preference: order (0,1) -> A is the chosen one; (1,0) -> B is
    items = [
        Item("", ("A", "B"), "A", (0, 1)),
        Item("", ("A", "B"), "B", (1, 0)),
        Item("", ("A", "B"), "B", (1, 0)),
        Item("", ("A", "B"), "A", (0, 1)),
    ]
    outputs = outputs_for_metrics("preference", items, ["A", "B", "A", None])
    metrics = compute_metrics("preference", outputs)
    assert metrics["accuracy"] == 0.5  # right, right, wrong, unparseable (a tie)
    assert metrics["ties"] == 1 and metrics["margin"] == pytest.approx((1 + 1 - 1 + 0) / 4)
    # mcq: order (2, 0, 1): option B shows the correct answer (record column 0)
    mcq = [Item("", ("A", "B", "C"), "B", (2, 0, 1))] * 3
    metrics = compute_metrics("mcq", outputs_for_metrics("mcq", mcq, ["B", "A", None]))
    assert metrics["mcq_accuracy"] == pytest.approx(1 / 3)
    # a wrong pick ranks the correct answer below it and level with the unpicked one (2); so
    # does no pick (all level, a tie costs a place)
    assert metrics["mcq_rank"] == pytest.approx((0 + 2 + 2) / 3)
    # safety: the correct action's response is "chosen"
    safety = [Item("", ("comply", "refuse"), c, label=c) for c in ("comply", "refuse", "refuse")]
    metrics = compute_metrics(
        "preference", outputs_for_metrics("safety", safety, ["comply", "comply", None])
    )
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["ties"] == 1
    # score: None -> the scale's midpoint
    scores = [Item("", ("1", "2", "3"), "1", label=x) for x in (1.0, 2.0, 3.0)]
    outputs = outputs_for_metrics("score", scores, ["1", None, "3"])
    assert outputs["predictions"] == [1.0, 2.0, 3.0]
    assert compute_metrics("score", outputs)["pearson"] == pytest.approx(1.0)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="few_shot needs --train"):
        BaselineConfig(method="few_shot")
    with pytest.raises(ConfigError, match="bad score scale"):
        BaselineConfig(task="score", score_min=5, score_max=1)
    bad = write_jsonl(
        tmp_path / "x.jsonl",
        [{"prompt": "p", "correct": "comply"}, {"prompt": "q", "correct": "maybe"}],
    )
    with pytest.raises(
        DataError, match=r"record 1, field 'correct': expected 'comply' or 'refuse'"
    ):
        load_items(str(bad), BaselineConfig(task="safety"), random.Random(0))
    essays = write_jsonl(tmp_path / "e.jsonl", [{"text": "essay", "label": 6.0}])
    with pytest.raises(DataError, match=r"label 6\.0 lies outside the score scale 1\.\.5"):
        load_items(str(essays), BaselineConfig(task="score"), random.Random(0))
    with pytest.raises(ConfigError, match="need a judge server"):
        run_baseline([str(essays)], JudgeConfig(), BaselineConfig(task="score"))
    assert (
        main(
            ["baseline-judge", str(bad), "--task", "safety", "--judge-url", "http://127.0.0.1:9/v1"]
        )
        == 2
    )


def _pick_chosen(body: dict) -> str:
    """A judge that knows the rule of PAIRS: the good answer is better."""
    text = body["messages"][-1]["content"]
    first = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
    return json.dumps({"answer": "A" if first.startswith("good") else "B"})


def test_run_against_local_server_position_bias_and_oracle(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = BaselineConfig(task="preference", seed=5)
    items = load_items(str(data), config, random.Random(5))
    unswapped = sum(item.order == (0, 1) for item in items) / len(items)
    assert 0.2 < unswapped < 0.8
    always_a = lambda body: json.dumps({"answer": "A"})  # noqa: E731
    with ChatServer(answer=always_a) as server:
        judge = JudgeConfig(url=server.url, cache_path=str(tmp_path / "a.jsonl"))
        metrics = run_baseline([str(data)], judge, config, log=lambda *_: None)["pairs"]
        # a judge that always says A is right exactly where the chosen response was shown first
        assert metrics["accuracy"] == pytest.approx(unswapped)
        assert metrics["unparseable"] == 0 and metrics["n"] == 40
        schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
        assert list(schema["properties"]) == ["answer"]
    with ChatServer(answer=_pick_chosen) as server:
        out = tmp_path / "metrics.json"
        code = main(
            [
                "baseline-judge",
                str(data),
                "--method",
                "cot",
                "--seed",
                "5",
                "--judge-url",
                server.url,
                "--judge-cache-path",
                str(tmp_path / "b.jsonl"),
                "-o",
                str(out),
            ]
        )
        assert code == 0
        metrics = json.loads(out.read_text())["pairs"]
        assert metrics["accuracy"] == 1.0 and metrics["average_rank"] == 0.0
        schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
        assert list(schema["properties"]) == ["reasoning", "answer"]
    assert json.loads(capsys.readouterr().out) == {"pairs": metrics}


def test_few_shot_demonstrations_come_from_the_train_file(tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"Request {i}", "correct": "refuse"} for i in range(10)],
    )
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Hello", "correct": "comply"}])
    config = BaselineConfig(task="safety", method="few_shot", train_file=str(train), shots=3)
    with ChatServer(answer=lambda body: '{"answer": "comply"}') as server:
        judge = JudgeConfig(url=server.url)
        metrics = run_baseline([str(test)], judge, config, log=lambda *_: None)["test"]
        messages = server.bodies[0]["messages"]
    assert metrics["accuracy"] == 1.0
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * 3, "user"]
    shown = [m["content"] for m in messages[1:-1:2]]
    assert len(set(shown)) == 3 and all(s.startswith("Request:\nRequest ") for s in shown)
    assert messages[2]["content"] == '{"answer": "refuse"}'


@pytest.mark.slow
def test_baselines_with_llama_server(shared_data: Path, tmp_path: Path, capsys):
    """SmolLM2 behind llama.cpp's server: chain-of-thought safety judging of XSTest prompts and
    zero-shot preference judging; every answer parses and the metrics JSON has eval's keys."""
    with (shared_data / "xstest" / "xstest_prompts.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    safe = [r for r in rows if r["label"] == "safe"][:4]
    unsafe = [r for r in rows if r["label"] == "unsafe"][:4]
    records = [
        {"prompt": r["prompt"], "correct": "comply" if r["label"] == "safe" else "refuse"}
        for r in safe + unsafe
    ]
    safety = write_jsonl(tmp_path / "xs_eval.jsonl", records)
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": r["prompt"],
                "response_chosen": "Sure. " + r["prompt"].rstrip("?") + " works like this: ...",
                "response_rejected": "I'm sorry, but I can't help with that.",
            }
            for r in safe
        ],
    )
    with LlamaServer() as server:
        common = ["--judge-url", server.url, "--judge-response-format", "json_object"]
        common += ["--judge-on-unparseable", "error", "--judge-cache-path", str(tmp_path / "c")]
        assert (
            main(["baseline-judge", str(safety), "--task", "safety", "--method", "cot", *common])
            == 0
        )
        safety_metrics = json.loads(capsys.readouterr().out)["xs_eval"]
        assert main(["baseline-judge", str(pairs), *common]) == 0
        pair_metrics = json.loads(capsys.readouterr().out)["pairs"]
    for metrics, n in ((safety_metrics, 8), (pair_metrics, 4)):
        assert set(metrics) == {
            "accuracy", "ties", "tie_rate", "margin", "n", "average_rank", "unparseable"
        }  # fmt: skip
        assert metrics["n"] == n and metrics["unparseable"] == 0 and metrics["ties"] == 0
        assert 0.0 <= metrics["accuracy"] <= 1.0
    print(
        f"\nSmolLM2 cot safety accuracy {safety_metrics['accuracy']:.2f} (8 prompts), "
        f"zero-shot preference accuracy {pair_metrics['accuracy']:.2f} (4 pairs)"
    )

"""Tests of `dial experiment` and `dial report` (dial.experiments): suite files, the table
arithmetic, the model-selection functions against hand computations, the runner's resume on a
tiny model, and the report rendered in headless Chromium."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import math
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_jsonl

from dial.cli import main
from dial.config import load_config
from dial.data.datasets import load_task_files
from dial.errors import ConfigError
from dial.experiments.analysis import analyse_run
from dial.experiments.demo_data import TASKS, generate
from dial.experiments.experiment import Experiment
from dial.experiments.runner import DONE, NEW, RESUME, plan
from dial.experiments.selection import (
    density_ratio,
    density_ratio_from_logits,
    dev_risk,
    effective_sample_size,
    example_losses,
    select_checkpoint,
)
from dial.experiments.suite import (
    build_data,
    check_eval_names,
    load_suite,
    parse_seeds,
    parse_suite,
)
from dial.experiments.tables import (
    format_mean_std,
    gap_closed,
    gap_standard_error,
    length_baseline_metrics,
    markdown_tables,
    mean_std,
)
from dial.training import checkpoint as ckpt

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ table arithmetic


def test_mean_and_sample_std_by_hand() -> None:
    # mean 0.7; deviations -0.2, 0, 0.2 -> sum of squares 0.08 / (3 - 1) = 0.04 -> std 0.2
    mean, std = mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(0.2)
    assert mean_std([0.61]) == (pytest.approx(0.61), None)
    assert format_mean_std(0.7, 0.2) == "0.700 ± 0.200"
    assert format_mean_std(0.61, None) == "0.610"
    with pytest.raises(ValueError):
        mean_std([])


def test_gap_closed_by_hand_and_undefined_without_a_gap() -> None:
    assert gap_closed(0.6, 0.5, 0.9) == pytest.approx(0.25)  # 0.1 of a 0.4 gap
    assert gap_closed(0.5, 0.5, 0.9) == pytest.approx(0.0)
    assert gap_closed(0.4, 0.5, 0.9) == pytest.approx(-0.25)  # worse than source-only
    assert gap_closed(0.95, 0.5, 0.9) == pytest.approx(1.125)  # beyond the oracle
    assert gap_closed(0.6, 0.5, 0.505) is None  # |gap| 0.005 < 0.01
    assert gap_closed(0.6, 0.5, 0.505, min_gap=0.001) == pytest.approx(20.0)


def test_gap_within_its_standard_error_is_not_a_ratio() -> None:
    # sqrt(0.03² / 3 + 0.04² / 3) = sqrt(0.0025 / 3) = 0.02887
    assert gap_standard_error((0.04, 3), (0.03, 3)) == pytest.approx(0.028868, abs=1e-6)
    assert gap_standard_error((None, 1), (0.03, 3)) is None
    rows = []
    for seed, (so, dial, oracle) in enumerate([(0.44, 0.46, 0.50), (0.52, 0.54, 0.50)]):
        for method, value in (("source_only", so), ("dial", dial), ("oracle", oracle)):
            rows.append({"setting": "hh", "method": method, "seed": seed, "target": value})
    text = markdown_tables(
        rows,
        settings=["hh"],
        methods=["source_only", "dial", "oracle"],
        metric="accuracy",
        title="t",
    )
    # gap 0.50 - 0.48 = 0.02 (above MIN_GAP); s.e. sqrt(0.0032 / 2 + 0 / 2) = 0.04
    assert "| dial | — (gap +0.020, s.e. 0.040) |" in text


def test_markdown_table_holds_the_hand_computed_cells() -> None:
    rows = []
    for seed, (so, dial, oracle) in enumerate([(0.5, 0.6, 0.9), (0.7, 0.8, 0.9)]):
        for method, value in (("source_only", so), ("dial", dial), ("oracle", oracle)):
            rows.append({"setting": "noise", "method": method, "seed": seed, "target": value})
    rows.append({"setting": "flat", "method": "source_only", "seed": 0, "target": 0.8})
    rows.append({"setting": "flat", "method": "oracle", "seed": 0, "target": 0.8})
    rows.append({"setting": "flat", "method": "dial", "seed": 0, "target": 0.9})
    text = markdown_tables(
        rows,
        settings=["noise", "flat"],
        methods=["source_only", "dial", "oracle"],
        metric="accuracy",
        title="t",
    )
    # source_only: mean 0.6, std sqrt(0.02) = 0.1414; dial: 0.7 ± 0.1414; oracle 0.9 ± 0
    assert "| source_only | 0.600 ± 0.141 | 0.800 |" in text
    assert "| dial | 0.700 ± 0.141 | 0.900 |" in text
    assert "| oracle | 0.900 ± 0.000 | 0.800 |" in text
    # gap closed from the means: (0.7 - 0.6) / (0.9 - 0.6) = 0.33; flat: no gap
    assert "| dial | 0.33 | — (no gap) |" in text
    assert "2 seeds: 0, 1" in text


# ------------------------------------------------------------------ model selection


def test_example_losses_by_hand() -> None:
    rewards = np.array([[2.0, 0.0], [0.0, 1.0]])
    expected = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]
    assert example_losses("preference", rewards) == pytest.approx(expected)
    # margin 1: -log σ(2 - 0 - 1) and -log σ(0 - 1 - 1)
    assert example_losses("preference", rewards, margin=1.0) == pytest.approx(
        [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(2.0))]
    )
    # mcq: the mean over wrong answers of -log σ(r_c - r_w)
    mcq = example_losses("mcq", np.array([[1.0, 0.0, 3.0]]))
    assert mcq == pytest.approx([(math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2])
    assert example_losses("score", np.array([[1.5], [0.0]]), np.array([1.0, 2.0])) == (
        pytest.approx([0.25, 4.0])
    )
    bce = example_losses("score", np.array([[0.0]]), np.array([1.0]), score_loss="bce")
    assert bce == pytest.approx([math.log(2)])


def test_density_ratio_from_logits_by_hand() -> None:
    # w = (n_s / n_t) · e^z: n_s 4, n_t 2 -> 2 · [1, 2, 0.5]
    weights = density_ratio_from_logits(np.array([0.0, math.log(2), -math.log(2)]), 4, 2)
    assert weights == pytest.approx([2.0, 4.0, 1.0])


def test_dev_risk_by_hand() -> None:
    losses = np.array([1.0, 2.0, 3.0])
    weights = np.array([0.5, 1.0, 2.5])
    # L = w·l = [0.5, 2, 7.5], mean 10/3; mean w = 4/3
    # Cov(L, w) = 23/6, Var(w) = 13/12 (n - 1) -> η = -46/13
    # DEV = 10/3 + η · 4/3 - η = 10/3 + η/3 = 28/13
    assert dev_risk(losses, weights) == pytest.approx(28 / 13)
    # with mean weight 1 the control variate adds nothing: the weighted mean
    assert dev_risk(losses, np.array([0.5, 1.0, 1.5])) == pytest.approx(7 / 3)
    # constant weights: no variance, the weighted mean
    assert dev_risk(losses, np.array([2.0, 2.0, 2.0])) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        dev_risk(np.array([1.0]), np.array([1.0]))


def test_effective_sample_size_and_checkpoint_choice_by_hand() -> None:
    assert effective_sample_size(np.ones(4)) == pytest.approx(4.0)
    assert effective_sample_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_sample_size(np.array([1.0, 3.0])) == pytest.approx(16 / 10)
    scores = {10: 0.5, 20: 0.3, 30: 0.3, 40: None, 50: float("nan")}
    assert select_checkpoint(scores) == 20  # lowest, earliest on ties, None/NaN ignored
    assert select_checkpoint({10: None}) is None


def test_density_ratio_recovers_a_known_ratio() -> None:
    # source N(0, 1), target N(1, 1): p_t(x) / p_s(x) = exp(x - 1/2)
    rng = np.random.default_rng(0)
    source = rng.normal(0.0, 1.0, size=(4000, 1))
    target = rng.normal(1.0, 1.0, size=(2000, 1))
    points = np.array([[-1.0], [0.0], [0.5], [1.0]])
    weights = density_ratio(source, target, points, l2=0.0)
    assert weights == pytest.approx(np.exp(points[:, 0] - 0.5), rel=0.1)
    # the L2 penalty shrinks the ratio toward its prior: flatter, never steeper
    shrunk = density_ratio(source, target, points, l2=0.1)
    assert shrunk[0] > weights[0] and shrunk[-1] < weights[-1]


# ------------------------------------------------------------------ suites


def suite_dict(**changes) -> dict:
    raw = {
        "name": "tiny",
        "settings": [{"name": "s", "train_files": ["{data}/a.jsonl"]}],
        "methods": [{"name": "source_only", "overrides": {"train.method": "source_only"}}],
    }
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"methods": []}, "no methods"),
        ({"seeds": [0, 0]}, "seeds repeat"),
        ({"data": [{"python": "os:system", "outputs": ["a.jsonl"]}]}, "in the dial package"),
        ({"data": [{"dial": "train --x 1", "outputs": ["a.jsonl"]}]}, "dial data"),
        ({"data": [{"dial": "data noise a", "python": "dial.x:y", "outputs": ["a"]}]}, "exactly"),
        ({"choose": [{"name": "c", "among": ["source_only", "dial"]}]}, "unknown method 'dial'"),
        ({"settings": [{"name": "bad name", "train_files": ["a"]}]}, "must be letters"),
    ],
)
def test_bad_suites_are_config_errors(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_suite(suite_dict(**changes))


def test_seeds_parse_from_the_command_line() -> None:
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds([3]) == [3]
    for bad in ("0,x", "", "-1", [1.5]):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_a_bad_option_in_a_method_fails_before_anything_runs(tmp_path: Path, capsys) -> None:
    path = tmp_path / "suite.yaml"
    methods = [{"name": "m", "overrides": {"train.learning_rat": 0.1}}]
    path.write_text(yaml.safe_dump(suite_dict(methods=methods)))
    assert main(["experiment", str(path), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("dial experiment: error: setting 's', method 'm'")
    assert "did you mean 'learning_rate'" in error
    assert not (tmp_path / "out").exists()
    assert main(["experiment", str(tmp_path / "none.yaml"), "--output", "x"]) == 2
    assert main(["report", str(tmp_path)]) == 2
    capsys.readouterr()
    settings = [{"name": "s", "train_files": ["a.jsonl"], "target_eval": "nope"}]
    path.write_text(yaml.safe_dump(suite_dict(settings=settings)))
    assert main(["experiment", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "target_eval 'nope' is not one of its eval sets" in capsys.readouterr().err


SHIPPED_SUITES = sorted(
    path.stem
    for path in (PROJECT_ROOT / "configs" / "suites").glob("*.yaml")
    if path.stem != "demo"
)


def _texts(files: list[str], config) -> set[str]:
    """Every prompt-and-response text of some files, as a run of ``config`` reads them."""
    examples, _ = load_task_files(files, config.data)
    return {f"{e.prompt}\n{response}" for e in examples for response in e.responses}


@pytest.mark.parametrize("name", SHIPPED_SUITES)
def test_each_shipped_suite_builds_and_keeps_test_texts_out_of_training(
    name: str, shared_data: Path, tmp_path: Path
) -> None:
    """The data builds from ../shared/data, every run config is valid, and no (prompt, response)
    text of a target test set is in the source training files or the target's training files."""
    suite = load_suite(PROJECT_ROOT / "configs" / "suites" / f"{name}.yaml")
    experiment = Experiment(suite, tmp_path, shared_data)
    build_data(suite, experiment.paths, log=lambda *_: None)
    assert suite.seeds == [0, 1, 2] and suite.length_baseline
    for setting in suite.settings:
        for method in suite.method_names():
            check_eval_names(setting, experiment.config(setting, method, 0))
        config = experiment.config(setting, "source_only", 0)
        test_file = next(f for f in config.data.eval_files if Path(f).stem == setting.target_eval)
        test_texts = _texts([test_file], config)
        assert len(test_texts) >= 100
        assert not test_texts & _texts(config.data.train_files, config)
        assert not test_texts & _texts(config.data.target_files, config)


def test_demo_suite_parses_and_its_generator_keeps_domains_apart(tmp_path: Path) -> None:
    suite = load_suite(PROJECT_ROOT / "configs" / "suites" / "demo.yaml")
    assert {"source_only", "oracle"} <= set(suite.method_names())
    assert suite.length_baseline
    source, target, test = (
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in generate(str(tmp_path), source_train=100, target_train=60, target_test=60)
    )
    assert (len(source), len(target), len(test)) == (100, 60, 60)
    source_prompts = {r["prompt"] for r in source}
    assert not source_prompts & {r["prompt"] for r in target + test}
    pairs = [tuple(r.values()) for r in target]
    assert not set(pairs) & {tuple(r.values()) for r in test}
    for records in (source, target, test):  # the longer response wins about half the time
        longer = np.mean([len(r["response_chosen"]) > len(r["response_rejected"]) for r in records])
        assert 0.3 < longer < 0.7
    assert len(TASKS) % 2 == 0
    again = generate(str(tmp_path / "again"), source_train=100, target_train=60, target_test=60)
    assert again[0].read_text() == (tmp_path / "source_train.jsonl").read_text()


def test_length_baseline_by_hand(tmp_path: Path) -> None:
    records = [
        {"prompt": "p", "response_chosen": "longer one", "response_rejected": "short"},
        {"prompt": "p", "response_chosen": "tiny", "response_rejected": "much longer"},
        {"prompt": "p", "response_chosen": "same", "response_rejected": "size"},  # a tie: wrong
        {"prompt": "p", "response_chosen": "the longest", "response_rejected": "a"},
    ]
    path = write_jsonl(tmp_path / "target_test.jsonl", records)
    config = load_config(None, {"data.train_files": [str(path)], "data.eval_files": [str(path)]})
    metrics = length_baseline_metrics(config, "target_test")
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["ties"] == 1
    with pytest.raises(ConfigError, match="no eval file"):
        length_baseline_metrics(config, "other")


def test_length_baseline_for_scores_by_hand(tmp_path: Path) -> None:
    """Score task: the text's length is the prediction, correlated with the labels."""
    texts_and_labels = [("ab", 1.0), ("abcd", 2.0), ("abc", 4.0), ("abcdefgh", 3.0)]
    path = write_jsonl(
        tmp_path / "essays.jsonl", [{"text": t, "label": y} for t, y in texts_and_labels]
    )
    config = load_config(
        None,
        {"data.task": "score", "data.train_files": [str(path)], "data.eval_files": [str(path)]},
    )
    metrics = length_baseline_metrics(config, "essays")
    lengths, labels = np.array([2.0, 4.0, 3.0, 8.0]), np.array([1.0, 2.0, 4.0, 3.0])
    lc, yc = lengths - lengths.mean(), labels - labels.mean()  # 2 4 3 8 vs 1 2 4 3
    pearson = (lc @ yc) / np.sqrt((lc @ lc) * (yc @ yc))
    assert metrics["pearson"] == pytest.approx(pearson)
    assert metrics["spearman"] == pytest.approx(0.4)  # ranks 1 3 2 4 vs 1 2 4 3


# ------------------------------------------------------------------ runner and report

TINY_SUITE = """
name: tiny
description: tiny-bert on generated pairs, for tests
seeds: [0]
length_baseline: true
base:
  model: {name: tiny-bert}
  data: {max_length: 48, eval_split: 0.25}
  train: {batch_size: 8, max_steps: 4, save_steps: 2, learning_rate: 1.0e-3,
          eval_batch_size: 64, report_to: [], progress_bar: false}
  domain: {eval_samples: 16}
data:
  - python: dial.experiments.demo_data:generate
    args: {output_dir: "{data}", source_train: 48, target_train: 32, target_test: 24}
    outputs: [source_train.jsonl, target_train.jsonl, target_test.jsonl]
  - dial: data cipher {data}/target_train.jsonl {data}/target_test.jsonl
      -o {data}/target_train_c.jsonl {data}/target_test_c.jsonl --seed 3
    outputs: [target_train_c.jsonl, target_test_c.jsonl]
settings:
  - name: cipher
    train_files: ["{data}/source_train.jsonl"]
    target_files: ["{data}/target_train_c.jsonl"]
    eval_files: ["{data}/target_test_c.jsonl"]
methods:
  - {name: source_only, overrides: {train.method: source_only}}
  - {name: dial, overrides: {train.method: dial, domain.weight: 0.1}}
  - {name: dial_big, overrides: {train.method: dial, domain.weight: 1.0}}
  - {name: oracle, overrides: {train.method: oracle}}
choose:
  - {name: dial_by_dev, among: [dial, dial_big], by: dev}
"""


def trained_count(output: str) -> int:
    line = next(line for line in output.splitlines() if "run(s) trained" in line)
    return int(line.split()[0])


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory) -> Path:
    """The tiny suite run once, two runs at a time."""
    root = tmp_path_factory.mktemp("experiment")
    (root / "tiny.yaml").write_text(TINY_SUITE)
    assert (
        main(["experiment", str(root / "tiny.yaml"), "--output", str(root / "out"), "--jobs", "2"])
        == 0
    )
    return root


def test_experiment_writes_runs_tables_and_analysis(experiment_dir: Path) -> None:
    out = experiment_dir / "out"
    rows = list(csv_rows(out / "results.csv"))
    runs = [r for r in rows if r["status"] == "finished"]
    assert sorted(r["method"] for r in runs) == ["dial", "dial_big", "oracle", "source_only"]
    assert all(r["steps"] == "4" for r in runs)
    baseline = next(r for r in rows if r["method"] == "length_baseline")
    test = [
        json.loads(line) for line in (out / "data/target_test_c.jsonl").read_text().splitlines()
    ]
    hand = np.mean([len(r["response_chosen"]) > len(r["response_rejected"]) for r in test])
    assert float(baseline["target"]) == pytest.approx(hand)
    choice = next(r for r in rows if r["method"] == "dial_by_dev")
    assert choice["chosen"].split("@")[0] in ("dial", "dial_big")
    for run in runs:
        folder = out / "runs" / "cipher" / run["method"] / "seed_0"
        analysis = json.loads((folder / "analysis.json").read_text())
        steps = [c["step"] for c in analysis["checkpoints"]]
        assert steps == [2, 4]
        final = json.loads((folder / "final_metrics.json").read_text())
        last = analysis["checkpoints"][-1]
        # the last checkpoint's target metrics are training's own final evaluation
        assert last["target_metrics"] == final["eval"]["target_test_c"]
        assert ("critic_w" in last) == run["method"].startswith("dial")
        # ... and so do the domain metrics, measured on the same samples
        domain = final["eval"]["domain"]
        assert last["domain_classifier_accuracy"] == pytest.approx(
            domain["domain_classifier_accuracy"]
        )
        if "critic_w" in last:
            assert last["critic_w"] == pytest.approx(domain["critic_wasserstein"], abs=1e-5)
        assert analysis["selected"]["source_loss"] in steps
        assert float(run["target"]) == pytest.approx(last["target_metrics"]["accuracy"])
        assert float(run["domain_classifier_accuracy"]) >= 0.5
    markdown = (out / "results.md").read_text()
    assert "| length_baseline |" in markdown and "Domain classifier accuracy" in markdown


def test_analysis_measured_afresh_agrees_with_the_final_evaluation_it_reuses(
    experiment_dir: Path, tmp_path: Path
) -> None:
    """Without final_metrics.json the last checkpoint is evaluated on the target: same figures."""
    run = tmp_path / "dial"
    shutil.copytree(experiment_dir / "out/runs/cipher/dial/seed_0", run)
    reused = json.loads((run / "analysis.json").read_text())
    (run / "final_metrics.json").unlink()
    fresh = analyse_run(
        run, source_eval=reused["source_eval"], target_eval=reused["target_eval"], log=print
    )
    assert reused["target_eval"] == "target_test_c"
    for measured, kept in zip(fresh["checkpoints"], reused["checkpoints"], strict=True):
        assert measured["step"] == kept["step"]
        for name, value in kept["target_metrics"].items():
            assert measured["target_metrics"][name] == pytest.approx(value, abs=1e-6), name
        assert measured["source_loss"] == pytest.approx(kept["source_loss"], abs=1e-6)


def csv_rows(path: Path):
    import csv

    with path.open() as handle:
        yield from csv.DictReader(handle)


def test_rerun_skips_finished_runs_and_resumes_a_killed_one(
    experiment_dir: Path, tmp_path: Path, capsys
) -> None:
    out = experiment_dir / "out"  # run folders name their own paths: resumed in place
    suite = str(experiment_dir / "tiny.yaml")
    experiment = Experiment(load_suite(suite), out, (PROJECT_ROOT.parent / "shared/data").resolve())
    assert {run.status for run in plan(experiment, [0])} == {DONE}
    capsys.readouterr()
    assert main(["experiment", suite, "--output", str(out)]) == 0
    assert trained_count(capsys.readouterr().out) == 0

    # kill dial after step 2: its final files and the step-4 checkpoint never got written
    dial = out / "runs/cipher/dial/seed_0"
    for name in ("final_metrics.json", "analysis.json"):
        (dial / name).unlink()
    shutil.rmtree(dial / "final")
    shutil.rmtree(ckpt.list_checkpoints(dial)[-1])
    # oracle died before its first checkpoint
    oracle = out / "runs/cipher/oracle/seed_0"
    for item in oracle.iterdir():
        if item.name != "config.yaml":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    statuses = {run.method: run.status for run in plan(experiment, [0])}
    assert statuses == {"source_only": DONE, "dial": RESUME, "dial_big": DONE, "oracle": NEW}
    assert main(["experiment", suite, "--output", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "cipher/dial/seed_0: resume from its checkpoint" in dry
    assert "cipher/source_only/seed_0: done (skipped)" in dry

    assert main(["experiment", suite, "--output", str(out)]) == 0
    assert trained_count(capsys.readouterr().out) == 2
    assert "resumed from" in (dial / "train.log").read_text()
    assert "at step 2" in (dial / "train.log").read_text()
    for folder in (dial, oracle):
        assert json.loads((folder / "final_metrics.json").read_text())["global_step"] == 4
    # a changed suite does not silently reuse the old runs
    changed = tmp_path / "changed.yaml"
    changed.write_text(TINY_SUITE.replace("learning_rate: 1.0e-3", "learning_rate: 2.0e-3"))
    assert main(["experiment", str(changed), "--output", str(out)]) == 2
    assert "trained with other options" in capsys.readouterr().err


def test_report_rebuilds_from_the_run_folders(experiment_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(experiment_dir / "out", out)
    before = (out / "results.md").read_text()
    for name in ("results.csv", "results.md", "report.html"):
        (out / name).unlink()
    (out / "runs/cipher/dial/seed_0/analysis.json").unlink()  # analysed again on the way
    assert main(["report", str(out)]) == 0
    assert (out / "results.md").read_text() == before
    assert (out / "runs/cipher/dial/seed_0/analysis.json").is_file()
    assert (out / "report.html").stat().st_size > 10_000


def chromium_driver():
    """A headless Chromium with its background networking off, or a skip saying what is
    missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium is absent (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--metrics-recording-only",
        "--no-default-browser-check",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    return webdriver.Chrome(options=options, service=service)


@contextlib.contextmanager
def loopback_server(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_report_renders_every_plot_in_headless_chromium(experiment_dir: Path) -> None:
    driver = chromium_driver()
    try:
        with loopback_server(experiment_dir / "out") as url:
            driver.get(f"{url}/report.html")
            images = driver.execute_script(
                "return Array.from(document.images).map("
                "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);"
            )
            title = driver.title
    finally:
        driver.quit()
    assert title == "dial experiment: tiny"
    alts = [alt for alt, *_ in images]
    # bars, then per setting: curves, Ŵ over training, projection, Ŵ against the target
    assert len(images) == 5, alts
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, f"plot '{alt}' did not load"

"""``dial experiment``: every (setting, method, seed) of a suite, resumable and in parallel.

Each run is a ``dial train`` run folder (see :mod:`dial.experiments.experiment`). A run whose
``final_metrics.json`` and ``analysis.json`` exist is skipped; one with checkpoints but no
final metrics (killed) resumes from its newest complete checkpoint; one that never reached a
checkpoint starts afresh. After training, each run's checkpoints are analysed
(:mod:`dial.experiments.analysis`). With ``--jobs N`` runs go to N worker processes, each
with ``cpu_count // N`` torch threads, their logs in ``RUN/train.log``. Then ``results.csv``,
``results.md`` and ``report.html`` are written and the table printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from dial.config import RunConfig, load_config
from dial.errors import ConfigError
from dial.experiments.analysis import ANALYSIS, analyse_run
from dial.experiments.experiment import Experiment
from dial.experiments.suite import (
    build_data,
    check_eval_names,
    load_suite,
    parse_seeds,
    source_eval_name,
    target_eval_name,
)
from dial.training import checkpoint as ckpt

NEW, RESUME, ANALYSE, DONE = "new", "resume", "analyse", "done"
# options that may differ between a finished run and a rerun of the same suite
RUN_ONLY_OPTIONS = {("resume",), ("train", "progress_bar"), ("train", "report_to")}


@dataclass
class PlannedRun:
    """One (setting, method, seed) of the experiment and what is left to do for it."""

    setting: str
    method: str
    seed: int
    config: RunConfig
    source_eval: str | None
    target_eval: str | None
    status: str

    @property
    def folder(self) -> Path:
        return Path(self.config.output_dir)

    def label(self) -> str:
        return f"{self.setting}/{self.method}/seed_{self.seed}"


@dataclass
class Outcome:
    """How a run went."""

    label: str
    trained: bool
    seconds: float
    error: str | None = None


def run_status(folder: Path) -> str:
    """done, analyse (trained, not analysed), resume (has a checkpoint) or new."""
    if (folder / "final_metrics.json").is_file():
        return DONE if (folder / ANALYSIS).is_file() else ANALYSE
    if ckpt.latest_valid_checkpoint(folder, log=lambda *_: None) is not None:
        return RESUME
    return NEW


def _comparable(values: dict, path: tuple[str, ...] = ()) -> dict:
    return {
        key: _comparable(value, (*path, key)) if isinstance(value, dict) else value
        for key, value in values.items()
        if (*path, key) not in RUN_ONLY_OPTIONS
    }


def _check_same_config(planned: RunConfig, folder: Path) -> None:
    """A run folder made with other options is not silently reused."""
    path = folder / "config.yaml"
    if not path.is_file():
        return
    existing = load_config(path)
    if _comparable(existing.to_dict()) != _comparable(planned.to_dict()):
        raise ConfigError(
            f"{folder} was trained with other options than the suite now gives; "
            "choose another --output, or delete that run folder to retrain it"
        )


def plan(experiment: Experiment, seeds: list[int]) -> list[PlannedRun]:
    """Every run of the suite with its status; all configs are validated first."""
    runs = []
    for setting in experiment.suite.settings:
        for method in experiment.suite.methods:
            for seed in seeds:
                config = experiment.config(setting, method.name, seed)
                check_eval_names(setting, config)
                folder = Path(config.output_dir)
                status = run_status(folder)
                if status != NEW:
                    _check_same_config(config, folder)
                config.resume = status == RESUME
                runs.append(
                    PlannedRun(
                        setting=setting.name,
                        method=method.name,
                        seed=seed,
                        config=config,
                        source_eval=source_eval_name(setting, config),
                        target_eval=target_eval_name(setting, config),
                        status=status,
                    )
                )
    return runs


def execute(run: PlannedRun, quiet: bool = False, threads: int | None = None) -> Outcome:
    """Train (or resume) and analyse one run; failures come back as the outcome's error."""
    import torch

    from dial.training.trainer import train

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    folder = run.folder
    log_file = None
    try:
        if run.status == NEW and folder.exists():
            shutil.rmtree(folder)  # a start that never reached a checkpoint
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").unlink(missing_ok=True)
        log_file = (folder / "train.log").open("a")

        def log(*parts: object) -> None:
            print(*parts, file=log_file, flush=True)
            if not quiet:
                print(*parts, flush=True)

        if quiet:
            run.config.train.progress_bar = False
        if run.status in (NEW, RESUME):
            train(run.config, log=log)
        analyse_run(folder, source_eval=run.source_eval, target_eval=run.target_eval, log=log)
    except Exception as exc:  # one failed run must not stop the others
        (folder / "error.txt").write_text(traceback.format_exc())
        return Outcome(
            run.label(), run.status in (NEW, RESUME), time.perf_counter() - started, str(exc)
        )
    finally:
        if log_file is not None:
            log_file.close()
    return Outcome(run.label(), run.status in (NEW, RESUME), time.perf_counter() - started)


def execute_all(runs: list[PlannedRun], jobs: int, log=print) -> list[Outcome]:
    """Run every pending run, ``jobs`` at a time; each outcome is printed as it arrives."""
    pending = [run for run in runs if run.status != DONE]
    outcomes = []

    def report(outcome: Outcome) -> None:
        state = f"failed: {outcome.error}" if outcome.error else "finished"
        log(f"[{len(outcomes)}/{len(pending)}] {outcome.label} {state} ({outcome.seconds:.0f} s)")

    if jobs == 1:
        for run in pending:
            outcomes.append(execute(run))
            report(outcomes[-1])
        return outcomes
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(execute, run, True, threads) for run in pending]
        for run in pending:
            log(f"queued {run.label()} (log: {run.folder / 'train.log'})")
        for future in concurrent.futures.as_completed(futures):
            outcomes.append(future.result())
            report(outcomes[-1])
    return outcomes


def describe_plan(experiment: Experiment, runs: list[PlannedRun]) -> list[str]:
    lines = [f"experiment '{experiment.suite.name}' in {experiment.root}"]
    for step in experiment.suite.data:
        lines.append(f"  data: {step.describe()} -> {', '.join(step.outputs)}")
    what = {
        NEW: "train",
        RESUME: "resume from its checkpoint",
        ANALYSE: "analyse checkpoints",
        DONE: "done (skipped)",
    }
    for run in runs:
        lines.append(f"  run {run.label()}: {what[run.status]}")
    return lines


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial experiment``."""
    parser.add_argument("suite", help="suite file (YAML), e.g. configs/suites/demo.yaml")
    parser.add_argument(
        "--output", required=True, help="experiment folder (data, runs, results, report)"
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: the suite's)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs trained at once, each in its own process"
    )
    parser.add_argument(
        "--shared-data",
        default="../shared/data",
        help="the folder {shared_data} stands for in the suite",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (what runs, what is skipped) only"
    )


def run_experiment(args: argparse.Namespace) -> int:
    from dial.experiments.report import write_outputs

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    suite = load_suite(args.suite)
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds is not None else suite.seeds
    experiment = Experiment(suite, Path(args.output), Path(args.shared_data).resolve())
    runs = plan(experiment, seeds)
    for line in describe_plan(experiment, runs):
        print(line)
    if args.dry_run:
        return 0
    experiment.save(Path(args.suite))
    build_data(suite, experiment.paths)
    started = time.perf_counter()
    outcomes = execute_all(runs, args.jobs)
    trained = sum(outcome.trained for outcome in outcomes)
    print(
        f"{trained} run(s) trained, {len(runs) - len(outcomes)} skipped as done, "
        f"in {time.perf_counter() - started:.0f} s"
    )
    markdown = write_outputs(experiment)
    print(markdown)
    failed = [outcome for outcome in outcomes if outcome.error]
    for outcome in failed:
        print(f"failed: {outcome.label}: {outcome.error} (see its error.txt)")
    return 1 if failed else 0

"""An experiment folder: where its data, runs and results live, and how its rows are collected.

::

    OUTPUT/suite.yaml                     the suite file as it was run
    OUTPUT/experiment.json                the shared data folder it used
    OUTPUT/data/                          the data the suite's build steps wrote (cached)
    OUTPUT/runs/SETTING/METHOD/seed_N/    one `dial train` run folder per (setting, method, seed)
    OUTPUT/results.csv, results.md, report.html
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dial.config import RunConfig
from dial.errors import ConfigError
from dial.experiments.suite import (
    Setting,
    Suite,
    load_suite,
    run_config,
    source_eval_name,
    target_eval_name,
)
from dial.experiments.tables import LENGTH_BASELINE, choice_row, length_baseline_metrics, run_row

SUITE_COPY = "suite.yaml"
EXPERIMENT_FILE = "experiment.json"


@dataclass
class Experiment:
    """A suite bound to its output folder."""

    suite: Suite
    root: Path
    shared_data: Path

    @property
    def paths(self) -> dict[str, str]:
        """What ``{data}`` and ``{shared_data}`` stand for in the suite."""
        return {"data": str(self.root.resolve() / "data"), "shared_data": str(self.shared_data)}

    def run_folder(self, setting: str, method: str, seed: int) -> Path:
        return self.root / "runs" / setting / method / f"seed_{seed}"

    def config(self, setting: Setting, method_name: str, seed: int) -> RunConfig:
        method = next(m for m in self.suite.methods if m.name == method_name)
        folder = self.run_folder(setting.name, method_name, seed)
        return run_config(self.suite, setting, method, seed, str(folder), self.paths)

    def seeds_on_disk(self) -> list[int]:
        """Every seed that has a run folder, in order."""
        found = {
            int(folder.name.removeprefix("seed_"))
            for folder in self.root.glob("runs/*/*/seed_*")
            if folder.name.removeprefix("seed_").isdigit()
        }
        return sorted(found)

    def save(self, suite_file: Path) -> None:
        """Keep a copy of the suite and the shared data folder for `dial report`."""
        self.root.mkdir(parents=True, exist_ok=True)
        copy = self.root / SUITE_COPY
        if suite_file.resolve() != copy.resolve():
            shutil.copyfile(suite_file, copy)
        record = {"suite": str(suite_file), "shared_data": str(self.shared_data)}
        (self.root / EXPERIMENT_FILE).write_text(json.dumps(record, indent=1) + "\n")

    def rows(self, seeds: list[int] | None = None) -> list[dict[str, Any]]:
        """results.csv's rows: every (setting, method, seed) run, each label-free choice and,
        with ``length_baseline``, the length baseline per setting and seed."""
        seeds = seeds if seeds is not None else self.seeds_on_disk()
        suite = self.suite
        rows = []
        for setting in suite.settings:
            for seed in seeds:
                first = self.config(setting, suite.methods[0].name, seed)
                target_eval = target_eval_name(setting, first)
                source_eval = source_eval_name(setting, first)
                for method in suite.methods:
                    rows.append(
                        run_row(
                            self.run_folder(setting.name, method.name, seed),
                            setting=setting.name,
                            method=method.name,
                            seed=seed,
                            metric=suite.metric,
                            source_eval=source_eval,
                            target_eval=target_eval,
                        )
                    )
                for choice in suite.choose:
                    candidates = {m: self.run_folder(setting.name, m, seed) for m in choice.among}
                    rows.append(
                        choice_row(
                            choice.name,
                            choice.by,
                            candidates,
                            setting=setting.name,
                            seed=seed,
                            metric=suite.metric,
                        )
                    )
                if suite.length_baseline and target_eval is not None:
                    metrics = length_baseline_metrics(first, target_eval)
                    rows.append(
                        {
                            "setting": setting.name,
                            "method": LENGTH_BASELINE,
                            "seed": seed,
                            "status": "baseline",
                            "target": metrics.get(suite.metric),
                        }
                    )
        return rows

    def row_names(self) -> list[str]:
        """The methods' names, then the choices', then the length baseline's."""
        names = self.suite.method_names() + [c.name for c in self.suite.choose]
        return names + ([LENGTH_BASELINE] if self.suite.length_baseline else [])


def open_experiment(root: str | Path) -> Experiment:
    """The experiment in an output folder written by `dial experiment`."""
    folder = Path(root)
    record_path = folder / EXPERIMENT_FILE
    if not (folder / SUITE_COPY).is_file() or not record_path.is_file():
        raise ConfigError(
            f"{folder} is not an experiment folder (no {SUITE_COPY} and {EXPERIMENT_FILE}; "
            "`dial experiment SUITE --output FOLDER` makes one)"
        )
    record = json.loads(record_path.read_text())
    return Experiment(load_suite(folder / SUITE_COPY), folder, Path(record["shared_data"]))

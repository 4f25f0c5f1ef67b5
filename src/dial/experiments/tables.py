r"""Result tables of an experiment: ``results.csv`` (a row per run) and ``results.md``.

``results.md`` is the paper's table: a row per method, a column per setting, each cell the
target metric's mean ± sample standard deviation over seeds (``ddof = 1``; one seed shows no
±). Below it, the share of the source-only -> oracle gap that each method closes,

.. math::

    \text{gap closed} = \frac{\bar m - \bar m_{\text{source\_only}}}
                              {\bar m_{\text{oracle}} - \bar m_{\text{source\_only}}}

from the means; undefined (shown as "—") when the oracle is within ``MIN_GAP`` of source-only,
as there is then no gap to close, or within the gap's standard error over seeds,

.. math::

    \text{s.e.} = \sqrt{s_{\text{oracle}}^2 / n_{\text{oracle}}
                        + s_{\text{source\_only}}^2 / n_{\text{source\_only}}},

as a ratio over a gap the seeds cannot tell from zero is noise, however large it looks. Then the
domain classifier's accuracy after training, and which checkpoint each label-free criterion
selects with what it really scores on the target.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dial.config import RunConfig
from dial.data.datasets import eval_set_name, load_task_files, split_heldout
from dial.errors import ConfigError
from dial.evaluation.metrics import compute_metrics
from dial.experiments.selection import CRITERIA

MIN_GAP = 0.01
LOWER_IS_BETTER = ("mse", "average_rank", "mcq_rank")
LENGTH_BASELINE = "length_baseline"
CSV_COLUMNS = (
    "setting",
    "method",
    "seed",
    "status",
    "steps",
    "target",
    "source",
    "domain_classifier_accuracy",
    "critic_w",
    "train_pairs_per_second",
    "last_target",
    "best_target",
    *(f"{c}_{kind}" for c in CRITERIA for kind in ("step", "target")),
    "chosen",
)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the std is None for a single value."""
    if not values:
        raise ValueError("no values")
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else None)


def gap_closed(
    method: float, source_only: float, oracle: float, min_gap: float = MIN_GAP
) -> float | None:
    """``(method − source_only) / (oracle − source_only)``; None when ``|oracle − source_only|``
    is below ``min_gap`` (no gap to close)."""
    gap = oracle - source_only
    if abs(gap) < min_gap:
        return None
    return (method - source_only) / gap


def gap_standard_error(source_only: Sequence[Any], oracle: Sequence[Any]) -> float | None:
    """Standard error of ``mean(oracle) − mean(source_only)`` from each side's (sample standard
    deviation, number of seeds), ``sqrt(s_o² / n_o + s_s² / n_s)``; None when either side has
    a single seed (no spread to measure)."""
    (source_std, source_n), (oracle_std, oracle_n) = source_only, oracle
    if source_std is None or oracle_std is None:
        return None
    return math.sqrt(oracle_std**2 / oracle_n + source_std**2 / source_n)


def format_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def better(metric: str) -> int:
    """+1 when a higher value of ``metric`` is better, −1 when lower is."""
    return -1 if metric in LOWER_IS_BETTER else 1


# ------------------------------------------------------------------ rows


def run_row(
    folder: Path,
    *,
    setting: str,
    method: str,
    seed: int,
    metric: str,
    source_eval: str | None,
    target_eval: str | None,
) -> dict[str, Any]:
    """The results.csv row of one run folder (status ``missing`` when it never finished)."""
    row: dict[str, Any] = {"setting": setting, "method": method, "seed": seed}
    final_path = folder / "final_metrics.json"
    if not final_path.is_file():
        row["status"] = "failed" if (folder / "error.txt").is_file() else "missing"
        return row
    final = json.loads(final_path.read_text())
    evals = final.get("eval", {})
    domain = evals.get("domain", {})
    row.update(
        status="finished",
        steps=final.get("global_step"),
        target=evals.get(target_eval, {}).get(metric) if target_eval else None,
        source=evals.get(source_eval, {}).get(metric) if source_eval else None,
        domain_classifier_accuracy=domain.get("domain_classifier_accuracy"),
        critic_w=domain.get("critic_wasserstein"),
        train_pairs_per_second=final.get("train_pairs_per_second"),
    )
    analysis_path = folder / "analysis.json"
    if analysis_path.is_file():
        analysis = json.loads(analysis_path.read_text())
        targets = {
            c["step"]: c["target_metrics"].get(metric)
            for c in analysis["checkpoints"]
            if "target_metrics" in c
        }
        if targets:
            row["last_target"] = targets[max(targets)]
            row["best_target"] = max(targets.values(), key=lambda v: better(metric) * v)
        for criterion, step in analysis["selected"].items():
            row[f"{criterion}_step"] = step
            row[f"{criterion}_target"] = targets.get(step) if step is not None else None
    return row


def choice_row(
    name: str,
    by: str,
    candidates: dict[str, Path],
    *,
    setting: str,
    seed: int,
    metric: str,
) -> dict[str, Any]:
    """The row of a label-free choice: among every checkpoint of the candidate runs (method ->
    folder), the one with the lowest ``by`` score, and its target metric."""
    best: tuple[float, str, int, Any] | None = None
    for method, folder in candidates.items():
        path = folder / "analysis.json"
        if not path.is_file():
            continue
        for checkpoint in json.loads(path.read_text())["checkpoints"]:
            score = checkpoint.get(by)
            if score is None or not math.isfinite(score):
                continue
            if best is None or score < best[0]:
                value = checkpoint.get("target_metrics", {}).get(metric)
                best = (score, method, checkpoint["step"], value)
    row: dict[str, Any] = {"setting": setting, "method": name, "seed": seed}
    if best is None:
        row["status"] = "missing"
        return row
    row.update(status="chosen", target=best[3], chosen=f"{best[1]}@{best[2]} by {by}")
    return row


def length_baseline_metrics(config: RunConfig, eval_name: str) -> dict[str, Any]:
    """Metrics of the length-only baseline on the eval set ``eval_name`` of a run config:
    "prefer the longer response" (length in characters; a tie is wrong) for preference and mcq,
    "the longer text scores higher" (the length as the prediction) for the score task."""
    data = config.data
    task = data.eval_task or data.task
    if eval_name == "target_heldout":
        examples, _ = load_task_files(data.target_files, data, domain="target")
        _, examples = split_heldout(examples, data.target_eval_split, config.train.seed)
        task = data.task
    else:
        files = [path for path in data.eval_files if eval_set_name(path) == eval_name]
        if not files:
            raise ConfigError(f"no eval file makes the eval set '{eval_name}'")
        examples, _ = load_task_files(
            files[:1], data, task=task, dataset_config=data.eval_dataset_config
        )
    if task == "score":
        lengths = np.array([sum(map(len, e.responses)) for e in examples], dtype=np.float64)
        labels = np.array([e.label for e in examples], dtype=np.float64)
        return compute_metrics(task, {"predictions": lengths, "labels": labels})
    lengths = np.array([[len(r) for r in e.responses] for e in examples], dtype=np.float64)
    if task == "preference":
        return compute_metrics(task, {"chosen": lengths[:, 0], "rejected": lengths[:, 1]})
    return compute_metrics(task, {"rewards": lengths})


# ------------------------------------------------------------------ tables


def summarise(
    rows: Iterable[dict[str, Any]], key: str
) -> dict[tuple[str, str], tuple[float, float | None, int]]:
    """(setting, method) -> (mean, std, n) of ``key`` over the rows that have it."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        value = row.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        groups.setdefault((row["setting"], row["method"]), []).append(float(value))
    return {group: (*mean_std(values), len(values)) for group, values in groups.items()}


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def markdown_tables(
    rows: list[dict[str, Any]],
    *,
    settings: list[str],
    methods: list[str],
    metric: str,
    title: str,
    description: str = "",
) -> str:
    """The text of results.md (see the module doc)."""
    target = summarise(rows, "target")
    counts = {row["seed"] for row in rows if row.get("target") is not None}
    lines = [f"# {title}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"Target {metric} on each setting's target evaluation set, mean ± std over seeds "
        f"({len(counts)} seed{'s' if len(counts) != 1 else ''}: "
        f"{', '.join(str(s) for s in sorted(counts))}; one seed shows no ±).",
        "",
    ]
    shown = [m for m in methods if any((s, m) in target for s in settings)]
    body = [
        [m, *(format_mean_std(*target[(s, m)][:2]) if (s, m) in target else "—" for s in settings)]
        for m in shown
    ]
    lines += _table(["method", *settings], body)
    lines += ["", *_gap_lines(target, settings, shown)]
    domain = summarise(rows, "domain_classifier_accuracy")
    trained = [m for m in shown if any((s, m) in domain for s in settings)]
    if trained:
        lines += [
            "",
            "Domain classifier accuracy after training (balanced, held-out; logistic regression "
            "on the final model's embeddings of source and target training texts; 0.5: the "
            "domains are indistinguishable).",
            "",
        ]
        body = [
            [
                m,
                *(
                    format_mean_std(*domain[(s, m)][:2]) if (s, m) in domain else "—"
                    for s in settings
                ),
            ]
            for m in trained
        ]
        lines += _table(["method", *settings], body)
    lines += _selection_lines(rows, settings, trained, metric)
    chosen = [row for row in rows if row.get("chosen")]
    if chosen:
        lines += ["", "Label-free choices (per setting and seed):", ""]
        body = [
            [
                row["setting"],
                row["method"],
                str(row["seed"]),
                row["chosen"],
                format_mean_std(row.get("target"), None),
            ]
            for row in chosen
        ]
        lines += _table(["setting", "choice", "seed", "checkpoint", f"target {metric}"], body)
    return "\n".join(lines) + "\n"


def _gap_lines(
    target: dict[tuple[str, str], tuple[float, float | None, int]],
    settings: list[str],
    methods: list[str],
) -> list[str]:
    if not all(("source_only" in methods, "oracle" in methods)):
        return ["(No gap closed: the suite needs both source_only and oracle.)"]
    others = [m for m in methods if m not in ("source_only", "oracle")]
    lines = [
        "Share of the source-only -> oracle gap closed, (method − source_only) / "
        f"(oracle − source_only) from the means; '—' where the gap is below {MIN_GAP} "
        "(nothing to close) or below its standard error over seeds, "
        "sqrt(s_oracle²/n + s_source_only²/n) (the seeds cannot tell it from zero).",
        "",
    ]
    body = []
    for method in others:
        cells = [method]
        for setting in settings:
            keys = [(setting, m) for m in (method, "source_only", "oracle")]
            if not all(k in target for k in keys):
                cells.append("—")
                continue
            (mean, _, _), (source_mean, *source_spread), (oracle_mean, *oracle_spread) = (
                target[k] for k in keys
            )
            error = gap_standard_error(source_spread, oracle_spread) or 0.0
            value = gap_closed(mean, source_mean, oracle_mean, min_gap=max(MIN_GAP, error))
            cells.append(
                f"{value:.2f}" if value is not None else _no_ratio(source_mean, oracle_mean, error)
            )
        body.append(cells)
    return lines + _table(["method", *settings], body)


def _no_ratio(source_only: float, oracle: float, error: float) -> str:
    """The gap-closed cell of a setting whose gap is below ``MIN_GAP`` or its standard error."""
    gap = oracle - source_only
    return "— (no gap)" if abs(gap) < MIN_GAP else f"— (gap {gap:+.3f}, s.e. {error:.3f})"


def _selection_lines(
    rows: list[dict[str, Any]], settings: list[str], methods: list[str], metric: str
) -> list[str]:
    columns = ["last_target", *(f"{c}_target" for c in CRITERIA), "best_target"]
    stats = {column: summarise(rows, column) for column in columns}
    if not stats["last_target"]:
        return []
    lines = [
        "",
        f"Model selection without target labels: target {metric} of the checkpoint that each "
        "criterion picks (lowest source validation loss, lowest critic Ŵ, lowest DEV risk), "
        "beside the last checkpoint and the best one (chosen with target labels, for "
        "reference); mean over seeds.",
        "",
    ]
    body = []
    for setting in settings:
        for method in methods:
            if (setting, method) not in stats["last_target"]:
                continue
            cells = [setting, method]
            for column in columns:
                value = stats[column].get((setting, method))
                cells.append(format_mean_std(value[0], None) if value else "—")
            body.append(cells)
    header = ["setting", "method", "last", *CRITERIA, "best (labels)"]
    return lines + _table(header, body)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})

"""``report.html``: one self-contained page with the result tables and the plots as PNG images.

Plots (matplotlib, Agg backend, embedded as ``data:`` URIs so the page needs no other file):
training curves (training loss and the target metric per checkpoint), the target metric per
method (bars with the standard deviation over seeds, the length baseline as a line), the
critic's ``Ŵ`` over training, a 2-D PCA projection of source and target embeddings before
(source_only) and after DIAL, and ``Ŵ`` against the target metric across checkpoints. Then the
model-selection table per run. ``dial report RUN_DIR`` rebuilds results.* and the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from dial.experiments.analysis import EMBEDDINGS, analyse_run, load_analysis
from dial.experiments.experiment import Experiment, open_experiment
from dial.experiments.selection import CRITERIA
from dial.experiments.suite import source_eval_name, target_eval_name
from dial.experiments.tables import LENGTH_BASELINE, markdown_tables, summarise, write_csv


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    plt = _matplotlib()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _runs(experiment: Experiment, setting: str, method: str) -> list[Path]:
    """Finished run folders of (setting, method), by seed."""
    root = experiment.root / "runs" / setting / method
    folders = sorted(root.glob("seed_*"), key=lambda p: int(p.name.removeprefix("seed_")))
    return [folder for folder in folders if (folder / "final_metrics.json").is_file()]


def _methods_of_kind(experiment: Experiment, kind: str) -> list[str]:
    """Names of the suite's methods whose runs use ``train.method == kind``."""
    names = []
    for method in experiment.suite.methods:
        value = method.overrides.get("train.method")
        if value is None:
            value = experiment.suite.base.get("train", {}).get("method", "source_only")
        if value == kind:
            names.append(method.name)
    return names


def _colors(names: list[str]) -> dict[str, Any]:
    plt = _matplotlib()
    palette = plt.get_cmap("tab10")
    return {name: palette(i % 10) for i, name in enumerate(names)}


# ------------------------------------------------------------------ plots


def plot_training_curves(experiment: Experiment, setting: str, metric: str) -> str | None:
    """Training loss per logged step, and the target metric per checkpoint, per method."""
    plt = _matplotlib()
    methods = experiment.suite.method_names()
    colors = _colors(methods)
    figure, (loss_axis, target_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    drawn = False
    for method in methods:
        for index, folder in enumerate(_runs(experiment, setting, method)):
            label = method if index == 0 else None
            train = [r for r in _read_jsonl(folder / "metrics.jsonl") if r["split"] == "train"]
            if train:
                steps = [r["step"] for r in train]
                losses = [r.get("task_loss") for r in train]
                loss_axis.plot(steps, losses, marker=".", color=colors[method], label=label)
                drawn = True
            analysis = load_analysis(folder) or {"checkpoints": []}
            points = [
                (c["step"], c["target_metrics"][metric])
                for c in analysis["checkpoints"]
                if metric in c.get("target_metrics", {})
            ]
            if points:
                target_axis.plot(
                    *zip(*points, strict=True), marker="o", color=colors[method], label=label
                )
    if not drawn:
        plt.close(figure)
        return None
    loss_axis.set(xlabel="step", ylabel="source task loss", title=f"{setting}: training loss")
    target_axis.set(
        xlabel="checkpoint step", ylabel=f"target {metric}", title=f"{setting}: target {metric}"
    )
    loss_axis.legend(fontsize=8)
    if target_axis.lines:
        target_axis.legend(fontsize=8)
    return _png(figure)


def plot_target_bars(experiment: Experiment, rows: list[dict[str, Any]], metric: str) -> str | None:
    """The target metric per method and setting: mean bars, std error bars, length line."""
    plt = _matplotlib()
    stats = summarise(rows, "target")
    if not stats:
        return None
    settings = [s.name for s in experiment.suite.settings]
    names = [n for n in experiment.row_names() if n != LENGTH_BASELINE]
    names = [n for n in names if any((s, n) in stats for s in settings)]
    colors = _colors(names)
    width = 0.8 / max(len(names), 1)
    figure, axis = plt.subplots(figsize=(max(7, 1.8 * len(settings) + 4), 3.8))
    for i, name in enumerate(names):
        xs, means, errors = [], [], []
        for j, setting in enumerate(settings):
            if (setting, name) in stats:
                mean, std, _ = stats[(setting, name)]
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                means.append(mean)
                errors.append(std or 0.0)
        axis.bar(xs, means, width, yerr=errors, capsize=3, color=colors[name], label=name)
    for j, setting in enumerate(settings):
        if (setting, LENGTH_BASELINE) in stats:
            mean = stats[(setting, LENGTH_BASELINE)][0]
            axis.hlines(
                mean,
                j - 0.45,
                j + 0.45,
                colors="black",
                linestyles="dashed",
                label="prefer the longer" if j == 0 else None,
            )
    axis.set_xticks(range(len(settings)), settings)
    axis.set(ylabel=f"target {metric}", title=f"Target {metric} (mean ± std over seeds)")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def plot_wasserstein(experiment: Experiment, setting: str) -> str | None:
    """The batch ``Ŵ`` while training, and the critic's ``Ŵ`` at each checkpoint (dial runs)."""
    plt = _matplotlib()
    methods = _methods_of_kind(experiment, "dial")
    colors = _colors(methods)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for method in methods:
        for index, folder in enumerate(_runs(experiment, setting, method)):
            train = [
                r
                for r in _read_jsonl(folder / "metrics.jsonl")
                if r["split"] == "train" and r.get("wasserstein") is not None
            ]
            label = method if index == 0 else None
            if train:
                axis.plot(
                    [r["step"] for r in train],
                    [r["wasserstein"] for r in train],
                    marker=".",
                    color=colors[method],
                    alpha=0.6,
                    label=f"{label} (batches)" if label else None,
                )
            analysis = load_analysis(folder) or {"checkpoints": []}
            points = [
                (c["step"], c["critic_w"]) for c in analysis["checkpoints"] if "critic_w" in c
            ]
            if points:
                axis.plot(
                    *zip(*points, strict=True),
                    marker="o",
                    linestyle="none",
                    color=colors[method],
                    label=f"{label} (checkpoints)" if label else None,
                )
    if not axis.lines:
        plt.close(figure)
        return None
    axis.set(xlabel="step", ylabel="Ŵ", title=f"{setting}: critic's Wasserstein estimate")
    axis.legend(fontsize=8)
    return _png(figure)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` projected on their first two principal components."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def plot_projection(experiment: Experiment, setting: str) -> str | None:
    """Source and target embeddings in 2-D (PCA of each model's own embeddings), before
    (the source_only run) and after DIAL (the first dial method), first seed of each."""
    plt = _matplotlib()
    panels = []
    for kind, title in (("source_only", "before (source_only)"), ("dial", "after DIAL")):
        for method in _methods_of_kind(experiment, kind):
            runs = _runs(experiment, setting, method)
            if runs and (runs[0] / EMBEDDINGS).is_file():
                arrays = np.load(runs[0] / EMBEDDINGS)
                if "target" in arrays:
                    panels.append(
                        (f"{title}: {method}", arrays["source"], arrays["target"], runs[0])
                    )
                    break
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (title, source, target, folder) in zip(axes[0], panels, strict=True):
        projected = pca_2d(np.concatenate([source, target]))
        axis.scatter(*projected[: len(source)].T, s=6, alpha=0.6, label="source")
        axis.scatter(*projected[len(source) :].T, s=6, alpha=0.6, label="target")
        final = json.loads((folder / "final_metrics.json").read_text())
        accuracy = final.get("eval", {}).get("domain", {}).get("domain_classifier_accuracy")
        note = f"\ndomain classifier {accuracy:.2f}" if accuracy is not None else ""
        axis.set(title=f"{setting}, {title}{note}", xlabel="PC 1", ylabel="PC 2")
        axis.legend(fontsize=8)
    return _png(figure)


def plot_w_against_target(experiment: Experiment, setting: str, metric: str) -> str | None:
    """The critic's ``Ŵ`` against the target metric, one point per checkpoint of dial runs."""
    plt = _matplotlib()
    methods = _methods_of_kind(experiment, "dial")
    colors = _colors(methods)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    drawn = False
    for method in methods:
        for index, folder in enumerate(_runs(experiment, setting, method)):
            analysis = load_analysis(folder) or {"checkpoints": []}
            points = [
                (c["critic_w"], c["target_metrics"][metric], c["step"])
                for c in analysis["checkpoints"]
                if "critic_w" in c and metric in c.get("target_metrics", {})
            ]
            if not points:
                continue
            drawn = True
            xs, ys, _ = zip(*points, strict=True)
            axis.scatter(xs, ys, color=colors[method], label=method if index == 0 else None)
            for x, y, step in points:
                axis.annotate(
                    str(step), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points"
                )
    if not drawn:
        plt.close(figure)
        return None
    axis.set(
        xlabel="critic Ŵ at the checkpoint",
        ylabel=f"target {metric}",
        title=f"{setting}: Ŵ against target {metric} (labels: step)",
    )
    axis.legend(fontsize=8)
    return _png(figure)


# ------------------------------------------------------------------ page


def _markdown_to_html(text: str) -> str:
    """results.md as HTML: '#' headings, '|' tables, other lines as paragraphs."""
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if not table:
            return
        header, body = table[0], [r for r in table[1:] if not all(set(c) <= {"-"} for c in r)]
        parts.append(
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
        )
        for cells in body:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("# "):
            parts.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def _selection_table(experiment: Experiment, rows: list[dict[str, Any]], metric: str) -> str:
    """Per run: the checkpoint each criterion picks and its target metric."""
    runs = [row for row in rows if row.get("last_target") is not None]
    if not runs:
        return "<p>No checkpoint analysis yet.</p>"
    header = ["setting", "method", "seed", "last", *CRITERIA, "best (labels)"]
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for row in runs:
        cells = [row["setting"], row["method"], str(row["seed"]), f"{row['last_target']:.3f}"]
        for criterion in CRITERIA:
            step, value = row.get(f"{criterion}_step"), row.get(f"{criterion}_target")
            cells.append("—" if step is None else f"step {step}: {value:.3f}")
        cells.append(f"{row['best_target']:.3f}")
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
"""


def render_report(experiment: Experiment, rows: list[dict[str, Any]], markdown: str) -> str:
    """The HTML text of report.html."""
    metric = experiment.suite.metric
    figures: list[tuple[str, str | None]] = [
        (f"Target {metric} per method", plot_target_bars(experiment, rows, metric))
    ]
    for setting in (s.name for s in experiment.suite.settings):
        figures += [
            (f"{setting}: training curves", plot_training_curves(experiment, setting, metric)),
            (f"{setting}: Ŵ over training", plot_wasserstein(experiment, setting)),
            (f"{setting}: embeddings before and after DIAL", plot_projection(experiment, setting)),
            (
                f"{setting}: Ŵ against target {metric}",
                plot_w_against_target(experiment, setting, metric),
            ),
        ]
    body = [_markdown_to_html(markdown), "<h2>Plots</h2>"]
    missing = []
    for caption, image in figures:
        if image is None:
            missing.append(caption)
            continue
        body.append(
            f'<figure><img src="data:image/png;base64,{image}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if missing:
        body.append(
            "<p>Not drawn (no data for them in these runs): "
            + html.escape("; ".join(missing))
            + ".</p>"
        )
    body += ["<h2>Model selection per run</h2>", _selection_table(experiment, rows, metric)]
    title = html.escape(f"dial experiment: {experiment.suite.name}")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_outputs(experiment: Experiment, log=print) -> str:
    """Analyse finished runs that lack it, then write results.csv, results.md and
    report.html; returns the text of results.md."""
    for setting in experiment.suite.settings:
        for method in experiment.suite.methods:
            for folder in _runs(experiment, setting.name, method.name):
                if load_analysis(folder) is None:
                    seed = int(folder.name.removeprefix("seed_"))
                    config = experiment.config(setting, method.name, seed)
                    log(f"analysing {folder}")
                    analyse_run(
                        folder,
                        source_eval=source_eval_name(setting, config),
                        target_eval=target_eval_name(setting, config),
                        log=log,
                    )
    rows = experiment.rows()
    suite = experiment.suite
    markdown = markdown_tables(
        rows,
        settings=[s.name for s in suite.settings],
        methods=experiment.row_names(),
        metric=suite.metric,
        title=f"{suite.name}",
        description=suite.description,
    )
    write_csv(rows, experiment.root / "results.csv")
    (experiment.root / "results.md").write_text(markdown)
    (experiment.root / "report.html").write_text(render_report(experiment, rows, markdown))
    return markdown


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial report``."""
    parser.add_argument("run_dir", help="an experiment folder written by `dial experiment`")


def run_report(args: argparse.Namespace) -> int:
    experiment = open_experiment(args.run_dir)
    markdown = write_outputs(experiment)
    print(markdown)
    print(f"wrote {experiment.root / 'results.csv'}, results.md and report.html")
    return 0

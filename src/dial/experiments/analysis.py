"""What each checkpoint of a finished run scores, with and without target labels.

For every checkpoint in ``RUN/checkpoints/`` this reloads the model and computes, on the data
the run was configured with (``RUN/config.yaml``):

- the source validation loss and metrics (the setting's source eval set);
- DEV's target-risk estimate and its weights' effective sample size (its domain classifier
  fitted on the samples below);
- as training's evaluation computes them, on the first ``domain.eval_samples`` source and
  target training texts: a fresh domain classifier's held-out accuracy on their embeddings,
  and the critic's ``Ŵ`` (runs whose checkpoint holds a critic);
- the target eval set's metrics, where the target has labels (never used to select); for the
  checkpoint of the last step these are taken from training's own final evaluation
  (``final_metrics.json``), which measured the same weights on the same set.

It writes ``RUN/analysis.json`` (per checkpoint, and the step each criterion selects) and
``RUN/embeddings.npz`` (the last checkpoint's source and target embeddings, for the report's
projection).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from dial.config import RunConfig, load_config
from dial.data.datasets import prepare_run_data
from dial.data.tokenize import EncodedData, sequence_format
from dial.errors import ConfigError
from dial.evaluation.domain_metrics import domain_classifier_accuracy
from dial.evaluation.evaluate import metrics_from_predictions, predict
from dial.experiments.selection import (
    CRITERIA,
    density_ratio,
    dev_risk,
    effective_sample_size,
    example_losses,
    select_checkpoint,
)
from dial.models.reward_model import load_reward_model
from dial.objectives.domain_losses import build_domain_loss
from dial.training import checkpoint as ckpt
from dial.training.trainer import domain_loss_options

ANALYSIS = "analysis.json"
EMBEDDINGS = "embeddings.npz"


def _subset(data: EncodedData, n: int) -> EncodedData:
    return EncodedData(data.examples[:n], 0, 0, data.max_length)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class CheckpointAnalysis:
    """Loads a run's data once and measures each checkpoint (see the module doc)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        source_eval: str | None,
        target_eval: str | None,
        device: str,
    ) -> None:
        self.run_dir = run_dir
        self.config: RunConfig = load_config(run_dir / "config.yaml")
        self.source_eval, self.target_eval = source_eval, target_eval
        self.samples = self.config.domain.eval_samples
        self.device = device
        self.data: Any = None
        self.final_target_metrics = self._final_target_metrics()

    def _final_target_metrics(self) -> tuple[int, dict[str, float]] | None:
        """(step, metrics) of the target eval set in training's final evaluation, if any."""
        path = self.run_dir / "final_metrics.json"
        if self.target_eval is None or not path.is_file():
            return None
        final = json.loads(path.read_text())
        metrics = final.get("eval", {}).get(self.target_eval)
        return (final["global_step"], metrics) if metrics else None

    def _load_data(self, tokenizer, architecture: str) -> None:
        self.fmt = sequence_format(tokenizer, architecture)
        data = prepare_run_data(
            self.config.data, tokenizer, self.fmt, self.config.train.seed, target_labels=False
        )
        for name in (self.source_eval, self.target_eval):
            if name is not None and name not in data.evals:
                raise ConfigError(
                    f"{self.run_dir}: no eval set '{name}' (this run has "
                    f"{', '.join(data.evals) or 'none'})"
                )
        self.data = data

    def _predict(self, model, data: EncodedData, embeddings: bool = True):
        return predict(
            model,
            data,
            self.fmt,
            batch_size=self.config.train.eval_batch_size,
            padding_side=self.config.model.padding_side,
            device=self.device,
            with_embeddings=embeddings,
            embedding_layer=self.config.domain.embedding_layer,
        )

    def measure(self, folder: Path) -> dict[str, Any]:
        """The figures of one checkpoint folder (``checkpoints/step_N``)."""
        model, tokenizer = load_reward_model(folder / "model")
        model.to(self.device)
        if self.data is None:
            self._load_data(tokenizer, model.spec.architecture)
        config, data, seed = self.config, self.data, self.config.train.seed
        row: dict[str, Any] = {"step": ckpt.load_state(folder).global_step}
        source = self._predict(model, _subset(data.train, self.samples))
        source_emb = source.embeddings.reshape(-1, model.hidden_size)
        target_emb = None
        if data.target is not None:
            target = self._predict(model, _subset(data.target, self.samples))
            target_emb = target.embeddings.reshape(-1, model.hidden_size)
            row["domain_classifier_accuracy"] = domain_classifier_accuracy(
                source_emb, target_emb, seed=seed
            )
            critic_file = folder / "domain_loss.safetensors"
            if critic_file.is_file():
                critic_w = self._critic_w(critic_file, model.hidden_size, source_emb, target_emb)
                if critic_w is not None:
                    row["critic_w"] = critic_w
        if self.source_eval is not None:
            eval_set = data.evals[self.source_eval]
            validation = self._predict(model, eval_set.data)
            losses = example_losses(
                eval_set.task,
                validation.rewards,
                validation.labels,
                score_loss=config.data.score_loss,
                margin=config.data.margin,
            )
            row["source_loss"] = float(losses.mean())
            row["source_metrics"] = metrics_from_predictions(
                eval_set.task, validation, config.data.score_loss
            )
            if data.target is not None:
                # a pair's features: the mean of its responses' embeddings
                weights = density_ratio(
                    source.embeddings.mean(axis=1),
                    target.embeddings.mean(axis=1),
                    validation.embeddings.mean(axis=1),
                )
                row["dev"] = _finite(dev_risk(losses, weights))
                row["dev_effective_size"] = effective_sample_size(weights)
        if self.final_target_metrics is not None and self.final_target_metrics[0] == row["step"]:
            row["target_metrics"] = self.final_target_metrics[1]
        elif self.target_eval is not None:
            eval_set = data.evals[self.target_eval]
            predictions = self._predict(model, eval_set.data, embeddings=False)
            row["target_metrics"] = metrics_from_predictions(
                eval_set.task, predictions, config.data.score_loss
            )
        self.last_embeddings = (source_emb, target_emb)
        return row

    def _critic_w(
        self, path: Path, hidden: int, source: np.ndarray, target: np.ndarray
    ) -> float | None:
        """The checkpoint's critic's ``Ŵ``; None for a domain loss without a critic."""
        domain = self.config.domain
        loss = build_domain_loss(domain.loss, hidden, **domain_loss_options(domain))
        if not loss.adversarial:
            return None
        loss.load_state_dict(load_file(str(path)))
        with torch.no_grad():
            estimate = loss.wasserstein(
                torch.as_tensor(source, dtype=torch.float32),
                torch.as_tensor(target, dtype=torch.float32),
            )
        return float(estimate)


def analyse_run(
    run_dir: str | Path,
    *,
    source_eval: str | None,
    target_eval: str | None,
    log=print,
) -> dict[str, Any]:
    """Measure every complete checkpoint of a run, select one per criterion, write
    ``analysis.json`` and ``embeddings.npz``; returns the analysis."""
    run = Path(run_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    analysis = CheckpointAnalysis(
        run, source_eval=source_eval, target_eval=target_eval, device=device
    )
    rows = []
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per checkpoint says nothing
    try:
        for folder in ckpt.list_checkpoints(run):
            problem = ckpt.verify_manifest(folder)
            if problem is not None:
                log(f"{folder}: skipped ({problem})")
                continue
            rows.append(analysis.measure(folder))
            shown = {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float)}
            target = rows[-1].get("target_metrics", {})
            shown.update({f"target_{k}": round(v, 4) for k, v in target.items() if k == "accuracy"})
            log(f"analysed step {rows[-1]['step']}: {shown}")
    finally:
        hf_logging.enable_progress_bar()
    if not rows:
        raise ConfigError(f"{run} has no complete checkpoint to analyse")
    selected = {
        criterion: select_checkpoint({row["step"]: row.get(criterion) for row in rows})
        for criterion in CRITERIA
    }
    result = {
        "source_eval": source_eval,
        "target_eval": target_eval,
        "samples": analysis.samples,
        "checkpoints": rows,
        "selected": selected,
    }
    (run / ANALYSIS).write_text(json.dumps(result, indent=1) + "\n")
    source_emb, target_emb = analysis.last_embeddings
    arrays = {"source": source_emb.astype(np.float32)}
    if target_emb is not None:
        arrays["target"] = target_emb.astype(np.float32)
    np.savez(run / EMBEDDINGS, **arrays)
    return result


def load_analysis(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / ANALYSIS
    return json.loads(path.read_text()) if path.is_file() else None

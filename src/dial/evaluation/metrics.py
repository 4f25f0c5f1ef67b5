"""Evaluation metrics against gold labels, as plain functions over arrays.

Inputs may be numpy arrays, lists or torch tensors; results are python floats and ints.
Ties are counted and scored pessimistically: a tie is never a correct answer. A NaN reward is
never above anything, so it is scored as wrong too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import stats

RELEASE_METRIC_NAMES: dict[str, str] = {
    "multiclass_accuracy": "accuracy",
    "average_rank": "average_rank",
    "pearson": "pearson",
    "spearman": "spearman",
    "mcq_accuracy": "mcq_accuracy",
    "mcq_rank": "mcq_rank",
}
"""The paper release's ``--metric_names`` mapped to the keys that ``compute_metrics`` returns."""

_OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "preference": ("chosen", "rejected"),
    "mcq": ("rewards",),
    "score": ("predictions", "labels"),
}
TASKS: tuple[str, ...] = tuple(_OUTPUT_KEYS)


def _to_numpy(values: Any, name: str) -> np.ndarray:
    """Convert a list, array or tensor to a float64 numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _to_vector(values: Any, name: str) -> np.ndarray:
    """Convert to a 1-D float64 array; a ``[N, 1]`` column is accepted and flattened."""
    array = _to_numpy(values, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape [N], got {array.shape}")
    return array


def _check_same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same length, got {len(a)} and {len(b)}")


def pairwise_metrics(chosen: Any, rejected: Any) -> dict[str, float | int]:
    """Metrics of a reward model on preference pairs.

    Args:
        chosen: rewards of the preferred responses, shape ``[N]``.
        rejected: rewards of the other responses, shape ``[N]``.

    Returns:
        ``accuracy`` (fraction with chosen strictly above rejected; a tie is wrong), ``ties``
        (number of exact ties), ``tie_rate`` (``ties / n``), ``margin`` (mean of
        chosen - rejected) and ``n``.
    """
    chosen = _to_vector(chosen, "chosen")
    rejected = _to_vector(rejected, "rejected")
    _check_same_length(chosen, rejected, "chosen and rejected")
    n = len(chosen)
    ties = int(np.sum(chosen == rejected))
    return {
        "accuracy": float(np.mean(chosen > rejected)),
        "ties": ties,
        "tie_rate": ties / n,
        "margin": float(np.mean(chosen - rejected)),
        "n": n,
    }


def ranking_metrics(rewards: Any, correct_index: Any = 0) -> dict[str, float | int]:
    """Metrics of a reward model that ranks C candidate answers per row.

    The rank of the correct answer is 0-based and pessimistic: the number of other answers
    whose reward is not strictly below the correct one's (so a tie costs a place).

    Args:
        rewards: shape ``[N, C]`` with ``C >= 2``.
        correct_index: column of the correct answer, one int for all rows or an array ``[N]``.

    Returns:
        ``accuracy`` (fraction of rows where the correct answer is strictly above every other),
        ``average_rank`` (mean rank, minimum 0), ``ties`` (rows where another answer has exactly
        the correct one's reward) and ``n``.
    """
    rewards = _to_numpy(rewards, "rewards")
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must have shape [N, C] with C >= 2, got {rewards.shape}")
    n, num_choices = rewards.shape
    index = np.broadcast_to(np.asarray(correct_index), (n,))
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"correct_index must hold integers, got dtype {index.dtype}")
    if np.any((index < 0) | (index >= num_choices)):
        raise ValueError(f"correct_index must lie in 0..{num_choices - 1}")
    rows = np.arange(n)
    correct = rewards[rows, index][:, None]
    others = np.ones_like(rewards, dtype=bool)
    others[rows, index] = False
    ranks = np.sum(others & ~(rewards < correct), axis=1)
    return {
        "accuracy": float(np.mean(ranks == 0)),
        "average_rank": float(np.mean(ranks)),
        "ties": int(np.sum(np.any(others & (rewards == correct), axis=1))),
        "n": n,
    }


def correlation_metrics(predictions: Any, labels: Any) -> dict[str, float | int | bool]:
    """Agreement of predicted scores with gold scores.

    Args:
        predictions: predicted scores, shape ``[N]``.
        labels: gold scores, shape ``[N]``.

    Returns:
        ``pearson``, ``spearman`` (average ranks for ties), ``mse``, ``n`` and
        ``constant_input``: when either array is constant the correlations are undefined, so
        they are NaN and ``constant_input`` is True.
    """
    predictions = _to_vector(predictions, "predictions")
    labels = _to_vector(labels, "labels")
    _check_same_length(predictions, labels, "predictions and labels")
    constant = bool(np.ptp(predictions) == 0 or np.ptp(labels) == 0)
    if constant:
        pearson = spearman = float("nan")
    else:
        pearson = float(stats.pearsonr(predictions, labels)[0])
        spearman = float(stats.spearmanr(predictions, labels)[0])
    return {
        "pearson": pearson,
        "spearman": spearman,
        "mse": float(np.mean((predictions - labels) ** 2)),
        "n": len(predictions),
        "constant_input": constant,
    }


def compute_metrics(task: str, outputs: Mapping[str, Any]) -> dict[str, float | int | bool]:
    """Metrics for a task from the model's outputs on an evaluation set.

    Args:
        task: ``"preference"`` (outputs ``chosen``, ``rejected``: ``[N]``), ``"mcq"`` (outputs
            ``rewards``: ``[N, C]``, column 0 correct) or ``"score"`` (outputs ``predictions``,
            ``labels``: ``[N]``).
        outputs: the arrays named above.

    Returns:
        preference: ``pairwise_metrics`` plus ``average_rank`` of the chosen response among the
        two; mcq: ``ranking_metrics`` plus their release names ``mcq_accuracy`` and
        ``mcq_rank``; score: ``correlation_metrics``.
    """
    if task not in _OUTPUT_KEYS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    missing = [key for key in _OUTPUT_KEYS[task] if key not in outputs]
    if missing:
        raise ValueError(
            f"{task} metrics need outputs {', '.join(_OUTPUT_KEYS[task])}; "
            f"missing {', '.join(missing)}"
        )
    if task == "preference":
        chosen, rejected = outputs["chosen"], outputs["rejected"]
        metrics: dict[str, float | int | bool] = dict(pairwise_metrics(chosen, rejected))
        pairs = np.stack([_to_vector(chosen, "chosen"), _to_vector(rejected, "rejected")], 1)
        metrics["average_rank"] = ranking_metrics(pairs)["average_rank"]
        return metrics
    if task == "mcq":
        ranking = ranking_metrics(outputs["rewards"])
        return {"mcq_accuracy": ranking["accuracy"], "mcq_rank": ranking["average_rank"], **ranking}
    return dict(correlation_metrics(outputs["predictions"], outputs["labels"]))

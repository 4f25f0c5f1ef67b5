"""Evaluation metrics against hand computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from dial.evaluation.metrics import (
    RELEASE_METRIC_NAMES,
    compute_metrics,
    correlation_metrics,
    pairwise_metrics,
    ranking_metrics,
)

# Pairwise


def test_pairwise_counts_a_tie_as_wrong() -> None:
    # pairs: 1>0 right, 2=2 tie, 3<4 wrong, 3>1 right
    metrics = pairwise_metrics([1, 2, 3, 3], [0, 2, 4, 1])
    assert metrics == {"accuracy": 0.5, "ties": 1, "tie_rate": 0.25, "margin": 0.5, "n": 4}
    assert isinstance(metrics["accuracy"], float)
    assert isinstance(metrics["ties"], int)
    assert isinstance(metrics["n"], int)


def test_pairwise_accepts_tensors_and_columns() -> None:
    chosen = torch.tensor([[1.0], [2.0]], requires_grad=True)
    rejected = torch.tensor([0.0, 3.0], dtype=torch.bfloat16)
    metrics = pairwise_metrics(chosen, rejected)
    assert metrics["accuracy"] == 0.5
    assert metrics["margin"] == pytest.approx((1 - 1) / 2)


def test_pairwise_nan_reward_is_wrong() -> None:
    metrics = pairwise_metrics([float("nan"), 1.0], [0.0, 0.0])
    assert metrics["accuracy"] == 0.5
    assert metrics["ties"] == 0


def test_pairwise_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same length"):
        pairwise_metrics([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        pairwise_metrics([], [])
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        pairwise_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


# Ranking


def test_ranking_counts_ties_pessimistically() -> None:
    rewards = [
        [3, 1, 2],  # strictly best: rank 0
        [2, 2, 1],  # ties one other: rank 1, a tie
        [0, 5, 5],  # below both: rank 2
        [1, 1, 1],  # ties both: rank 2, a tie
    ]
    metrics = ranking_metrics(rewards)
    assert metrics == {"accuracy": 0.25, "average_rank": (0 + 1 + 2 + 2) / 4, "ties": 2, "n": 4}


def test_ranking_per_row_correct_index() -> None:
    rewards = np.array([[1.0, 3.0], [5.0, 2.0], [0.0, 0.0]])
    metrics = ranking_metrics(rewards, correct_index=np.array([1, 0, 1]))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["average_rank"] == pytest.approx(1 / 3)
    assert metrics["ties"] == 1


def test_ranking_nan_correct_reward_is_last() -> None:
    metrics = ranking_metrics([[float("nan"), 0.0, 1.0]])
    assert metrics["accuracy"] == 0.0
    assert metrics["average_rank"] == 2.0


def test_ranking_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="C >= 2"):
        ranking_metrics([[1.0], [2.0]])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        ranking_metrics([[1.0, 2.0, 3.0]], correct_index=3)
    with pytest.raises(ValueError, match="integers"):
        ranking_metrics([[1.0, 2.0]], correct_index=0.5)


# Correlation


def test_perfectly_linear_scores_correlate_to_one() -> None:
    metrics = correlation_metrics([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])
    assert metrics["pearson"] == pytest.approx(1.0)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["mse"] == pytest.approx((4 + 9 + 16 + 25) / 4)
    assert metrics["n"] == 4
    assert metrics["constant_input"] is False


def test_pearson_hand_value() -> None:
    # deviations from the means (2, 2): x -> [-1, 0, 1], y -> [-1, 1, 0]
    # r = sum(dx * dy) / sqrt(sum(dx²) sum(dy²)) = 1 / sqrt(2 * 2)
    metrics = correlation_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert metrics["pearson"] == pytest.approx(0.5)
    assert metrics["mse"] == pytest.approx((0 + 1 + 1) / 3)


def test_spearman_with_ties_uses_average_ranks() -> None:
    predictions = [1.0, 2.0, 2.0, 3.0]
    labels = [10.0, 20.0, 40.0, 30.0]
    rank_x = [1.0, 2.5, 2.5, 4.0]  # the tied pair shares ranks 2 and 3
    rank_y = [1.0, 2.0, 4.0, 3.0]
    dx = [r - 2.5 for r in rank_x]
    dy = [r - 2.5 for r in rank_y]
    expected = sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(
        sum(a * a for a in dx) * sum(b * b for b in dy)
    )
    assert expected == pytest.approx(3 / math.sqrt(4.5 * 5))
    assert correlation_metrics(predictions, labels)["spearman"] == pytest.approx(expected)


def test_constant_input_gives_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = correlation_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert math.isnan(metrics["pearson"])
    assert math.isnan(metrics["spearman"])
    assert metrics["constant_input"] is True
    assert metrics["mse"] == pytest.approx((0 + 1 + 4) / 3)


# Dispatch


def test_compute_metrics_preference_adds_average_rank() -> None:
    metrics = compute_metrics(
        "preference", {"chosen": [1, 2, 3, 3], "rejected": torch.tensor([0, 2, 4, 1])}
    )
    assert metrics["accuracy"] == 0.5
    assert metrics["ties"] == 1
    assert metrics["average_rank"] == pytest.approx((0 + 1 + 1 + 0) / 4)


def test_compute_metrics_mcq_has_release_names() -> None:
    metrics = compute_metrics("mcq", {"rewards": [[3, 1, 2], [0, 5, 5]]})
    assert metrics == {
        "mcq_accuracy": 0.5,
        "mcq_rank": 1.0,
        "accuracy": 0.5,
        "average_rank": 1.0,
        "ties": 0,
        "n": 2,
    }


def test_compute_metrics_score() -> None:
    metrics = compute_metrics("score", {"predictions": [1.0, 2.0, 3.0], "labels": [1, 3, 2]})
    assert metrics["pearson"] == pytest.approx(0.5)


def test_compute_metrics_rejects_unknown_task_and_missing_outputs() -> None:
    with pytest.raises(ValueError, match="preference, mcq, score"):
        compute_metrics("regression", {})
    with pytest.raises(ValueError, match="missing rejected"):
        compute_metrics("preference", {"chosen": [1.0]})


def test_release_metric_names_map_to_returned_keys() -> None:
    returned = (
        set(compute_metrics("preference", {"chosen": [1.0], "rejected": [0.0]}))
        | set(compute_metrics("mcq", {"rewards": [[1.0, 0.0]]}))
        | set(compute_metrics("score", {"predictions": [1.0, 2.0], "labels": [1.0, 2.0]}))
    )
    assert set(RELEASE_METRIC_NAMES) == {
        "multiclass_accuracy",
        "average_rank",
        "pearson",
        "spearman",
        "mcq_accuracy",
        "mcq_rank",
    }
    assert set(RELEASE_METRIC_NAMES.values()) <= returned

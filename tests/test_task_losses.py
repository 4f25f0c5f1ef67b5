"""Task losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dial.objectives.task_losses import (
    BradleyTerryLoss,
    MultipleChoiceLoss,
    ScoreLoss,
    build_task_loss,
)


def _neg_log_sigmoid(x: float) -> float:
    """-log σ(x) = log(1 + e^{-x}), written out by hand."""
    return math.log(1.0 + math.exp(-x))


# Bradley-Terry


def test_bradley_terry_hand_value() -> None:
    loss = BradleyTerryLoss()(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_constant_margin_shifts_the_difference() -> None:
    loss = BradleyTerryLoss(margin=0.5)(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    expected = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_per_pair_margins_override_the_constant() -> None:
    loss = BradleyTerryLoss(margin=10.0)(
        torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.0]), margins=torch.tensor([1.0, 0.0])
    )
    expected = (_neg_log_sigmoid(1.0) + _neg_log_sigmoid(1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_gradient_signs() -> None:
    chosen = torch.tensor([0.3, -1.0], requires_grad=True)
    rejected = torch.tensor([0.1, 2.0], requires_grad=True)
    BradleyTerryLoss()(chosen, rejected).backward()
    assert (chosen.grad < 0).all()
    assert (rejected.grad > 0).all()
    # dL/dr+_i = -(1 - σ(r+_i - r-_i)) / B
    expected = -(1 - 1 / (1 + math.exp(-(0.3 - 0.1)))) / 2
    assert chosen.grad[0].item() == pytest.approx(expected, rel=1e-5)


def test_bradley_terry_is_stable_for_huge_rewards() -> None:
    chosen = torch.tensor([1000.0, -1000.0], requires_grad=True)
    rejected = torch.tensor([-1000.0, 1000.0])
    loss = BradleyTerryLoss()(chosen, rejected)
    loss.backward()
    assert torch.isfinite(loss)
    # first pair: -log σ(2000) ≈ 0; second: -log σ(-2000) ≈ 2000.
    assert loss.item() == pytest.approx(2000 / 2, rel=1e-6)
    assert torch.isfinite(chosen.grad).all()


def test_bradley_terry_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        BradleyTerryLoss()(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="margins"):
        BradleyTerryLoss()(torch.zeros(2), torch.zeros(2), margins=torch.zeros(3))


# Multiple choice


def test_multiple_choice_hand_value() -> None:
    rewards = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, -1.0]])
    expected = (
        _neg_log_sigmoid(2 - 1)
        + _neg_log_sigmoid(2 - 0)
        + _neg_log_sigmoid(0 - 1)
        + _neg_log_sigmoid(0 - (-1))
    ) / 4
    assert MultipleChoiceLoss()(rewards).item() == pytest.approx(expected, rel=1e-6)


def test_multiple_choice_with_two_columns_is_bradley_terry() -> None:
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert MultipleChoiceLoss()(rewards).item() == pytest.approx(expected, rel=1e-6)


def test_multiple_choice_gradient_signs_and_stability() -> None:
    rewards = torch.tensor([[1000.0, -1000.0, 1000.0]], requires_grad=True)
    loss = MultipleChoiceLoss()(rewards)
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert rewards.grad[0, 0] < 0
    assert (rewards.grad[0, 1:] >= 0).all()


def test_multiple_choice_rejects_one_column() -> None:
    with pytest.raises(ValueError, match="C >= 2"):
        MultipleChoiceLoss()(torch.zeros(3, 1))


# Score


def test_mse_hand_value_and_column_predictions() -> None:
    labels = torch.tensor([1.0, 2.0, 4.0])
    expected = ((1.5 - 1) ** 2 + (2 - 2) ** 2 + (1 - 4) ** 2) / 3
    loss = ScoreLoss("mse")
    assert loss(torch.tensor([1.5, 2.0, 1.0]), labels).item() == pytest.approx(expected)
    assert loss(torch.tensor([[1.5], [2.0], [1.0]]), labels).item() == pytest.approx(expected)


def test_mse_casts_integer_labels() -> None:
    loss = ScoreLoss("mse")(torch.tensor([0.0, 1.0]), torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(0.5)


def test_bce_hand_value() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 0.25])

    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    expected = (
        -math.log(sigmoid(0.0))
        - math.log(1 - sigmoid(2.0))
        - (0.25 * math.log(sigmoid(-1.0)) + 0.75 * math.log(1 - sigmoid(-1.0)))
    ) / 3
    assert ScoreLoss("bce")(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_bce_is_stable_and_checks_the_label_range() -> None:
    loss = ScoreLoss("bce")(torch.tensor([1000.0, -1000.0]), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx(1000.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ScoreLoss("bce")(torch.zeros(2), torch.tensor([0.0, 2.0]))


def test_cross_entropy_hand_value() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 2])
    log_z = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    expected = (math.log(3) + (log_z - 3)) / 2
    loss = ScoreLoss("cross_entropy")
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert loss(logits, labels.float()).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_is_stable() -> None:
    logits = torch.tensor([[1000.0, -1000.0]])
    assert ScoreLoss("cross_entropy")(logits, torch.tensor([1])).item() == pytest.approx(2000.0)


def test_cross_entropy_rejects_bad_labels() -> None:
    loss = ScoreLoss("cross_entropy")
    with pytest.raises(ValueError, match="integer"):
        loss(torch.zeros(2, 3), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        loss(torch.zeros(2), torch.tensor([0, 1]))


def test_score_loss_rejects_unknown_kind_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="mse, bce, cross_entropy"):
        ScoreLoss("hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not match"):
        ScoreLoss("mse")(torch.zeros(3), torch.zeros(2))


# Factory


@pytest.mark.parametrize(
    ("task", "kind"),
    [("preference", BradleyTerryLoss), ("mcq", MultipleChoiceLoss), ("score", ScoreLoss)],
)
def test_build_task_loss_returns_the_module(task: str, kind: type[nn.Module]) -> None:
    assert isinstance(build_task_loss(task), kind)


def test_build_task_loss_passes_options() -> None:
    preference = build_task_loss("preference", margin=0.5)
    assert isinstance(preference, BradleyTerryLoss)
    assert preference.margin == 0.5
    score = build_task_loss("score", score_loss="bce")
    assert isinstance(score, ScoreLoss)
    assert score.kind == "bce"


def test_build_task_loss_names_the_choices() -> None:
    with pytest.raises(ValueError, match="preference, mcq, score"):
        build_task_loss("ranking")

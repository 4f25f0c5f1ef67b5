"""Supervised source losses (the "task"): preference, multiple choice and score prediction.

Each loss is a small ``nn.Module`` whose ``forward`` returns a scalar tensor, the mean over the
batch. ``build_task_loss`` picks one from the task name used in configs and on the CLI.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ScoreLossKind = Literal["mse", "bce", "cross_entropy"]
SCORE_LOSS_KINDS: tuple[str, ...] = get_args(ScoreLossKind)
TASKS: tuple[str, ...] = ("preference", "mcq", "score")


class BradleyTerryLoss(nn.Module):
    r"""Bradley-Terry loss on pairs of rewards, with an optional margin.

    .. math::

        L = -\frac{1}{B} \sum_{i=1}^{B} \log \sigma\left(r^+_i - r^-_i - m_i\right)

    where :math:`r^+_i` and :math:`r^-_i` are the rewards of the chosen and rejected responses
    and :math:`m_i` is the per-pair margin passed to ``forward``, or the constant ``margin``
    when none is passed. ``F.logsigmoid`` keeps it finite for rewards of any size.

    Args:
        margin: constant margin used when ``forward`` gets no per-pair margins.
    """

    def __init__(self, margin: float = 0.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self,
        chosen_rewards: Tensor,
        rejected_rewards: Tensor,
        margins: Tensor | None = None,
    ) -> Tensor:
        """Return the mean loss over the batch.

        Args:
            chosen_rewards: rewards of the chosen responses, shape ``[B]``.
            rejected_rewards: rewards of the rejected responses, shape ``[B]``.
            margins: optional per-pair margins, shape ``[B]``; overrides ``margin``.
        """
        if chosen_rewards.shape != rejected_rewards.shape:
            raise ValueError(
                "chosen_rewards and rejected_rewards must have the same shape, got "
                f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
            )
        if margins is not None and margins.shape != chosen_rewards.shape:
            raise ValueError(
                f"margins must have the rewards' shape {tuple(chosen_rewards.shape)}, "
                f"got {tuple(margins.shape)}"
            )
        margin = self.margin if margins is None else margins
        return -F.logsigmoid(chosen_rewards - rejected_rewards - margin).mean()


class MultipleChoiceLoss(nn.Module):
    r"""Multiple-choice (odd one out) loss: the correct answer against each wrong one.

    For rewards of shape ``[B, C]`` whose column 0 is the correct answer :math:`r_c` and whose
    columns 1..C-1 are the wrong answers :math:`r_{w_1}, \dots, r_{w_{C-1}}`:

    .. math::

        L = \frac{1}{B (C - 1)} \sum_{b=1}^{B} \sum_{i=1}^{C-1}
            -\log \sigma\left(r_{c,b} - r_{w_i,b}\right)

    With ``C = 2`` it is the Bradley-Terry loss.
    """

    def forward(self, rewards: Tensor) -> Tensor:
        """Return the mean loss over the batch and the wrong answers.

        Args:
            rewards: shape ``[B, C]`` with ``C >= 2``; column 0 holds the correct answer.
        """
        if rewards.dim() != 2 or rewards.shape[1] < 2:
            raise ValueError(
                f"rewards must have shape [B, C] with C >= 2, got {tuple(rewards.shape)}"
            )
        return -F.logsigmoid(rewards[:, :1] - rewards[:, 1:]).mean()


class ScoreLoss(nn.Module):
    r"""Score (sequence prediction) loss against labels from a column.

    - ``"mse"``: :math:`L = \frac{1}{B} \sum_i (\hat y_i - y_i)^2` for predictions ``[B]`` (or
      ``[B, 1]``) and float labels ``[B]``.
    - ``"bce"``: :math:`L = -\frac{1}{B} \sum_i \left[y_i \log \sigma(z_i)
      + (1 - y_i) \log(1 - \sigma(z_i))\right]` for logits :math:`z` ``[B]`` (or ``[B, 1]``)
      and labels in :math:`[0, 1]`.
    - ``"cross_entropy"``: :math:`L = -\frac{1}{B} \sum_i \log \operatorname{softmax}(z_i)_{y_i}`
      for logits ``[B, K]`` and integer class labels ``[B]`` in ``0..K-1``; integer-valued float
      labels are accepted and cast.

    Args:
        kind: one of ``"mse"``, ``"bce"``, ``"cross_entropy"``.
    """

    def __init__(self, kind: ScoreLossKind = "mse") -> None:
        super().__init__()
        if kind not in SCORE_LOSS_KINDS:
            raise ValueError(
                f"unknown score loss {kind!r}; choose one of {', '.join(SCORE_LOSS_KINDS)}"
            )
        self.kind = kind

    def forward(self, predictions: Tensor, labels: Tensor) -> Tensor:
        """Return the mean loss over the batch.

        Args:
            predictions: ``[B]`` or ``[B, 1]`` (mse, bce) or ``[B, K]`` logits (cross_entropy).
            labels: ``[B]``.
        """
        if self.kind == "cross_entropy":
            return self._cross_entropy(predictions, labels)
        if predictions.dim() == labels.dim() + 1 and predictions.shape[-1] == 1:
            predictions = predictions.squeeze(-1)
        if predictions.shape != labels.shape:
            raise ValueError(
                f"predictions of shape {tuple(predictions.shape)} do not match labels of "
                f"shape {tuple(labels.shape)}"
            )
        labels = labels.to(predictions.dtype)
        if self.kind == "mse":
            return F.mse_loss(predictions, labels)
        if ((labels < 0) | (labels > 1)).any():
            raise ValueError("bce labels must lie in [0, 1]")
        return F.binary_cross_entropy_with_logits(predictions, labels)

    @staticmethod
    def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                "cross_entropy needs logits [B, K] and labels [B], got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if labels.is_floating_point():
            if not torch.equal(labels, labels.round()):
                raise ValueError("cross_entropy labels must be integer class indices")
            labels = labels.long()
        num_classes = logits.shape[1]
        if ((labels < 0) | (labels >= num_classes)).any():
            raise ValueError(f"cross_entropy labels must lie in 0..{num_classes - 1}")
        return F.cross_entropy(logits, labels)


def build_task_loss(task: str, *, score_loss: str = "mse", margin: float = 0.0) -> nn.Module:
    """Return the loss for a task name.

    Args:
        task: ``"preference"`` (Bradley-Terry), ``"mcq"`` (multiple choice) or ``"score"``.
        score_loss: the score loss kind, used when ``task == "score"``.
        margin: the constant Bradley-Terry margin, used when ``task == "preference"``.
    """
    if task == "preference":
        return BradleyTerryLoss(margin=margin)
    if task == "mcq":
        return MultipleChoiceLoss()
    if task == "score":
        return ScoreLoss(score_loss)  # ScoreLoss validates the kind
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")

"""Running a reward model over an encoded data set: rewards, embeddings and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dial.data.datasets import eval_set_name
from dial.data.records import load_column_config, load_examples
from dial.data.tokenize import (
    EncodedData,
    SequenceFormat,
    collate,
    encode_examples,
    model_inputs,
)
from dial.errors import DialError
from dial.evaluation.metrics import compute_metrics
from dial.models.reward_model import RewardModel


@dataclass
class Predictions:
    """Per-example outputs, in the data's order.

    ``rewards``: [N, C] (C responses per example) or [N, C, K] for a K-label head;
    ``embeddings``: [N, C, H] when asked for.
    """

    rewards: np.ndarray
    embeddings: np.ndarray | None
    labels: np.ndarray | None


@torch.no_grad()
def predict(
    model: RewardModel,
    data: EncodedData,
    fmt: SequenceFormat,
    *,
    batch_size: int = 32,
    padding_side: str = "right",
    device: torch.device | str = "cpu",
    with_embeddings: bool = False,
    embedding_layer: int | None = None,
) -> Predictions:
    """Rewards of every sequence, batched by length (little padding), returned in data order;
    with `with_embeddings` also their embeddings (of `embedding_layer`, see RewardModel)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: data.examples[i].length, reverse=True)
    n_responses = len(data.examples[0].input_ids)
    rewards: list[torch.Tensor] = [None] * len(data)  # type: ignore[list-item]
    embeddings: list[torch.Tensor] = [None] * len(data)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = model_inputs(collate([data.examples[i] for i in indices], fmt, padding_side))
        batch_rewards, batch_embeddings, _ = model(
            **{k: v.to(device) for k, v in batch.items()},
            embedding_layer=embedding_layer if with_embeddings else None,
        )
        # response-major rows -> [B, C, ...]
        batch_rewards = batch_rewards.float().reshape(n_responses, len(indices), -1).transpose(0, 1)
        for row, index in enumerate(indices):
            rewards[index] = batch_rewards[row].cpu()
        if with_embeddings:
            grouped = batch_embeddings.reshape(n_responses, len(indices), -1).transpose(0, 1)
            for row, index in enumerate(indices):
                embeddings[index] = grouped[row].cpu()
    model.train(was_training)
    stacked = torch.stack(rewards).numpy()
    if stacked.shape[-1] == 1:
        stacked = stacked[..., 0]
    labels = None
    if data.examples[0].label is not None:
        labels = np.array([e.label for e in data.examples], dtype=np.float64)
    return Predictions(
        rewards=stacked,
        embeddings=torch.stack(embeddings).numpy() if with_embeddings else None,
        labels=labels,
    )


def score_predictions(rewards: np.ndarray, score_loss: str) -> np.ndarray:
    """The predicted score of a score-task head: the raw output (mse), its probability (bce),
    or the expected class index under the softmax (cross_entropy)."""
    if score_loss == "mse":
        return rewards
    if score_loss == "bce":
        return 1.0 / (1.0 + np.exp(-rewards))
    logits = rewards - rewards.max(axis=-1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return probabilities @ np.arange(rewards.shape[-1], dtype=np.float64)


def metrics_from_predictions(
    task: str, predictions: Predictions, score_loss: str = "mse"
) -> dict[str, float]:
    """Metrics against the gold labels (DESIGN §1) for `task`."""
    rewards = predictions.rewards
    if task == "preference":
        return compute_metrics(task, {"chosen": rewards[:, 0], "rejected": rewards[:, 1]})
    if task == "mcq":
        return compute_metrics(task, {"rewards": rewards})
    if predictions.labels is None:
        raise ValueError("score metrics need labels")
    scores = score_predictions(rewards[:, 0], score_loss)
    return compute_metrics(task, {"predictions": scores, "labels": predictions.labels})


def evaluate(
    model: RewardModel,
    data: EncodedData,
    fmt: SequenceFormat,
    task: str,
    *,
    batch_size: int = 32,
    padding_side: str = "right",
    device: torch.device | str = "cpu",
    score_loss: str = "mse",
) -> dict[str, float]:
    """Metrics of `model` on `data`."""
    predictions = predict(
        model, data, fmt, batch_size=batch_size, padding_side=padding_side, device=device
    )
    return metrics_from_predictions(task, predictions, score_loss)


def find_model_folder(path: str | Path) -> Path:
    """A reward-model folder from itself, a checkpoint folder (``model/``) or a run (``final/``)."""
    folder = Path(path)
    for candidate in (folder, folder / "model", folder / "final"):
        if (candidate / "dial_config.json").is_file():
            return candidate
    raise DialError(
        f"{folder} holds no reward model: expected dial_config.json in it, in model/ "
        "(a checkpoint) or in final/ (a run folder)"
    )


def load_eval_data(
    files: list[str],
    tokenizer,
    fmt: SequenceFormat,
    *,
    task: str,
    dataset_config: str | None,
    max_length: int,
    file_type: str | None = None,
) -> dict[str, EncodedData]:
    """Encoded evaluation sets by name (the file name without its suffixes)."""
    columns = load_column_config(dataset_config, task)
    sets = {}
    for path in files:
        examples, _ = load_examples(path, task, columns, file_type=file_type)
        sets[eval_set_name(path)] = encode_examples(examples, tokenizer, fmt, max_length)
    return sets

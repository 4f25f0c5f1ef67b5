"""Pooling: one embedding per sequence from the backbone's final hidden states."""

from __future__ import annotations

import torch

POOLINGS = ("last", "cls", "mean")


def resolve_pooling(pooling: str, architecture: str) -> str:
    """'auto' means last-token pooling for decoders and masked-mean pooling for encoders."""
    if pooling == "auto":
        return "last" if architecture == "decoder" else "mean"
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}'; choose auto or one of {POOLINGS}")
    return pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool hidden states [N, L, H] into embeddings [N, H].

    - last: the hidden state of the last non-pad token; works for left and right padding
      alike (the last position whose mask is 1).
    - cls: the first non-pad token (CLS for encoders).
    - mean: the mean over non-pad tokens.
    """
    mask = attention_mask.to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    positions = torch.arange(mask.shape[1], device=hidden.device)
    if pooling == "last":
        last = (mask * positions).argmax(dim=1)
        return hidden[rows, last]
    if pooling == "cls":
        first = (mask * (mask.shape[1] - positions)).argmax(dim=1)
        return hidden[rows, first]
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling '{pooling}'; choose one of {POOLINGS}")

"""How far apart the source and target embeddings are: a domain classifier's held-out accuracy.

A balanced accuracy near 0.5 means a linear classifier cannot tell the domains apart; near 1.0
that the domains are separable. It tells a gain from alignment apart from a gain from slower
forgetting: only the first lowers it.
"""

from __future__ import annotations

import numpy as np
import torch


def domain_classifier_accuracy(
    source: np.ndarray, target: np.ndarray, *, seed: int = 0, steps: int = 300
) -> float:
    """Balanced held-out accuracy of a logistic-regression domain classifier.

    Each domain is split in halves at random (seeded); the classifier is fitted on the first
    halves (features standardised with their statistics, L2 penalty 1e-3, Adam) and scored on
    the second: ``0.5 · (P[source predicted source] + P[target predicted target])``.
    """
    generator = torch.Generator().manual_seed(seed)
    s = torch.as_tensor(np.asarray(source), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(target), dtype=torch.float32)
    if s.shape[0] < 4 or t.shape[0] < 4:
        raise ValueError("a domain classifier needs at least 4 embeddings of each domain")
    s = s[torch.randperm(s.shape[0], generator=generator)]
    t = t[torch.randperm(t.shape[0], generator=generator)]
    s_fit, s_test = s[: s.shape[0] // 2], s[s.shape[0] // 2 :]
    t_fit, t_test = t[: t.shape[0] // 2], t[t.shape[0] // 2 :]
    features = torch.cat([s_fit, t_fit])
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    x = (features - mean) / std
    y = torch.cat([torch.ones(len(s_fit)), torch.zeros(len(t_fit))])
    weights = torch.cat(
        [torch.full((len(s_fit),), 0.5 / len(s_fit)), torch.full((len(t_fit),), 0.5 / len(t_fit))]
    )
    linear = torch.nn.Linear(x.shape[1], 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            logits = linear(x).squeeze(-1)
            loss = (
                weights
                * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            ).sum() + 1e-3 * linear.weight.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        source_right = (linear((s_test - mean) / std).squeeze(-1) > 0).float().mean()
        target_right = (linear((t_test - mean) / std).squeeze(-1) <= 0).float().mean()
    return float(0.5 * (source_right + target_right))

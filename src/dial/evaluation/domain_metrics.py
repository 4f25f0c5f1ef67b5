"""How far apart the source and target embeddings are: a domain classifier's held-out accuracy.

A balanced accuracy near 0.5 means a linear classifier cannot tell the domains apart; near 1.0
that the domains are separable. It tells a gain from alignment apart from a gain from slower
forgetting: only the first lowers it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DomainClassifier:
    """A linear logistic domain classifier on standardised features."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of "target" for each row: ``((x − mean) / std) · weights + bias``."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        return x @ self.weights + self.bias


def fit_domain_classifier(
    source: np.ndarray,
    target: np.ndarray,
    *,
    l2: float,
    balanced: bool,
    steps: int = 300,
) -> DomainClassifier:
    """Logistic regression of "target" (1) against "source" (0), in float64.

    Features are standardised with the statistics of all given rows; from zero weights, Adam
    (lr 0.05, full batch, ``steps`` steps) minimises the weighted cross-entropy plus
    ``l2 · ‖w‖²``. ``balanced``: each domain carries half of the loss whatever its size (for
    the balanced accuracy); otherwise every row weighs the same, so the log-odds carry the
    prior ``log(n_t / n_s)`` (which a density ratio then removes).
    """
    s = torch.as_tensor(np.asarray(source), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(target), dtype=torch.float64)
    features = torch.cat([s, t])
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    x = (features - mean) / std
    y = torch.cat([torch.zeros(len(s)), torch.ones(len(t))]).double()
    if balanced:
        row_weights = torch.cat(
            [torch.full((len(s),), 0.5 / len(s)), torch.full((len(t),), 0.5 / len(t))]
        )
    else:
        row_weights = torch.full((len(features),), 1.0 / len(features))
    linear = torch.nn.Linear(x.shape[1], 1).double()
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            logits = linear(x).squeeze(-1)
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y, reduction="none"
            )
            loss = (row_weights * losses).sum() + l2 * linear.weight.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return DomainClassifier(
        weights=linear.weight.detach().numpy()[0],
        bias=float(linear.bias.detach()),
        mean=mean.numpy(),
        std=std.numpy(),
    )


def domain_classifier_accuracy(
    source: np.ndarray, target: np.ndarray, *, seed: int = 0, steps: int = 300
) -> float:
    """Balanced held-out accuracy of a logistic-regression domain classifier.

    Each domain is split in halves at random (seeded); a balanced classifier
    (:func:`fit_domain_classifier`, L2 penalty 1e-3) is fitted on the first halves and scored on
    the second: ``0.5 · (P[source predicted source] + P[target predicted target])``, a log-odds
    of exactly 0 counting as "source".
    """
    source, target = np.asarray(source), np.asarray(target)
    if source.shape[0] < 4 or target.shape[0] < 4:
        raise ValueError("a domain classifier needs at least 4 embeddings of each domain")
    generator = torch.Generator().manual_seed(seed)
    s = source[torch.randperm(source.shape[0], generator=generator).numpy()]
    t = target[torch.randperm(target.shape[0], generator=generator).numpy()]
    s_fit, s_test = s[: len(s) // 2], s[len(s) // 2 :]
    t_fit, t_test = t[: len(t) // 2], t[len(t) // 2 :]
    classifier = fit_domain_classifier(s_fit, t_fit, l2=1e-3, balanced=True, steps=steps)
    source_right = float((classifier.logits(s_test) <= 0).mean())
    target_right = float((classifier.logits(t_test) > 0).mean())
    return 0.5 * (source_right + target_right)

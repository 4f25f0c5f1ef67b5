r"""Model selection without target labels: plain functions over arrays.

Three criteria rank a run's checkpoints (lower is better for each):

- ``source_loss``: the task loss on held-out source pairs;
- ``critic_w``: the critic's Wasserstein estimate ``Ŵ = mean f(S) − mean f(T)`` between source
  and target embeddings (runs with a critic only);
- ``dev``: deep embedded validation (You et al., ICML 2019), an estimate of the target risk
  from the source validation losses weighted by the density ratio ``w(x) = p_t(x) / p_s(x)``.

DEV. A domain classifier on the embeddings gives ``P(target | x)``; by Bayes' rule, with
``n_s`` source and ``n_t`` target examples in its training set,

.. math::

    w(x) = \frac{n_s}{n_t} \cdot \frac{P(\text{target} \mid x)}{P(\text{source} \mid x)}
         = \frac{n_s}{n_t} \, e^{z(x)}

for the classifier's log-odds ``z``. With the source validation losses ``ℓ_i`` and weights
``w_i`` (i = 1..n), ``L_i = w_i ℓ_i`` has mean ``E_t[ℓ]`` but a large variance; DEV subtracts
the control variate ``w`` (whose mean is 1):

.. math::

    η = -\frac{\widehat{\mathrm{Cov}}(L, w)}{\widehat{\mathrm{Var}}(w)}, \qquad
    \mathrm{DEV} = \bar L + η \, \bar w - η

(sample covariance and variance with n − 1). When the classifier separates the domains the
weights collapse toward 0 and DEV says little; the effective sample size
``(Σ w)² / Σ w²`` tells how many source examples the estimate really rests on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dial.evaluation.domain_metrics import fit_domain_classifier

CRITERIA = ("source_loss", "critic_w", "dev")


def example_losses(
    task: str,
    rewards: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    score_loss: str = "mse",
    margin: float = 0.0,
) -> np.ndarray:
    """Per-example task loss, as training computes it (the mean of these is the batch loss).

    preference ``[N, 2]``: ``−log σ(r⁺ − r⁻ − m)``; mcq ``[N, C]`` (column 0 correct):
    ``mean_i −log σ(r_c − r_wi)``; score: squared error (mse), binary cross-entropy on the logit
    (bce) or cross-entropy over the classes (cross_entropy, rewards ``[N, 1, K]``).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if task == "preference":
        return np.logaddexp(0.0, -(rewards[:, 0] - rewards[:, 1] - margin))
    if task == "mcq":
        return np.logaddexp(0.0, -(rewards[:, :1] - rewards[:, 1:])).mean(axis=1)
    if labels is None:
        raise ValueError("score losses need labels")
    y = np.asarray(labels, dtype=np.float64)
    output = rewards[:, 0]
    if score_loss == "mse":
        return (output - y) ** 2
    if score_loss == "bce":
        return np.logaddexp(0.0, output) - y * output
    logits = output - output.max(axis=-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -log_probabilities[np.arange(len(y)), y.astype(int)]


def density_ratio_from_logits(logits: np.ndarray, n_source: int, n_target: int) -> np.ndarray:
    """``w = (n_s / n_t) · P(target|x) / P(source|x) = (n_s / n_t) · e^z`` for the domain
    classifier's log-odds ``z`` of "target"."""
    if n_source < 1 or n_target < 1:
        raise ValueError("the domain classifier needs examples of both domains")
    return (n_source / n_target) * np.exp(np.asarray(logits, dtype=np.float64))


def density_ratio(
    source_fit: np.ndarray,
    target_fit: np.ndarray,
    source_validation: np.ndarray,
    *,
    l2: float = 1e-2,
) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x)`` at the source validation features, from a logistic domain
    classifier fitted on ``source_fit`` against ``target_fit``, every row weighing the same (see
    the module doc; ``l2`` keeps the weights finite when the domains are separable)."""
    classifier = fit_domain_classifier(source_fit, target_fit, l2=l2, balanced=False)
    logits = classifier.logits(source_validation)
    return density_ratio_from_logits(logits, len(source_fit), len(target_fit))


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep embedded validation's target-risk estimate ``L̄ + η·w̄ − η`` (see the module doc).

    With constant weights (no variance) the control variate is undefined and the estimate is
    the plain weighted mean ``L̄``.
    """
    losses = np.asarray(losses, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if losses.shape != weights.shape or losses.ndim != 1 or len(losses) < 2:
        raise ValueError("DEV needs at least two losses and as many weights")
    weighted = weights * losses
    variance = np.var(weights, ddof=1)
    if variance == 0:
        return float(weighted.mean())
    eta = -np.cov(weighted, weights, ddof=1)[0, 1] / variance
    return float(weighted.mean() + eta * weights.mean() - eta)


def effective_sample_size(weights: np.ndarray) -> float:
    """``(Σ w)² / Σ w²``: n for equal weights, near 1 when one weight dominates."""
    weights = np.asarray(weights, dtype=np.float64)
    total = float((weights**2).sum())
    return float(weights.sum() ** 2 / total) if total > 0 else 0.0


def select_checkpoint(scores: Mapping[int, float | None]) -> int | None:
    """The step whose score is lowest (the earliest step on ties); None when no step has a
    finite score."""
    finite = {
        step: score for step, score in scores.items() if score is not None and np.isfinite(score)
    }
    if not finite:
        return None
    return min(sorted(finite), key=lambda step: finite[step])

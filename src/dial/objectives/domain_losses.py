r"""Domain losses: pull the source and target embeddings together.

Every loss takes the source embeddings ``S`` (``[Ns, H]``) and the target embeddings ``T``
(``[Nt, H]``) and returns a :class:`DomainLossOutput`: the scalar the encoder minimises (the
trainer multiplies it by :math:`\lambda` and adds it to the task loss) and its logged statistics.

- :class:`WDGRLLoss`: the paper's Wasserstein critic with a gradient penalty (adversarial: the
  critic has its own optimizer and is trained by :meth:`DomainLoss.critic_step`).
- :class:`DANNLoss`: a domain classifier behind a gradient reversal layer, trained jointly with
  the encoder by the main optimizer.
- :class:`MMDLoss`: multi-kernel Gaussian maximum mean discrepancy.
- :class:`CORALLoss`: distance between the two covariance matrices.

``build_domain_loss`` picks one by name; ``lambda_at`` gives :math:`\lambda` at a training step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}
LAMBDA_SCHEDULES: tuple[str, ...] = ("constant", "linear", "dann")


@dataclass
class DomainLossOutput:
    """What a domain loss returns.

    Attributes:
        loss: the scalar the encoder minimises; the trainer multiplies it by :math:`\\lambda`.
        stats: logged statistics as python floats, e.g. ``{"wasserstein": ..., ...}``.
    """

    loss: Tensor
    stats: dict[str, float]


class DomainLoss(nn.Module):
    """Base class: ``forward(source [Ns, H], target [Nt, H]) -> DomainLossOutput``.

    ``adversarial`` is True for losses that own a critic trained by its own optimizer through
    :meth:`critic_step`; the trainer builds that optimizer over :meth:`critic_parameters`, keeps
    those parameters out of the encoder's optimizer, and calls :meth:`critic_step` before each
    encoder step. Any other parameters of a domain loss (DANN's classifier) belong in the main
    optimizer.
    """

    adversarial: bool = False

    def forward(self, source: Tensor, target: Tensor) -> DomainLossOutput:
        """Return the loss the encoder minimises and its statistics."""
        raise NotImplementedError

    def critic_parameters(self) -> list[nn.Parameter]:
        """The parameters trained by :meth:`critic_step`; empty for non-adversarial losses."""
        return []

    def critic_step(
        self, source: Tensor, target: Tensor, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """Update the critic on detached embeddings (no gradient reaches the encoder).

        Only adversarial losses have a critic; the others raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no critic to train")


class Critic(nn.Module):
    """MLP ``in_features -> widths... -> 1`` scoring each embedding with one number.

    Each hidden layer is ``Linear``, the activation, then ``Dropout`` when ``dropout > 0``.
    ``widths=()`` gives a linear critic, a single ``Linear(in_features, 1)``.

    Args:
        in_features: the embedding size ``H``.
        widths: the hidden layer widths.
        activation: one of ``"gelu"``, ``"relu"``, ``"leaky_relu"``, ``"tanh"``.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int] = (256, 128),
        activation: str = "gelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if in_features < 1 or any(width < 1 for width in widths):
            raise ValueError(
                f"in_features and widths must be positive, got {in_features} and {tuple(widths)}"
            )
        layers: list[nn.Module] = []
        size = in_features
        for width in widths:
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return one score per row: ``[N, H] -> [N]``."""
        return self.net(x).squeeze(-1)


def _check_embeddings(source: Tensor, target: Tensor, min_rows: int = 1) -> None:
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            "source and target must have shapes [Ns, H] and [Nt, H], got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[0] < min_rows or target.shape[0] < min_rows:
        raise ValueError(
            f"source and target need at least {min_rows} rows each, got "
            f"{source.shape[0]} and {target.shape[0]}"
        )


def _balanced_accuracy(source_scores: Tensor, target_scores: Tensor, threshold: Tensor) -> float:
    """Accuracy of "source when the score is above ``threshold``", averaged over the domains.

    ``0.5 * (P_S[score > t] + P_T[score < t])``, so chance is 0.5 whatever ``Ns / Nt``; a score
    exactly at the threshold counts as half right.
    """

    def hits(above: Tensor, at: Tensor) -> float:
        return (above.float() + 0.5 * at.float()).mean().item()

    source_hits = hits(source_scores > threshold, source_scores == threshold)
    target_hits = hits(target_scores < threshold, target_scores == threshold)
    return 0.5 * (source_hits + target_hits)


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """``x`` itself when it has ``n`` rows, else ``n`` of its rows drawn without replacement."""
    if x.shape[0] == n:
        return x
    return x[torch.randperm(x.shape[0], device=x.device)[:n]]


class WDGRLLoss(DomainLoss):
    r"""Wasserstein distance guided representation learning (Shen et al. 2018), as in DIAL.

    A critic :math:`f` (:class:`Critic`) estimates the Wasserstein-1 distance

    .. math::

        \hat W = \frac{1}{N_s} \sum_{s \in S} f(s) - \frac{1}{N_t} \sum_{t \in T} f(t).

    Critic step (:meth:`critic_step`, ``critic_iter`` times per batch, on detached embeddings):
    maximise :math:`\hat W - \gamma \, GP`, i.e. minimise :math:`-(\hat W - \gamma \, GP)`, with
    the gradient penalty

    .. math::

        GP = \frac{1}{n} \sum_{i=1}^{n} \left(\lVert \nabla f(\hat h_i) \rVert_2 - 1\right)^2,
        \qquad \hat h_i = a_i s_i + (1 - a_i) t_i, \quad a_i \sim U(0, 1),

    one :math:`a_i` and one norm per row. Equal batches are paired row by row; when
    :math:`N_s \ne N_t`, :math:`n = \min(N_s, N_t)` rows of each side are drawn without
    replacement (``torch.randperm``) and paired.

    Encoder step (:meth:`forward`): the loss is :math:`\hat W` computed with the critic frozen
    (its parameters enter detached, so no gradient reaches them); the encoder minimises
    :math:`\lambda \hat W`. Its statistics are ``wasserstein`` and ``domain_accuracy``, the
    balanced accuracy of the critic as a domain classifier thresholded at the midpoint
    :math:`(\bar f(S) + \bar f(T)) / 2`, source on the side of the larger mean.

    Args:
        in_features: the embedding size ``H``.
        widths, activation, dropout: the critic's architecture (see :class:`Critic`).
        gamma: the gradient penalty weight :math:`\gamma`.
        critic_iter: critic updates per :meth:`critic_step` call.
    """

    adversarial = True

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int] = (256, 128),
        activation: str = "gelu",
        dropout: float = 0.0,
        gamma: float = 1.0,
        critic_iter: int = 3,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if critic_iter < 1:
            raise ValueError(f"critic_iter must be >= 1, got {critic_iter}")
        self.critic = Critic(in_features, widths, activation, dropout)
        self.gamma = gamma
        self.critic_iter = critic_iter

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def wasserstein(self, source: Tensor, target: Tensor) -> Tensor:
        """:math:`\\hat W` through the trainable critic (gradient reaches its parameters)."""
        _check_embeddings(source, target)
        return self.critic(source).mean() - self.critic(target).mean()

    def gradient_penalty(self, source: Tensor, target: Tensor) -> Tensor:
        """``GP`` at random interpolates; the embeddings are detached, the critic is not."""
        _check_embeddings(source, target)
        n = min(source.shape[0], target.shape[0])
        source, target = _sample_rows(source.detach(), n), _sample_rows(target.detach(), n)
        a = torch.rand(n, 1, device=source.device, dtype=source.dtype)
        interpolates = (a * source + (1 - a) * target).requires_grad_(True)
        (grads,) = torch.autograd.grad(
            self.critic(interpolates).sum(), interpolates, create_graph=True
        )
        return ((grads.norm(2, dim=1) - 1) ** 2).mean()

    def critic_step(
        self, source: Tensor, target: Tensor, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """Run ``critic_iter`` updates of the critic; return the last one's statistics.

        Each update zeroes the gradients, backpropagates ``-(Ŵ - γ·GP)`` on the detached
        embeddings, and steps ``optimizer`` (which should hold :meth:`critic_parameters`).
        Statistics: ``critic_loss``, ``gradient_penalty`` and ``wasserstein`` (``Ŵ`` before
        this update, without the penalty).
        """
        source, target = source.detach(), target.detach()
        for _ in range(self.critic_iter):
            wasserstein = self.wasserstein(source, target)
            penalty = self.gradient_penalty(source, target)
            critic_loss = -(wasserstein - self.gamma * penalty)
            optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            optimizer.step()
        return {
            "critic_loss": critic_loss.item(),
            "gradient_penalty": penalty.item(),
            "wasserstein": wasserstein.item(),
        }

    def forward(self, source: Tensor, target: Tensor) -> DomainLossOutput:
        _check_embeddings(source, target)
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        source_scores = functional_call(self.critic, frozen, (source,))
        target_scores = functional_call(self.critic, frozen, (target,))
        source_mean, target_mean = source_scores.mean(), target_scores.mean()
        wasserstein = source_mean - target_mean
        sign = 1.0 if wasserstein.item() >= 0 else -1.0
        accuracy = _balanced_accuracy(
            sign * source_scores.detach(),
            sign * target_scores.detach(),
            sign * (source_mean + target_mean).detach() / 2,
        )
        return DomainLossOutput(
            loss=wasserstein,
            stats={"wasserstein": wasserstein.item(), "domain_accuracy": accuracy},
        )


class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``-alpha``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.alpha * grad, None


def gradient_reversal(x: Tensor, alpha: float = 1.0) -> Tensor:
    r"""Gradient reversal (Ganin & Lempitsky 2015): the identity forward, and backward
    :math:`\partial L / \partial x = -\alpha \, \partial L / \partial y`."""
    return _GradientReversalFunction.apply(x, alpha)


class GradientReversal(nn.Module):
    """Module wrapper of :func:`gradient_reversal` with the coefficient ``alpha``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return gradient_reversal(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class DANNLoss(DomainLoss):
    r"""Domain-adversarial training (Ganin et al. 2016): a domain classifier behind a GRL.

    A classifier :math:`g` (:class:`Critic`, one logit, source = 1, target = 0) reads the
    embeddings through a gradient reversal layer :math:`R_\alpha`. The loss is the binary
    cross-entropy balanced over the two domains, whatever :math:`N_s / N_t`:

    .. math::

        L = \frac{1}{2} \left[ \frac{1}{N_s} \sum_{s \in S} -\log \sigma(g(R_\alpha(s)))
            + \frac{1}{N_t} \sum_{t \in T} -\log\left(1 - \sigma(g(R_\alpha(t)))\right) \right].

    Minimising :math:`\lambda L` with one optimizer trains the classifier to separate the
    domains, while the reversed gradient, :math:`-\alpha \lambda \, \partial L / \partial h`,
    trains the encoder to confuse it. So the loss is not adversarial in the sense of
    :class:`DomainLoss`: :meth:`critic_parameters` is empty, and the classifier's parameters are
    ordinary module parameters that the trainer adds to the main optimizer.
    Statistics: ``domain_loss`` (:math:`L`) and ``domain_accuracy`` (balanced accuracy of
    :math:`g > 0` meaning source).

    Args:
        in_features: the embedding size ``H``.
        widths, activation, dropout: the classifier's architecture (see :class:`Critic`).
        alpha: the gradient reversal coefficient :math:`\alpha`.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int] = (256, 128),
        activation: str = "gelu",
        dropout: float = 0.0,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.reversal = GradientReversal(alpha)
        self.classifier = Critic(in_features, widths, activation, dropout)

    def forward(self, source: Tensor, target: Tensor) -> DomainLossOutput:
        _check_embeddings(source, target)
        source_logits = self.classifier(self.reversal(source))
        target_logits = self.classifier(self.reversal(target))
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
            + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits))
        )
        accuracy = _balanced_accuracy(
            source_logits.detach(), target_logits.detach(), source_logits.new_zeros(())
        )
        return DomainLossOutput(
            loss=loss, stats={"domain_loss": loss.item(), "domain_accuracy": accuracy}
        )


class MMDLoss(DomainLoss):
    r"""Multi-kernel Gaussian maximum mean discrepancy (Gretton et al. 2012; DAN, Long et al. 2015).

    The kernel averages ``kernel_num`` Gaussians whose squared bandwidths are spread around a
    base :math:`\beta` by powers of ``kernel_mul`` :math:`m`:

    .. math::

        k(x, y) = \frac{1}{K} \sum_{j=0}^{K-1} \exp\left(-\frac{\lVert x - y \rVert^2}
            {\beta \, m^{\,j - \lfloor K/2 \rfloor}}\right).

    :math:`\beta` is ``bandwidth`` when given, else (as in DAN) the mean squared distance over
    the distinct pairs of the pooled sample :math:`Z = S \cup T`, detached. The estimator is the
    biased V-statistic, which is never negative and is exactly 0 when :math:`S = T`:

    .. math::

        \widehat{MMD}^2 = \frac{1}{N_s^2} \sum_{s, s'} k(s, s') + \frac{1}{N_t^2} \sum_{t, t'}
            k(t, t') - \frac{2}{N_s N_t} \sum_{s, t} k(s, t).

    Statistics: ``mmd`` (:math:`\widehat{MMD}^2`).

    Args:
        kernel_num: the number of Gaussian kernels :math:`K`.
        kernel_mul: the ratio :math:`m` between consecutive squared bandwidths.
        bandwidth: a fixed base squared bandwidth :math:`\beta`; None to take it from the data.
    """

    def __init__(
        self, kernel_num: int = 5, kernel_mul: float = 2.0, bandwidth: float | None = None
    ) -> None:
        super().__init__()
        if kernel_num < 1:
            raise ValueError(f"kernel_num must be >= 1, got {kernel_num}")
        if kernel_mul <= 0:
            raise ValueError(f"kernel_mul must be > 0, got {kernel_mul}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        self.kernel_num = kernel_num
        self.kernel_mul = kernel_mul
        self.bandwidth = bandwidth

    def forward(self, source: Tensor, target: Tensor) -> DomainLossOutput:
        _check_embeddings(source, target)
        n_source = source.shape[0]
        pooled = torch.cat([source, target])
        sq_dists = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        if self.bandwidth is None:
            n = pooled.shape[0]
            base = sq_dists.detach().sum() / (n * (n - 1))
            # Identical points: every distance is 0 and so is the mean; any base gives k = 1.
            base = torch.where(base > 0, base, torch.ones_like(base))
        else:
            base = torch.tensor(self.bandwidth, dtype=pooled.dtype, device=pooled.device)
        kernel = torch.stack(
            [
                torch.exp(-sq_dists / (base * self.kernel_mul ** (j - self.kernel_num // 2)))
                for j in range(self.kernel_num)
            ]
        ).mean(0)
        mmd = (
            kernel[:n_source, :n_source].mean()
            + kernel[n_source:, n_source:].mean()
            - 2 * kernel[:n_source, n_source:].mean()
        )
        return DomainLossOutput(loss=mmd, stats={"mmd": mmd.item()})


class CORALLoss(DomainLoss):
    r"""Deep CORAL (Sun & Saenko 2016): the distance between the domains' covariances.

    .. math::

        L = \frac{1}{4 d^2} \lVert C_S - C_T \rVert_F^2, \qquad
        C_X = \frac{1}{N - 1} (X - \bar X)^\top (X - \bar X),

    with :math:`d = H` and unbiased covariances (at least 2 rows per domain). A shift of the
    mean alone costs nothing. Statistics: ``coral`` (:math:`L`).
    """

    def forward(self, source: Tensor, target: Tensor) -> DomainLossOutput:
        _check_embeddings(source, target, min_rows=2)
        d = source.shape[1]
        difference = torch.cov(source.T) - torch.cov(target.T)
        loss = (difference**2).sum() / (4 * d * d)
        return DomainLossOutput(loss=loss, stats={"coral": loss.item()})


DOMAIN_LOSSES: dict[str, type[DomainLoss]] = {
    "wdgrl": WDGRLLoss,
    "dann": DANNLoss,
    "mmd": MMDLoss,
    "coral": CORALLoss,
}


def build_domain_loss(kind: str, in_features: int, **options: object) -> DomainLoss:
    """Return the domain loss named ``kind`` for embeddings of size ``in_features``.

    Args:
        kind: one of ``"wdgrl"``, ``"dann"``, ``"mmd"``, ``"coral"``.
        in_features: the embedding size ``H`` (used by the losses with a network).
        options: the loss's own keyword arguments, e.g. ``gamma=10.0`` for ``"wdgrl"``.
    """
    if kind not in DOMAIN_LOSSES:
        raise ValueError(f"unknown domain loss {kind!r}; choose one of {', '.join(DOMAIN_LOSSES)}")
    cls = DOMAIN_LOSSES[kind]
    accepted = [name for name in inspect.signature(cls).parameters if name != "in_features"]
    for name in options:
        if name not in accepted:
            raise ValueError(
                f"unknown option {name!r} for domain loss {kind!r}; "
                f"accepted: {', '.join(accepted) or 'none'}"
            )
    if "in_features" in inspect.signature(cls).parameters:
        return cls(in_features, **options)
    return cls(**options)


def lambda_at(
    step: int,
    total_steps: int,
    *,
    value: float,
    schedule: str = "constant",
    ramp_steps: int | None = None,
) -> float:
    r"""The domain loss weight :math:`\lambda` at ``step`` (counted from 0) of ``total_steps``.

    - ``"constant"``: :math:`\lambda = v`.
    - ``"linear"``: :math:`\lambda = v \min(1, \text{step} / \text{ramp\_steps})`, with
      ``ramp_steps`` defaulting to ``total_steps``.
    - ``"dann"`` (Ganin et al. 2016): :math:`\lambda = v \left(\frac{2}{1 + e^{-10 p}} - 1
      \right)` with progress :math:`p = \min(1, \text{step} / \text{total\_steps})`.

    Args:
        step: the current step, ``>= 0``.
        total_steps: the number of training steps, ``>= 1``.
        value: the final weight :math:`v`.
        schedule: ``"constant"``, ``"linear"`` or ``"dann"``.
        ramp_steps: the length of the linear ramp, ``>= 1``.
    """
    if schedule not in LAMBDA_SCHEDULES:
        raise ValueError(
            f"unknown lambda schedule {schedule!r}; choose one of {', '.join(LAMBDA_SCHEDULES)}"
        )
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got {step} and {total_steps}")
    if schedule == "constant":
        return value
    if schedule == "linear":
        ramp = total_steps if ramp_steps is None else ramp_steps
        if ramp < 1:
            raise ValueError(f"ramp_steps must be >= 1, got {ramp}")
        return value * min(1.0, step / ramp)
    progress = min(1.0, step / total_steps)
    return value * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)

"""Domain losses against hand computations, and a small DIAL run on shifted point clouds."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dial.objectives.domain_losses import (
    CORALLoss,
    Critic,
    DANNLoss,
    DomainLoss,
    GradientReversal,
    MMDLoss,
    WDGRLLoss,
    build_domain_loss,
    gradient_reversal,
    lambda_at,
)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny tensors run faster on one thread, and the CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _linear_critic(weight: list[float], bias: float) -> Critic:
    """A critic ``f(h) = w·h + b`` (``widths=()``) with the given weight and bias."""
    critic = Critic(len(weight), widths=())
    with torch.no_grad():
        critic.net[0].weight.copy_(torch.tensor([weight]))
        critic.net[0].bias.fill_(bias)
    return critic


def _wdgrl_with_linear_critic(weight: list[float], bias: float, **options: float) -> WDGRLLoss:
    loss = WDGRLLoss(len(weight), widths=(), **options)
    loss.critic = _linear_critic(weight, bias)
    return loss


class _HalfSquaredNorm(nn.Module):
    """``f(h) = ‖h‖² / 2``, whose gradient at ``h`` is ``h`` itself."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (x**2).sum(-1)


class _RecordingSum(nn.Module):
    """``f(h) = sum(h)``; remembers the rows it was called on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return x.sum(-1)


# Critic


def test_critic_layers_and_output_shape() -> None:
    critic = Critic(3, widths=(5, 4), activation="relu", dropout=0.1)
    kinds = [type(layer) for layer in critic.net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [critic.net[i].out_features for i in (0, 3, 6)] == [5, 4, 1]
    assert critic(torch.randn(7, 3)).shape == (7,)


def test_critic_without_widths_is_linear_and_without_dropout_has_no_dropout_layer() -> None:
    assert [type(layer) for layer in Critic(3, widths=()).net] == [nn.Linear]
    assert [type(layer) for layer in Critic(3, widths=(2,), activation="tanh").net] == [
        nn.Linear,
        nn.Tanh,
        nn.Linear,
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"activation": "swish"}, "swish"),
        ({"dropout": 1.0}, "dropout"),
        ({"widths": (0,)}, "positive"),
    ],
)
def test_critic_rejects_bad_arguments(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Critic(3, **options)


# WDGRL: the estimate, the gradient penalty, the critic step and the encoder step


def test_wasserstein_of_a_linear_critic_by_hand() -> None:
    loss = _wdgrl_with_linear_critic([1.0, -2.0], bias=0.5)
    source = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1)
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])  # mean (0, 1)
    # Ŵ = w·(mean S - mean T) = [1, -2]·[2, 0] = 2; the bias cancels.
    assert loss.wasserstein(source, target).item() == pytest.approx(2.0)
    assert loss(source, target).loss.item() == pytest.approx(2.0)
    assert loss(source, target).stats["wasserstein"] == pytest.approx(2.0)


def test_wasserstein_sign_follows_a_shift_along_the_critic_weight() -> None:
    loss = _wdgrl_with_linear_critic([3.0, 4.0], bias=-1.0)
    target = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    source = target + 0.5 * torch.tensor([3.0, 4.0])
    # Ŵ = w·(0.5 w) = 0.5 ‖w‖² = 12.5; swapping the domains flips the sign.
    assert loss(source, target).loss.item() == pytest.approx(12.5, rel=1e-5)
    assert loss(target, source).loss.item() == pytest.approx(-12.5, rel=1e-5)


def test_wdgrl_domain_accuracy_by_hand() -> None:
    loss = _wdgrl_with_linear_critic([1.0, 0.0], bias=0.0)  # f(h) = h_0
    source = torch.tensor([[4.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])  # f = 4, 2, -1; mean 5/3
    target = torch.tensor([[0.0, 9.0], [1.0, 9.0], [-2.0, 9.0], [-3.0, 0.0]])  # f mean -1
    # Threshold (5/3 - 1) / 2 = 1/3: source hits 2/3 (4, 2), target hits 3/4 (0, -2, -3).
    assert loss(source, target).stats["domain_accuracy"] == pytest.approx(0.5 * (2 / 3 + 3 / 4))
    # With the domains swapped the source has the lower mean; the rule flips with it.
    assert loss(target, source).stats["domain_accuracy"] == pytest.approx(0.5 * (2 / 3 + 3 / 4))


def test_wdgrl_domain_accuracy_of_a_constant_critic_is_chance() -> None:
    loss = _wdgrl_with_linear_critic([0.0, 0.0], bias=1.0)
    assert loss(torch.randn(3, 2), torch.randn(5, 2)).stats["domain_accuracy"] == 0.5


@pytest.mark.parametrize(("n_source", "n_target"), [(4, 4), (7, 3), (2, 6)])
def test_gradient_penalty_of_a_linear_critic(n_source: int, n_target: int) -> None:
    loss = _wdgrl_with_linear_critic([3.0, 4.0], bias=0.7)
    penalty = loss.gradient_penalty(torch.randn(n_source, 2), torch.randn(n_target, 2))
    assert penalty.item() == pytest.approx((5.0 - 1.0) ** 2)  # ∇f = w everywhere


def test_gradient_penalty_takes_one_norm_per_row() -> None:
    loss = WDGRLLoss(2)
    loss.critic = _HalfSquaredNorm()  # ∇f(h) = h
    points = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    # With S = T every interpolate is the row itself: mean((5 - 1)², (0.5 - 1)²) = 8.125.
    assert loss.gradient_penalty(points, points.clone()).item() == pytest.approx(8.125)


def test_gradient_penalty_interpolates_distinct_rows_with_one_coefficient_per_row() -> None:
    loss = WDGRLLoss(4)
    loss.critic = _RecordingSum()
    # Source row i is (1, i, 0, 0), target row j is (0, 0, 1, j), so an interpolate
    # a·s_i + (1-a)·t_j = (a, a·i, 1-a, (1-a)·j) gives back a, i and j.
    source = torch.tensor([[1.0, i, 0.0, 0.0] for i in range(7)])
    target = torch.tensor([[0.0, 0.0, 1.0, j] for j in range(3)])
    torch.manual_seed(0)
    loss.gradient_penalty(source, target)
    (interpolates,) = loss.critic.seen
    assert interpolates.shape == (3, 4)  # min(Ns, Nt) rows
    a = interpolates[:, 0]
    assert ((a > 0) & (a < 1)).all() and len(set(a.tolist())) == 3
    assert interpolates[:, 2] == pytest.approx((1 - a).tolist())
    source_rows = (interpolates[:, 1] / a).round().tolist()
    target_rows = (interpolates[:, 3] / (1 - a)).round().tolist()
    assert len(set(source_rows)) == 3 and set(source_rows) <= set(range(7))
    assert sorted(target_rows) == [0, 1, 2]


def test_critic_step_objective_by_hand() -> None:
    loss = _wdgrl_with_linear_critic([3.0, 4.0], bias=0.0, gamma=2.0, critic_iter=2)
    source = torch.tensor([[1.0, 1.0], [3.0, 1.0]])  # mean (2, 1)
    target = torch.tensor([[0.0, 0.0]])
    frozen = torch.optim.SGD(loss.critic_parameters(), lr=0.0)
    stats = loss.critic_step(source, target, frozen)
    # Ŵ = 3·2 + 4·1 = 10, GP = (5 - 1)² = 16, critic loss = -(10 - 2·16) = 22.
    assert stats == pytest.approx(
        {"critic_loss": 22.0, "gradient_penalty": 16.0, "wasserstein": 10.0}
    )


def test_critic_step_trains_the_critic_towards_a_positive_estimate() -> None:
    torch.manual_seed(0)
    source = torch.randn(64, 8) + torch.tensor([2.0] + [0.0] * 7)
    target = torch.randn(64, 8)
    loss = WDGRLLoss(8, widths=(32, 16), critic_iter=1)
    optimizer = torch.optim.Adam(loss.critic_parameters(), lr=1e-2)
    before = loss(source, target).stats["wasserstein"]
    for _ in range(50):
        loss.critic_step(source, target, optimizer)
    after = loss(source, target).stats["wasserstein"]
    assert after > before + 0.5
    assert after > 0
    assert loss(source, target).stats["domain_accuracy"] > 0.75


def test_critic_step_puts_no_gradient_on_the_embeddings() -> None:
    source = torch.randn(6, 4, requires_grad=True)
    target = torch.randn(5, 4, requires_grad=True)
    loss = WDGRLLoss(4, widths=(8,))
    loss.critic_step(source, target, torch.optim.Adam(loss.critic_parameters(), lr=1e-2))
    assert source.grad is None and target.grad is None


def test_encoder_step_reaches_the_embeddings_and_leaves_the_critic_alone() -> None:
    loss = _wdgrl_with_linear_critic([3.0, 4.0], bias=0.0)
    before = {name: p.clone() for name, p in loss.critic.named_parameters()}
    source = torch.randn(2, 2, requires_grad=True)
    target = torch.randn(4, 2, requires_grad=True)
    loss(source, target).loss.backward()
    # ∂Ŵ/∂s_i = w / Ns and ∂Ŵ/∂t_j = -w / Nt.
    assert torch.allclose(source.grad, torch.tensor([[1.5, 2.0]]).expand(2, 2))
    assert torch.allclose(target.grad, torch.tensor([[-0.75, -1.0]]).expand(4, 2))
    for name, p in loss.critic.named_parameters():
        assert p.grad is None
        assert torch.equal(p, before[name])


def test_wdgrl_is_adversarial_and_exposes_its_critic() -> None:
    loss = WDGRLLoss(4, widths=(8,))
    assert loss.adversarial
    assert {id(p) for p in loss.critic_parameters()} == {id(p) for p in loss.critic.parameters()}


# DANN and gradient reversal


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    y = GradientReversal(alpha=0.5)(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3, 2), -0.5))


def test_gradient_reversal_function_matches_the_module() -> None:
    x = torch.randn(4, requires_grad=True)
    (gradient_reversal(x, 2.0) * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, -2.0 * torch.arange(4.0))


def _dann_with_linear_classifier(weight: list[float], bias: float, alpha: float = 1.0) -> DANNLoss:
    loss = DANNLoss(len(weight), widths=(), alpha=alpha)
    loss.classifier = _linear_critic(weight, bias)
    return loss


def test_dann_loss_and_accuracy_by_hand() -> None:
    loss = _dann_with_linear_classifier([1.0, 0.0], bias=0.0)  # logit = h_0
    source = torch.tensor([[2.0, 5.0], [-1.0, 5.0]])
    target = torch.tensor([[-3.0, 0.0], [0.0, 0.0], [1.0, 0.0]])

    def softplus(z: float) -> float:
        return math.log1p(math.exp(z))

    # -log σ(z) = softplus(-z), -log(1 - σ(z)) = softplus(z).
    source_term = (softplus(-2.0) + softplus(1.0)) / 2
    target_term = (softplus(-3.0) + softplus(0.0) + softplus(1.0)) / 3
    out = loss(source, target)
    assert out.loss.item() == pytest.approx(0.5 * (source_term + target_term), rel=1e-6)
    assert out.stats["domain_loss"] == pytest.approx(out.loss.item())
    # Source hits 1/2; target hits 1 + 0.5 (the logit at exactly 0) + 0 of 3.
    assert out.stats["domain_accuracy"] == pytest.approx(0.5 * (1 / 2 + 1.5 / 3))


def test_dann_reverses_the_gradient_on_the_embeddings_only() -> None:
    torch.manual_seed(0)
    loss = DANNLoss(3, widths=(8,), alpha=1.0)
    source = torch.randn(4, 3, requires_grad=True)
    target = torch.randn(5, 3, requires_grad=True)
    loss(source, target).loss.backward()
    reversed_grads = [source.grad.clone(), target.grad.clone()]
    classifier_grads = [p.grad.clone() for p in loss.classifier.parameters()]

    # The same loss written without the reversal layer.
    source.grad, target.grad = None, None
    loss.classifier.zero_grad()
    source_logits, target_logits = loss.classifier(source), loss.classifier(target)
    plain = 0.5 * (
        F.binary_cross_entropy_with_logits(source_logits, torch.ones(4))
        + F.binary_cross_entropy_with_logits(target_logits, torch.zeros(5))
    )
    plain.backward()
    assert torch.allclose(reversed_grads[0], -source.grad)
    assert torch.allclose(reversed_grads[1], -target.grad)
    for reversed_grad, p in zip(classifier_grads, loss.classifier.parameters(), strict=True):
        assert torch.allclose(reversed_grad, p.grad)  # the classifier itself learns normally


def test_dann_alpha_scales_the_reversed_gradient() -> None:
    embeddings = torch.randn(3, 2)
    grads = []
    for alpha in (1.0, 0.25):
        loss = _dann_with_linear_classifier([1.0, -1.0], bias=0.1, alpha=alpha)
        source = embeddings.clone().requires_grad_(True)
        loss(source, torch.zeros(2, 2)).loss.backward()
        grads.append(source.grad)
    assert torch.allclose(grads[1], 0.25 * grads[0])


def test_dann_trains_through_the_main_optimizer_not_a_critic_step() -> None:
    loss = DANNLoss(4, widths=(8,))
    assert not loss.adversarial
    assert loss.critic_parameters() == []
    assert len(list(loss.parameters())) == 4  # the classifier's, for the main optimizer
    with pytest.raises(NotImplementedError, match="DANNLoss has no critic"):
        loss.critic_step(
            torch.randn(2, 4), torch.randn(2, 4), torch.optim.SGD([nn.Parameter(torch.ones(1))])
        )


# MMD


def test_mmd_of_identical_samples_is_zero() -> None:
    sample = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    out = MMDLoss()(sample, sample.clone())
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert out.stats["mmd"] == pytest.approx(0.0, abs=1e-6)


def test_mmd_grows_with_a_mean_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(64, 4, generator=generator)
    target = torch.randn(64, 4, generator=generator)
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0])
    values = [MMDLoss()(source, target + shift * direction).loss.item() for shift in (0, 0.5, 1, 2)]
    assert values[0] > 0
    assert values == sorted(values) and len(set(values)) == 4


def test_mmd_single_kernel_by_hand() -> None:
    out = MMDLoss(kernel_num=1, bandwidth=1.0)(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
    # k(s, s) = k(t, t) = 1, k(s, t) = exp(-1): MMD² = 2 - 2/e.
    assert out.loss.item() == pytest.approx(2 - 2 / math.e, rel=1e-6)


def test_mmd_kernel_mixture_by_hand() -> None:
    out = MMDLoss(kernel_num=3, kernel_mul=2.0, bandwidth=1.0)(
        torch.tensor([[0.0]]), torch.tensor([[1.0]])
    )
    # σ² ∈ {1/2, 1, 2}: k(s, t) = (e^-2 + e^-1 + e^-0.5) / 3.
    cross = (math.exp(-2) + math.exp(-1) + math.exp(-0.5)) / 3
    assert out.loss.item() == pytest.approx(2 - 2 * cross, rel=1e-6)


def test_mmd_data_bandwidth_by_hand() -> None:
    source, target = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    out = MMDLoss(kernel_num=1)(source, target)
    base = (1 + 9 + 4) / 3  # mean squared distance over the distinct pooled pairs
    source_term = (2 + 2 * math.exp(-1 / base)) / 4
    cross = (math.exp(-9 / base) + math.exp(-4 / base)) / 2
    assert out.loss.item() == pytest.approx(source_term + 1 - 2 * cross, rel=1e-6)


def test_mmd_of_a_single_repeated_point_is_finite() -> None:
    point = torch.ones(3, 2, requires_grad=True)
    out = MMDLoss()(point, torch.ones(2, 2))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.isfinite(point.grad).all()


# CORAL


def test_coral_ignores_a_mean_shift() -> None:
    source = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    out = CORALLoss()(source, source + torch.tensor([5.0, -2.0, 1.0]))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)


def test_coral_of_a_scaled_sample_by_hand() -> None:
    source = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    # C_S = (4/3) I, C_T = (16/3) I: ‖-4 I‖² / (4·2²) = 32 / 16 = 2.
    out = CORALLoss()(source, 2 * source)
    assert out.loss.item() == pytest.approx(2.0, rel=1e-6)
    assert out.stats["coral"] == pytest.approx(2.0, rel=1e-6)


def test_coral_off_diagonal_by_hand() -> None:
    source = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # C_S = [[1, 1], [1, 1]]
    target = torch.tensor([[0.0, 0.0], [1.0, -1.0], [2.0, -2.0]])  # C_T = [[1, -1], [-1, 1]]
    # ‖[[0, 2], [2, 0]]‖² / 16 = 8 / 16.
    assert CORALLoss()(source, target).loss.item() == pytest.approx(0.5, rel=1e-6)


def test_coral_needs_two_rows_per_domain() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        CORALLoss()(torch.randn(1, 3), torch.randn(4, 3))


@pytest.mark.parametrize("loss", [WDGRLLoss(3), DANNLoss(3), MMDLoss(), CORALLoss()])
def test_losses_reject_mismatched_embeddings(loss: DomainLoss) -> None:
    with pytest.raises(ValueError, match=r"\[Ns, H\] and \[Nt, H\]"):
        loss(torch.randn(4, 3), torch.randn(4, 2))


# build_domain_loss and the λ schedule


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("wdgrl", WDGRLLoss), ("dann", DANNLoss), ("mmd", MMDLoss), ("coral", CORALLoss)],
)
def test_build_domain_loss_kinds(kind: str, cls: type[DomainLoss]) -> None:
    loss = build_domain_loss(kind, 6)
    assert type(loss) is cls
    out = loss(torch.randn(4, 6), torch.randn(3, 6))
    assert out.loss.dim() == 0 and all(isinstance(v, float) for v in out.stats.values())


def test_build_domain_loss_passes_options() -> None:
    loss = build_domain_loss("wdgrl", 6, gamma=10.0, critic_iter=5, widths=(4,))
    assert (loss.gamma, loss.critic_iter, loss.critic.net[0].out_features) == (10.0, 5, 4)
    assert build_domain_loss("dann", 6, alpha=0.3).reversal.alpha == 0.3
    assert build_domain_loss("mmd", 6, kernel_num=3).kernel_num == 3


def test_build_domain_loss_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"'adda'.*wdgrl, dann, mmd, coral"):
        build_domain_loss("adda", 6)


@pytest.mark.parametrize(
    ("kind", "option"), [("wdgrl", "alpha"), ("mmd", "widths"), ("coral", "gamma")]
)
def test_build_domain_loss_rejects_an_unknown_option(kind: str, option: str) -> None:
    with pytest.raises(ValueError, match=f"unknown option '{option}'"):
        build_domain_loss(kind, 6, **{option: 1.0})


def test_lambda_schedules_by_hand() -> None:
    assert lambda_at(7, 100, value=0.01) == 0.01
    assert lambda_at(25, 100, value=0.2, schedule="linear") == pytest.approx(0.05)
    assert lambda_at(5, 100, value=0.2, schedule="linear", ramp_steps=10) == pytest.approx(0.1)
    assert lambda_at(50, 100, value=0.2, schedule="linear", ramp_steps=10) == pytest.approx(0.2)
    assert lambda_at(0, 100, value=1.0, schedule="dann") == 0.0
    assert lambda_at(50, 100, value=2.0, schedule="dann") == pytest.approx(
        2.0 * (2 / (1 + math.exp(-5)) - 1)
    )
    assert lambda_at(100, 100, value=1.0, schedule="dann") == pytest.approx(
        2 / (1 + math.exp(-10)) - 1
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "cosine"}, "cosine"),
        ({"schedule": "linear", "ramp_steps": 0}, "ramp_steps"),
        ({"step": -1}, "step"),
    ],
)
def test_lambda_schedule_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"step": 1, "total_steps": 10, "value": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        lambda_at(**arguments)


# Behaviour: a short DIAL run on embeddings with a known shift

_DIM, _ROWS, _SHIFT = 4, 128, 3.0


def _shifted_clouds() -> tuple[Tensor, Tensor, Tensor]:
    """Source and target N(0, I) clouds, the target shifted along axis 0; labels along axis 1."""
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(_ROWS, _DIM, generator=generator)
    target = torch.randn(_ROWS, _DIM, generator=generator)
    target[:, 0] += _SHIFT
    return source, target, (source[:, 1] > 0).float()


def _train_encoder(domain_weight: float, steps: int = 300) -> tuple[Tensor, Tensor, float]:
    """Train an identity-initialised linear encoder and a logistic head on the source labels,
    plus ``domain_weight``·Ŵ with WDGRL critic steps when ``domain_weight > 0``.

    The encoder's learning rate decays linearly to 0 so that the adversarial game settles.
    Returns the encoded source and target and the head's source accuracy.
    """
    torch.manual_seed(0)
    source, target, labels = _shifted_clouds()
    encoder, head = nn.Linear(_DIM, _DIM), nn.Linear(_DIM, 1)
    nn.init.eye_(encoder.weight)
    nn.init.zeros_(encoder.bias)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    domain_loss = WDGRLLoss(_DIM, widths=(16,), gamma=10.0, critic_iter=5)
    critic_optimizer = torch.optim.Adam(domain_loss.critic_parameters(), lr=1e-2)
    for _ in range(steps):
        encoded_source, encoded_target = encoder(source), encoder(target)
        loss = F.binary_cross_entropy_with_logits(head(encoded_source).squeeze(-1), labels)
        if domain_weight > 0:
            domain_loss.critic_step(encoded_source, encoded_target, critic_optimizer)
            loss = loss + domain_weight * domain_loss(encoded_source, encoded_target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        encoded_source, encoded_target = encoder(source), encoder(target)
        accuracy = ((head(encoded_source).squeeze(-1) > 0).float() == labels).float().mean()
    return encoded_source, encoded_target, accuracy.item()


def _domain_classifier_accuracy(source: Tensor, target: Tensor) -> float:
    """Training accuracy of a fresh L2-regularised logistic regression (source = 1).

    An invertible linear encoder cannot destroy linear separability: whatever remains of the
    shift sits in a direction whose spread shrank with it. The L2 penalty bounds the weight,
    so the classifier measures separability at the embeddings' scale, as the critic's
    Lipschitz constraint does (unregularised, it still separates DIAL's embeddings).
    """
    torch.manual_seed(1)
    classifier = nn.Linear(_DIM, 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=5e-2)
    embeddings = torch.cat([source, target])
    domains = torch.cat([torch.ones(len(source)), torch.zeros(len(target))])
    for _ in range(300):
        logits = classifier(embeddings).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, domains)
        loss = loss + 0.05 * classifier.weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictions = (classifier(embeddings).squeeze(-1) > 0).float()
    return (predictions == domains).float().mean().item()


def _fresh_critic_estimate(source: Tensor, target: Tensor) -> float:
    torch.manual_seed(2)
    critic = WDGRLLoss(_DIM, widths=(16,), gamma=10.0, critic_iter=200)
    critic.critic_step(source, target, torch.optim.Adam(critic.critic_parameters(), lr=1e-2))
    return critic(source, target).stats["wasserstein"]


def test_dial_aligns_shifted_embeddings_better_than_source_only() -> None:
    measures = {}
    for name, domain_weight in (("source_only", 0.0), ("dial", 1.0)):
        source, target, task_accuracy = _train_encoder(domain_weight)
        measures[name] = (
            _domain_classifier_accuracy(source, target),
            _fresh_critic_estimate(source, target),
            task_accuracy,
        )
    (acc_source_only, w_source_only, task_source_only) = measures["source_only"]
    (acc_dial, w_dial, task_dial) = measures["dial"]
    print(f"\ndomain accuracy, fresh-critic Ŵ, task accuracy: {measures}")
    assert acc_source_only > 0.85 and w_source_only > 2.0  # the shift of 3 is visible
    assert acc_dial < acc_source_only - 0.15
    assert w_dial < 0.25 * w_source_only
    assert task_source_only > 0.95 and task_dial > 0.9  # the label direction survives


def test_domain_classifier_accuracy_separates_only_shifted_clouds() -> None:
    from dial.evaluation.domain_metrics import domain_classifier_accuracy

    generator = torch.Generator().manual_seed(0)
    source = torch.randn(200, 8, generator=generator)
    same = torch.randn(200, 8, generator=generator)
    shifted = same + torch.tensor([3.0] + [0.0] * 7)
    assert domain_classifier_accuracy(source.numpy(), shifted.numpy()) > 0.9
    assert abs(domain_classifier_accuracy(source.numpy(), same.numpy()) - 0.5) < 0.1

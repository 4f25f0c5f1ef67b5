r"""PPO for RLHF (DESIGN.md §2): the per-token math as plain functions, and one PPO update.

A rollout is a batch of queries :math:`x_i` and sampled responses :math:`y_i = (y_{i,1}, \dots,
y_{i,T_i})` scored by a reward model (:math:`s_i`). The response tokens are the actions; the
state before action :math:`t` is the query plus the response so far. :func:`ppo_update` turns
the rollout into per-token rewards (:func:`kl_penalized_rewards`), advantages and returns
(:func:`gae`), and takes ``ppo_epochs`` passes of clipped policy and value steps
(:func:`policy_loss`, :func:`value_loss`).

Tensors of per-token quantities have shape ``[B, T]``: row ``i`` holds response ``i``'s tokens
in columns ``0..T_i-1`` and padding after them, and ``mask`` (bool or 0/1) marks the real
tokens. Masked entries never enter a mean, a variance or a loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


# Masked statistics


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    r"""Mean of ``x`` over the entries where ``mask`` is set.

    .. math::

        \bar x = \frac{\sum_j m_j x_j}{\sum_j m_j}

    over all entries (``dim=None``) or along ``dim``. Masked entries are ignored even when
    they are NaN or infinite, and get no gradient. An empty mask gives NaN.
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim=dim)
    return total / mask.sum(dim=dim)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    r"""Variance of ``x`` over the :math:`n = \sum_j m_j` entries where ``mask`` is set.

    .. math::

        \sigma^2 = \frac{1}{n - u} \sum_j m_j (x_j - \bar x)^2

    with :math:`\bar x` the :func:`masked_mean` and :math:`u = 1` (Bessel's correction) when
    ``unbiased``, else :math:`u = 0`. Raises ``ValueError`` when fewer than :math:`1 + u`
    entries are set.
    """
    count = int(mask.bool().sum())
    if count < 1 + int(unbiased):
        raise ValueError(
            f"the masked variance needs at least {1 + int(unbiased)} entries, the mask has {count}"
        )
    variance = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return variance * count / (count - 1) if unbiased else variance


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    r"""Whiten ``x`` with the mean and (unbiased) variance of its masked entries only.

    .. math::

        \hat x_j = \frac{x_j - \bar x}{\sqrt{\sigma^2 + 10^{-8}}}
            \; \left(+ \bar x \text{ when not } \texttt{shift\_mean}\right)

    for the entries where ``mask`` is set (:math:`\bar x`, :math:`\sigma^2` from
    :func:`masked_mean` and :func:`masked_var`); the other entries are returned unchanged.
    ``shift_mean=False`` only rescales (the mean is kept), as for reward whitening.
    """
    mean, variance = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, x)


# Rewards and advantages


def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    *,
    kl_estimator: KLEstimator = "k1",
) -> tuple[Tensor, Tensor]:
    r"""Per-token rewards: a KL penalty on every response token, the score on the last one.

    .. math::

        r_{i,t} = -\beta \, \mathrm{kl}_{i,t} + s_i \, [t = T_i]

    where :math:`\beta` is ``kl_coef``, :math:`T_i` the last position where row ``i``'s mask is
    set (rows may have different lengths; a row with an empty mask gets no score) and the
    per-token KL estimate, with :math:`\log \rho_{i,t} = \log \pi(y_{i,t}) - \log
    \pi_{\mathrm{ref}}(y_{i,t})` for tokens sampled from :math:`\pi`, is

    - ``"k1"``: :math:`\mathrm{kl} = \log \rho`, unbiased for
      :math:`\mathrm{KL}(\pi \| \pi_{\mathrm{ref}})` but negative for some tokens;
    - ``"k3"``: :math:`\mathrm{kl} = (q - 1) - \log q` with :math:`q = \pi_{\mathrm{ref}} / \pi
      = e^{-\log \rho}`, also unbiased (:math:`\mathbb{E}_\pi[q] = 1`), never negative, and of
      lower variance when the two policies are close.

    Args:
        scores: the reward model's scores :math:`s_i`, shape ``[B]``.
        logprobs: :math:`\log \pi(y_{i,t})` of the sampled tokens, shape ``[B, T]``.
        ref_logprobs: :math:`\log \pi_{\mathrm{ref}}(y_{i,t})`, shape ``[B, T]``.
        mask: the response tokens, shape ``[B, T]``.
        kl_coef: :math:`\beta`.
        kl_estimator: ``"k1"`` or ``"k3"``.

    Returns:
        ``(rewards, kl)``, both ``[B, T]`` and 0 where the mask is not set.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown KL estimator {kl_estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}"
        )
    mask = mask.bool()
    log_ratio = logprobs - ref_logprobs
    kl = log_ratio if kl_estimator == "k1" else torch.expm1(-log_ratio) + log_ratio
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=1)
    rows = torch.nonzero(last >= 0).squeeze(1)
    rewards[rows, last[rows]] += scores[rows].to(rewards.dtype)
    return rewards, kl


def _contains_eos(tokens: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    return torch.isin(tokens, torch.as_tensor(eos_token_id, device=tokens.device))


def missing_eos_penalty(
    scores: Tensor,
    responses: Tensor | Sequence[Tensor],
    eos_token_id: int | Sequence[int],
    penalty: float,
) -> Tensor:
    r"""Subtract ``penalty`` from the score of every response that has no EOS token.

    .. math::

        s_i' = s_i - p \, [\mathrm{eos} \notin y_i]

    Args:
        scores: shape ``[B]``.
        responses: a ``[B, T]`` tensor or ``B`` 1-D tensors of token ids. Padding counts as
            part of the response, so with ``pad_token_id == eos_token_id`` pass the responses
            unpadded.
        eos_token_id: the EOS id, or several ids that all end a response.
        penalty: :math:`p`.

    Returns:
        the new scores (a new tensor; ``scores`` is not modified).
    """
    has_eos = torch.stack([_contains_eos(row, eos_token_id).any() for row in responses])
    return scores - penalty * (~has_eos.to(scores.device)).to(scores.dtype)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    r"""Generalised advantage estimation over each row's valid tokens, backwards in time.

    .. math::

        \delta_t = r_t + \gamma \, m_{t+1} V_{t+1} - V_t, \qquad
        A_t = m_t \left(\delta_t + \gamma \lambda A_{t+1}\right), \qquad
        R_t = A_t + V_t

    with :math:`A_T = 0` and :math:`V_T = 0` past the last column. Values past the end of a
    row count as 0 (the episode ends with its last valid token) and masked positions get
    :math:`A_t = 0`, so nothing leaks from the padding into the valid tokens. Meant for
    right-padded masks (valid tokens first); a hole inside a mask would end the episode there.

    Args:
        rewards: per-token rewards, shape ``[B, T]``.
        values: the value model's :math:`V_t` for the state before token ``t``, ``[B, T]``.
        mask: the response tokens, shape ``[B, T]``.
        gamma: discount :math:`\gamma`.
        lam: GAE :math:`\lambda`.

    Returns:
        ``(advantages, returns)``, both ``[B, T]``; at masked positions the advantage is 0 and
        the return is the value.
    """
    valid = mask.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * valid[:, t]
        next_value = values[:, t] * valid[:, t]
        advantages.append(next_advantage)
    advantages = torch.stack(advantages[::-1], dim=1)
    return advantages, advantages + values


# Losses


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""PPO's clipped surrogate loss, a mean over the masked tokens.

    .. math::

        L = \operatorname{mean}_{m}\, \max\left(-A_t \rho_t,\;
            -A_t \operatorname{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\right), \qquad
        \rho_t = e^{\log \pi(y_t) - \log \pi_{\mathrm{old}}(y_t)}

    A token whose clipped term is the larger one (:math:`\rho_t > 1 + \epsilon` with
    :math:`A_t > 0`, or :math:`\rho_t < 1 - \epsilon` with :math:`A_t < 0`) gets no gradient.

    Args:
        logprobs: :math:`\log \pi(y_t)` under the current policy (with grad), ``[B, T]``.
        old_logprobs: :math:`\log \pi_{\mathrm{old}}(y_t)` from the rollout, ``[B, T]``.
        advantages: :math:`A_t`, ``[B, T]``.
        mask: the response tokens, ``[B, T]``.
        clip_range: :math:`\epsilon`.

    Returns:
        ``(loss, stats)`` with detached scalar stats ``clipfrac`` (the fraction of tokens where
        the clipped term is active), ``approx_kl`` (:math:`\operatorname{mean}_m \tfrac12
        (\log \rho_t)^2`) and ``ratio`` (:math:`\operatorname{mean}_m \rho_t`).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask),
        "ratio": masked_mean(ratio.detach(), mask),
    }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_value: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""PPO's clipped value loss, a mean over the masked tokens.

    .. math::

        L_V = \tfrac12 \operatorname{mean}_m \max\left((V_t - R_t)^2,\;
            (\operatorname{clip}(V_t, V^{\mathrm{old}}_t - \epsilon,
            V^{\mathrm{old}}_t + \epsilon) - R_t)^2\right)

    Args:
        values: :math:`V_t` under the current value model (with grad), ``[B, T]``.
        old_values: :math:`V^{\mathrm{old}}_t` from the rollout, ``[B, T]``.
        returns: :math:`R_t` from :func:`gae`, ``[B, T]``.
        mask: the response tokens, ``[B, T]``.
        clip_range_value: :math:`\epsilon`.

    Returns:
        ``(loss, stats)`` with the detached scalar stat ``clipfrac``: the fraction of tokens
        where the clipped error is the larger one.
    """
    clipped_values = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    return loss, {"clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask)}


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    r"""Log-probabilities of ``tokens`` under ``logits``: a log-softmax gather, in float32.

    .. math::

        \log p_{b,t} = z_{b,t,y_{b,t}} - \log \sum_v e^{z_{b,t,v}}

    ``logits[:, t]`` must be the prediction for ``tokens[:, t]``. A causal LM's output at
    position ``p`` predicts the token at ``p + 1``, so the caller shifts by one:
    ``logprobs_from_logits(out.logits[:, :-1], input_ids[:, 1:])``.

    Args:
        logits: shape ``[B, T, V]``.
        tokens: shape ``[B, T]``.

    Returns:
        shape ``[B, T]``.
    """
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _entropy_from_logits(logits: Tensor) -> Tensor:
    r""":math:`H = \log \sum_v e^{z_v} - \sum_v \operatorname{softmax}(z)_v z_v`, ``[B, T]``."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(-1)


# Models and sequences


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    r"""Positions that skip left padding: :math:`p_j = \max(0, \sum_{k \le j} m_k - 1)`."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class ValueModel(nn.Module):
    r"""Per-token values from a transformer trunk and a linear head: :math:`V_j = w^\top h_j + b`.

    ``forward(input_ids, attention_mask)`` returns ``[B, L]`` values, one per position. The
    trunk is a transformers base model (``AutoModel``, e.g. a causal LM's decoder) returning
    ``last_hidden_state``; it should be causal so that the value of a state never sees the
    tokens after it. Positions come from :func:`position_ids_from_mask` (left padding). The
    head runs in float32.

    Args:
        backbone: the trunk; its ``config.hidden_size`` sizes the head.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)


class Sequences(NamedTuple):
    """A batch of query + response sequences laid out by :func:`build_sequences`."""

    input_ids: Tensor  # [B, Lq + T]
    attention_mask: Tensor  # [B, Lq + T], long
    response_mask: Tensor  # [B, T], bool
    query_length: int  # Lq: responses start at this column in every row

    @property
    def responses(self) -> Tensor:
        """The response tokens, ``[B, T]`` (padding where ``response_mask`` is not set)."""
        return self.input_ids[:, self.query_length :]

    def rows(self, index: Tensor) -> Sequences:
        """The sub-batch of the rows in ``index``, in the same column layout."""
        return Sequences(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.query_length,
        )


def _pad(sequences: Sequence[Tensor], pad_token_id: int, left: bool) -> tuple[Tensor, Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        columns = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, columns] = seq.to(device="cpu", dtype=torch.long)
        mask[row, columns] = 1
    return ids, mask


def build_sequences(
    queries: Sequence[Tensor],
    responses: Sequence[Tensor],
    pad_token_id: int,
    device: torch.device | str | None = None,
) -> Sequences:
    """Lay out unpadded queries and responses as one batch of sequences.

    Queries are left-padded to the longest query ``Lq`` and responses right-padded to the
    longest response ``T``, so row ``i`` is ``[pad…, query_i, response_i, pad…]`` and every
    response starts at column ``Lq``::

        pad pad q q q | r r r r pad
        q   q   q q q | r r pad pad

    The attention mask is 0 on both paddings; positions come from
    :func:`position_ids_from_mask`.

    Args:
        queries: ``B`` 1-D tensors of query token ids, without padding.
        responses: ``B`` 1-D tensors of response token ids, without padding; none empty.
        pad_token_id: the id written into the padding (never attended to).
        device: where the tensors go (default: the CPU).
    """
    if len(queries) != len(responses) or not queries:
        raise ValueError(
            f"need as many queries as responses, at least one; got {len(queries)} queries and "
            f"{len(responses)} responses"
        )
    if any(len(response) == 0 for response in responses):
        raise ValueError("every response needs at least one token")
    query_ids, query_mask = _pad(queries, pad_token_id, left=True)
    response_ids, response_mask = _pad(responses, pad_token_id, left=False)
    return Sequences(
        input_ids=torch.cat([query_ids, response_ids], dim=1).to(device),
        attention_mask=torch.cat([query_mask, response_mask], dim=1).to(device),
        response_mask=response_mask.bool().to(device),
        query_length=query_ids.shape[1],
    )


def _truncate_after_eos(response: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """The response up to and including its first EOS token (all of it when it has none)."""
    ends = torch.nonzero(_contains_eos(response, eos_token_id))
    return response[: int(ends[0]) + 1] if len(ends) else response


def response_logits(policy: nn.Module, batch: Sequences) -> Tensor:
    """The causal LM's logits that predict the response tokens, ``[B, T, V]``.

    The logits at column ``c`` predict the token at ``c + 1``, so these are columns
    ``Lq − 1 … Lq + T − 2``, aligned with ``batch.responses`` for
    :func:`logprobs_from_logits`. The forward gets the attention mask and
    :func:`position_ids_from_mask`, and ``logits_to_keep`` (a transformers causal LM's argument)
    so that the LM head runs only on the last ``T + 1`` columns, not on the query's.
    """
    response_columns = batch.input_ids.shape[1] - batch.query_length
    logits = policy(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_from_mask(batch.attention_mask),
        use_cache=False,
        logits_to_keep=response_columns + 1,
    ).logits
    return logits[:, -response_columns - 1 : -1]  # also right for a model that keeps them all


def response_values(value_model: nn.Module, batch: Sequences) -> Tensor:
    """Values of the states before each response token, ``[B, T]``, in float32.

    The state before response token ``t`` ends at column ``Lq − 1 + t``, the column whose
    logits predict that token.
    """
    values = value_model(batch.input_ids, batch.attention_mask)
    return values[:, batch.query_length - 1 : -1].float()


@contextmanager
def _reference(policy: nn.Module, ref_policy: nn.Module | None) -> Iterator[nn.Module]:
    """The reference model: ``ref_policy``, or ``policy`` with its peft adapters disabled."""
    if ref_policy is not None:
        yield ref_policy
        return
    with policy.disable_adapter():
        yield policy


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Dropout off inside the block; each module's own train/eval mode is restored after."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


# The update


@dataclass
class PPOConfig:
    """PPO hyper-parameters (DESIGN.md §2)."""

    kl_coef: float = field(
        default=0.05, metadata={"help": "β of the per-token KL penalty −β·(log π − log π_ref)."}
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount γ of GAE."})
    lam: float = field(default=0.95, metadata={"help": "λ of GAE."})
    clip_range: float = field(
        default=0.2, metadata={"help": "ε of the policy ratio's clip to [1 − ε, 1 + ε]."}
    )
    clip_range_value: float = field(
        default=0.2, metadata={"help": "ε of the values' clip to [V_old − ε, V_old + ε]."}
    )
    vf_coef: float = field(
        default=0.1, metadata={"help": "Weight of the value loss: policy loss + vf_coef·value."}
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    mini_batch_size: int = field(
        default=8,
        metadata={"help": "Rows per optimizer step; each pass shuffles the batch into these."},
    )
    whiten_rewards: bool = field(
        default=False,
        metadata={"help": "Rescale the per-token rewards to unit variance (mean kept) before GAE."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtract this from the score of responses without EOS (null: off)."},
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this (null: no clipping)."}
    )
    learning_rate: float = field(
        default=1e-5,
        metadata={
            "help": "Learning rate for the optimizer the caller builds (ppo_update uses the "
            "optimizer it is given)."
        },
    )
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL estimate: k1 (log π − log π_ref) or k3 ((q − 1) − log q, "
            "q = π_ref/π).",
            "choices": KL_ESTIMATORS,
        },
    )

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"unknown kl_estimator {self.kl_estimator!r}; "
                f"choose one of {', '.join(KL_ESTIMATORS)}"
            )
        for name in ("ppo_epochs", "mini_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("clip_range", "clip_range_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or null, got {self.max_grad_norm}")


def _rollout_logprobs(
    old_logprobs: Sequence[Tensor], responses: Sequence[Tensor], width: int, device: torch.device
) -> Tensor:
    """The rollout's per-response log-probabilities as a right-padded ``[B, width]`` tensor."""
    if len(old_logprobs) != len(responses):
        raise ValueError(f"got {len(old_logprobs)} old_logprobs for {len(responses)} responses")
    padded = torch.zeros(len(responses), width, device=device)
    for row, (logprobs, response) in enumerate(zip(old_logprobs, responses, strict=True)):
        logprobs = logprobs[: len(response)]
        if len(logprobs) != len(response):
            raise ValueError(
                f"response {row}: {len(response)} tokens but {len(logprobs)} old_logprobs"
            )
        padded[row, : len(response)] = logprobs.to(device=device, dtype=torch.float32)
    return padded


def ppo_update(
    policy: nn.Module,
    value_head_model: nn.Module,
    ref_policy: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    queries: Sequence[Tensor],
    responses: Sequence[Tensor],
    scores: Tensor,
    config: PPOConfig,
    pad_token_id: int,
    eos_token_id: int | Sequence[int],
    old_logprobs: Sequence[Tensor] | None = None,
) -> dict[str, float]:
    r"""One PPO update on a rollout batch: rewards, advantages, then ``ppo_epochs`` passes.

    1. Each response is cut after its first EOS token (``generate`` fills finished rows with
       padding, which may be the EOS id itself), then the batch is laid out by
       :func:`build_sequences`: left-padded queries, right-padded responses, every response
       starting at column ``Lq``. Every forward gets the attention mask and
       ``position_ids = max(0, cumsum(attention_mask) − 1)``.
    2. Without gradients: :math:`\log \pi_{\mathrm{old}}` (``policy``, unless the rollout
       brought them: ``old_logprobs``), :math:`\log
       \pi_{\mathrm{ref}}` (``ref_policy``, or ``policy`` with its adapters disabled) of the
       response tokens, from the logits at columns ``Lq − 1 … Lq + T − 2`` (the logits at
       column ``c`` predict the token at ``c + 1``; the LM head runs on those columns only),
       and :math:`V^{\mathrm{old}}` from the values at the same columns (the state before each
       token).
    3. Scores :math:`s_i` (minus ``missing_eos_penalty`` for responses without EOS) and the KL
       penalty make the per-token rewards (:func:`kl_penalized_rewards`), optionally rescaled
       (``whiten_rewards``, :func:`masked_whiten` without shifting the mean); :func:`gae` gives
       advantages and returns; the advantages are whitened over the response tokens.
    4. ``ppo_epochs`` times: shuffle the rows, split them into mini-batches of
       ``mini_batch_size``, and for each take one optimizer step on
       :math:`L = L_{\pi} + c_V L_V` (:func:`policy_loss`, :func:`value_loss`) with the
       gradient norm clipped to ``max_grad_norm``.

    All forwards run in eval mode (dropout off, as PPO needs :math:`\rho = 1` before the first
    step); each model's train/eval mode is restored afterwards. The responses must have been
    sampled from ``policy`` itself at temperature 1 without top-k/top-p truncation (``generate``
    defaults to ``top_k=50``: pass ``top_k=0``), so that :math:`\pi_{\mathrm{old}}` is the
    distribution they came from.

    Args:
        policy: a causal LM (``AutoModelForCausalLM``, possibly peft-wrapped) returning
            ``.logits``.
        value_head_model: a module ``(input_ids, attention_mask) -> values [B, L]``, such as
            :class:`ValueModel`.
        ref_policy: the frozen reference causal LM; ``None`` when ``policy`` is a peft model
            (LoRA) whose base model is the reference: its forward then runs inside
            ``policy.disable_adapter()``, and no second copy of the model is needed.
        optimizer: holds the trainable parameters of both ``policy`` and
            ``value_head_model``; its learning rate is used as it is.
        queries: ``B`` 1-D tensors of query token ids, without padding.
        responses: ``B`` 1-D tensors (or a ``[B, T]`` tensor's rows) of sampled token ids.
        scores: the reward model's scores of the responses, shape ``[B]``.
        config: the hyper-parameters.
        pad_token_id: the id used for padding (never attended to).
        eos_token_id: the EOS id, or several ids that all end a response.
        old_logprobs: the rollout's :math:`\log \pi_{\mathrm{old}}` of each response's tokens
            (1-D, as :func:`~dial.rl.generation.sample_with_logprobs` returns them, cut after
            EOS like the responses); ``None`` computes them with a forward pass.

    Returns:
        Means over the batch (rollout stats) and over the optimizer steps (update stats):
        ``policy_loss``, ``value_loss``, ``policy_clipfrac``, ``value_clipfrac``,
        ``approx_kl``, ``ratio``, ``entropy`` (of the policy over the response tokens, in
        nats), ``kl`` (per-response sum of the rewards' KL estimates), ``score`` (the scores
        as given), ``non_score_reward`` (per-response sum of :math:`-\beta\,\mathrm{kl}`).
    """
    if ref_policy is None and not hasattr(policy, "disable_adapter"):
        raise ValueError(
            "ref_policy=None needs a peft policy (with disable_adapter()); pass the reference model"
        )
    device = next(policy.parameters()).device
    responses = [_truncate_after_eos(response, eos_token_id) for response in responses]
    batch = build_sequences(queries, responses, pad_token_id, device=device)
    mask = batch.response_mask
    scores = scores.detach().to(device=device, dtype=torch.float32)
    if len(scores) != len(responses):
        raise ValueError(f"got {len(scores)} scores for {len(responses)} responses")
    given_logprobs = None
    if old_logprobs is not None:
        given_logprobs = _rollout_logprobs(old_logprobs, responses, mask.shape[1], device)

    frozen = [ref_policy] if ref_policy is not None else []
    with _eval_mode(policy, value_head_model, *frozen):
        with torch.no_grad():
            if given_logprobs is None:
                logits = response_logits(policy, batch)
                given_logprobs = logprobs_from_logits(logits, batch.responses)
            old_logprobs = given_logprobs
            with _reference(policy, ref_policy) as reference:
                ref_logprobs = logprobs_from_logits(
                    response_logits(reference, batch), batch.responses
                )
            old_values = response_values(value_head_model, batch)

            penalized_scores = scores
            if config.missing_eos_penalty is not None:
                penalized_scores = missing_eos_penalty(
                    scores, responses, eos_token_id, config.missing_eos_penalty
                )
            rewards, kl = kl_penalized_rewards(
                penalized_scores,
                old_logprobs,
                ref_logprobs,
                mask,
                config.kl_coef,
                kl_estimator=config.kl_estimator,
            )
            if config.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
            advantages = torch.where(mask, masked_whiten(advantages, mask), 0.0)

        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        totals: dict[str, Tensor] = {}
        steps = 0
        for _ in range(config.ppo_epochs):
            order = torch.randperm(len(responses)).to(device)
            for index in order.split(config.mini_batch_size):
                rows = batch.rows(index)
                logits = response_logits(policy, rows)
                logprobs = logprobs_from_logits(logits, rows.responses)
                values = response_values(value_head_model, rows)
                pg_loss, pg_stats = policy_loss(
                    logprobs,
                    old_logprobs[index],
                    advantages[index],
                    rows.response_mask,
                    config.clip_range,
                )
                vf_loss, vf_stats = value_loss(
                    values,
                    old_values[index],
                    returns[index],
                    rows.response_mask,
                    config.clip_range_value,
                )
                optimizer.zero_grad(set_to_none=True)
                (pg_loss + config.vf_coef * vf_loss).backward()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()

                step_stats = {
                    "policy_loss": pg_loss.detach(),
                    "value_loss": vf_loss.detach(),
                    "policy_clipfrac": pg_stats["clipfrac"],
                    "value_clipfrac": vf_stats["clipfrac"],
                    "approx_kl": pg_stats["approx_kl"],
                    "ratio": pg_stats["ratio"],
                    "entropy": masked_mean(
                        _entropy_from_logits(logits.detach()), rows.response_mask
                    ),
                }
                for name, value in step_stats.items():
                    totals[name] = totals.get(name, 0.0) + value
                steps += 1
        optimizer.zero_grad(set_to_none=True)

    stats = {name: float(total) / steps for name, total in totals.items()}
    stats["kl"] = float(kl.sum(dim=1).mean())
    stats["score"] = float(scores.mean())
    stats["non_score_reward"] = float((-config.kl_coef * kl).sum(dim=1).mean())
    return stats

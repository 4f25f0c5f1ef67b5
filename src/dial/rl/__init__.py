"""The RL stage (DESIGN.md §2): PPO against a reward model's scores."""

from __future__ import annotations

from dial.rl.evaluate import action_accuracy, evaluate_policy
from dial.rl.generation import (
    decode_responses,
    encode_queries,
    eos_token_ids,
    load_policy,
    sample_responses,
    sample_with_logprobs,
)
from dial.rl.ppo import (
    KL_ESTIMATORS,
    PPOConfig,
    Sequences,
    ValueModel,
    build_sequences,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    missing_eos_penalty,
    policy_loss,
    position_ids_from_mask,
    ppo_update,
    response_logits,
    response_values,
    value_loss,
)

__all__ = [
    "KL_ESTIMATORS",
    "PPOConfig",
    "Sequences",
    "ValueModel",
    "action_accuracy",
    "build_sequences",
    "decode_responses",
    "encode_queries",
    "eos_token_ids",
    "evaluate_policy",
    "gae",
    "kl_penalized_rewards",
    "load_policy",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "missing_eos_penalty",
    "policy_loss",
    "position_ids_from_mask",
    "ppo_update",
    "response_logits",
    "response_values",
    "sample_responses",
    "sample_with_logprobs",
    "value_loss",
]

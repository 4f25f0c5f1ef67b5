"""Judges of comply/refuse: an offline string-match judge and an LLM behind any
OpenAI-compatible chat endpoint, plus the paper's prompting baselines built on the same client."""

from dial.judge.base import (
    VERDICTS,
    Judge,
    JudgeConfig,
    action_of,
    add_judge_arguments,
    build_judge,
    judge_config_from_args,
)
from dial.judge.string_match import REFUSAL_PHRASES, StringMatchJudge

__all__ = [
    "REFUSAL_PHRASES",
    "VERDICTS",
    "Judge",
    "JudgeConfig",
    "StringMatchJudge",
    "action_of",
    "add_judge_arguments",
    "build_judge",
    "judge_config_from_args",
]

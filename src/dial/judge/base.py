"""What every judge is: verdicts (``complied`` or ``refused``) on (prompt, response) pairs."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dial.config import option
from dial.errors import ConfigError

VERDICTS: tuple[str, str] = ("complied", "refused")

RESPONSE_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "none")

_ACTIONS = {"complied": "comply", "refused": "refuse"}


class Judge(Protocol):
    """Anything that judges whether each response complied with its prompt or refused it."""

    def verdicts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """One of :data:`VERDICTS` per (prompt, response), in order."""
        ...


def action_of(verdict: str) -> str:
    """The RL data's action for a verdict: ``complied`` -> ``comply``, ``refused`` -> ``refuse``."""
    try:
        return _ACTIONS[verdict]
    except KeyError:
        raise ValueError(f"expected a verdict in {VERDICTS}, got {verdict!r}") from None


@dataclass
class JudgeConfig:
    """Which judge to use and how to talk to its server."""

    url: str | None = option(
        None,
        "Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:7502/v1; sglang, vLLM, "
        "llama.cpp); unset: the offline string-match judge.",
    )
    model: str = option("default", "Model name sent to the server.")
    api_key_env: str = option(
        "DIAL_JUDGE_API_KEY",
        "Environment variable holding the API key, sent as a Bearer token (optional for local "
        "servers). The key itself is never logged or written.",
    )
    cache_path: str | None = option(
        None,
        "JSONL file caching every answer (appended and synced as it arrives); a rerun never "
        "asks the server twice for the same request.",
    )
    max_retries: int = option(
        5, "Retries of a request after a connection error, a timeout, a 429 or a 5xx."
    )
    backoff_s: float = option(
        0.5, "First retry delay; it doubles every retry (with up to 25% random jitter)."
    )
    max_backoff_s: float = option(30.0, "Longest delay between two retries.")
    timeout_s: float = option(60.0, "Seconds to wait for one answer.")
    concurrency: int = option(8, "Requests in flight at once.")
    max_tokens: int = option(256, "Most tokens the judge may write per answer.")
    temperature: float = option(0.0, "Sampling temperature (0: greedy, so answers are repeatable).")
    response_format: str = option(
        "json_schema",
        "How the answer is constrained to {reasoning, verdict} JSON: 'json_schema' (OpenAI's "
        "form; vLLM, sglang, llama.cpp's llama-server), 'json_object' (a JSON object with a "
        "'schema' key; llama-cpp-python's server) or 'none' (free text, parsed).",
        choices=RESPONSE_FORMATS,
    )
    on_unparseable: str = option(
        "fallback",
        "An answer with no verdict in it: 'fallback' (use the string-match judge for that "
        "response and count it in the judge's stats) or 'error' (stop with an error).",
        choices=("fallback", "error"),
    )

    def __post_init__(self) -> None:
        if self.response_format not in RESPONSE_FORMATS:
            raise ConfigError(
                f"judge response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                f"got {self.response_format!r}"
            )
        if self.on_unparseable not in ("fallback", "error"):
            raise ConfigError(
                f"judge on_unparseable must be 'fallback' or 'error', got {self.on_unparseable!r}"
            )
        for name in ("concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"judge {name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_retries", "backoff_s", "max_backoff_s", "temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"judge {name} must not be negative, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"judge timeout_s must be positive, got {self.timeout_s}")


def build_judge(config: JudgeConfig) -> Judge:
    """The string-match judge when ``config.url`` is unset, else an LLM judge at that URL."""
    if config.url is None:
        from dial.judge.string_match import StringMatchJudge

        return StringMatchJudge()
    from dial.judge.llm_judge import LLMJudge

    return LLMJudge(config)


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--judge-<field>`` for every :class:`JudgeConfig` field (``--judge-url``, ...)."""
    group = parser.add_argument_group("judge server")
    for f in dataclasses.fields(JudgeConfig):
        kind = {"int": int, "float": float}.get(str(f.type), str)
        group.add_argument(
            f"--judge-{f.name.replace('_', '-')}",
            dest=f"judge_{f.name}",
            type=kind,
            default=f.default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help'].replace('%', '%%')} (default: %(default)s)",
        )


def judge_config_from_args(args: argparse.Namespace) -> JudgeConfig:
    """The :class:`JudgeConfig` of the options that :func:`add_judge_arguments` added."""
    return JudgeConfig(
        **{f.name: getattr(args, f"judge_{f.name}") for f in dataclasses.fields(JudgeConfig)}
    )

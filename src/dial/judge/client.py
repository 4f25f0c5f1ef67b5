"""A client for OpenAI-compatible chat endpoints: concurrent, retrying, with an answer cache.

Works with any server that speaks ``POST {url}/chat/completions`` (sglang, vLLM, llama.cpp,
hosted APIs). Three properties matter for judging thousands of responses:

- **Retries with exponential back-off.** A connection error, a timeout, HTTP 429 or a 5xx is
  retried up to ``max_retries`` times; retry ``i`` (0-based) waits
  :math:`\\min(b_{max},\\ b_0 2^i)\\,(1 + u)` seconds with :math:`u \\sim U(0, 0.25)` (jitter, so
  concurrent requests do not retry in lock step), or the server's ``Retry-After`` when it sends
  one. Then a :class:`~dial.errors.DialError` names the URL and the last error. Any other 4xx is
  a mistake in the request and fails at once.
- **A disk cache.** Every answer is appended to a JSONL file (one line per answer, flushed and
  fsynced before the next request's result is returned), keyed by the SHA-256 of the request's
  model, messages, response format and sampling parameters. A crash or a dead server loses
  nothing already answered, and a rerun asks only for what is missing.
- **Concurrency.** Up to ``concurrency`` requests are in flight (threads over one pooled
  connection client). When one request fails for good, requests not yet sent are dropped,
  those in flight finish their current attempt (an answer is cached) without retrying, and
  the first error is raised.

The API key is read from the environment variable the config names and sent as a Bearer token;
it never appears in an error message, a log line or the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dial.errors import DialError
from dial.judge.base import JudgeConfig

Message = dict[str, str]

_RETRY_STATUS = frozenset({408, 409, 429})


class AnswerCache:
    """Answers by request key, kept in memory and appended to a JSONL file as they arrive.

    Each line is ``{"key": <sha256 hex>, "content": <answer text>}``. A last line cut short by a
    crash (no newline at its end) was never acknowledged to a caller, so it is ignored on load.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        complete, tail = lines[:-1], lines[-1]  # tail: "" when the file ends with a newline
        for number, line in enumerate(complete):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._answers[entry["key"]] = entry["content"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DialError(
                    f"judge cache {path} line {number + 1} is not a cache entry ({exc}); "
                    "delete the file or fix the line"
                ) from None
        if tail.strip():
            with path.open("r+b") as f:  # drop the torn last line, so appends start clean
                f.truncate(len(text.encode("utf-8")) - len(tail.encode("utf-8")))

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> str | None:
        return self._answers.get(key)

    def __getitem__(self, key: str) -> str:
        return self._answers[key]

    def put(self, key: str, content: str) -> None:
        """Remember an answer and make it durable before returning."""
        with self._lock:
            self._answers[key] = content
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


def request_key(body: dict[str, Any]) -> str:
    """SHA-256 of the request body (model, messages, response format, sampling parameters)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class ClientStats:
    """What a client did: requests sent (including retries), retries, answers from the cache."""

    requests: int = 0
    retries: int = 0
    cached: int = 0


class ChatClient:
    """Chat completions from an OpenAI-compatible server, cached on disk.

    Args:
        config: the URL, model, key variable, cache file, retry and concurrency settings.
        sleep: how to wait between retries (``time.sleep``; tests may shorten it).
    """

    def __init__(self, config: JudgeConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        if config.url is None:
            raise DialError("the LLM judge needs a server URL (--judge-url)")
        self.config = config
        self.url = config.url.rstrip("/") + "/chat/completions"
        self.cache = AnswerCache(config.cache_path)
        self.stats = ClientStats()
        self.sleep = sleep
        self._stats_lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def body(
        self, messages: Sequence[Message], response_format: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The request body for one conversation."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if response_format is not None:
            body["response_format"] = response_format
        return body

    def complete(
        self,
        conversations: Sequence[Sequence[Message]],
        response_format: dict[str, Any] | None = None,
    ) -> list[str]:
        """The answer text of each conversation, in order; cached ones are not asked again."""
        bodies = [self.body(messages, response_format) for messages in conversations]
        keys = [request_key(body) for body in bodies]
        missing = {
            key: body for key, body in zip(keys, bodies, strict=True) if self.cache.get(key) is None
        }
        self.stats.cached += len(bodies) - len(missing)
        if missing:
            self._ask_all(missing)
        return [self.cache[key] for key in keys]

    def _ask_all(self, bodies: dict[str, dict[str, Any]]) -> None:
        abort = threading.Event()
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = [pool.submit(self._ask, key, body, abort) for key, body in bodies.items()]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                wait(futures)
                raise failed.exception()  # type: ignore[misc]

    def _ask(self, key: str, body: dict[str, Any], abort: threading.Event) -> None:
        if abort.is_set():
            return
        try:
            self.cache.put(key, self._post(body, abort))
        except BaseException:
            abort.set()  # here, before the worker takes the next request
            raise

    def _post(self, body: dict[str, Any], abort: threading.Event) -> str:
        """One answer, retried on transient failures until another request failed for good."""
        last_error, hint = "", ""
        for attempt in range(self.config.max_retries + 1):
            with self._stats_lock:
                self.stats.requests += 1
                self.stats.retries += attempt > 0
            retry_after: float | None = None
            try:
                response = self._http.post(self.url, json=body)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._content(response)
                last_error = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                hint = _format_hint(response, body)
                if response.status_code not in _RETRY_STATUS and response.status_code < 500:
                    raise DialError(
                        f"judge server {self.url} rejected the request ({last_error}){hint}"
                    )
                retry_after = _retry_after(response)
            if attempt < self.config.max_retries:
                self.sleep(self._delay(attempt, retry_after))
            if abort.is_set():
                break
        raise DialError(
            f"judge server {self.url} failed {attempt + 1} times "
            f"({attempt} {'retry' if attempt == 1 else 'retries'}); last error: {last_error}{hint}"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.max_backoff_s)
        base = min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt)
        return base * (1 + random.uniform(0, 0.25))

    def _content(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise DialError(
                f"judge server {self.url} answered without choices[0].message.content: "
                f"{_excerpt(response.text)}"
            ) from None
        if not isinstance(content, str):
            raise DialError(f"judge server {self.url} answered a non-text content: {content!r}")
        return content


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _format_hint(response: httpx.Response, body: dict[str, Any]) -> str:
    """Advice when the server refused the response_format the request carried."""
    if "response_format" in body and "response_format" in response.text:
        return (
            "; the server does not take this response_format: try the judge's response_format "
            "'json_object' (llama-cpp-python's server) or 'none'"
        )
    return ""

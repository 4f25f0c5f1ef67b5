"""The judge's server failing in every way a real one does: down at start, killed mid-run, slow
past the timeout, answering garbage, answering HTTP 500 or 429. The server is a real process on
loopback (flaky_chat_server.py) told how to misbehave; it logs every verdict it delivered.

For each fault: retries with back-off where a retry can help, then one clear error naming the
server; and no verdict lost: every verdict the server delivered is in the judge's cache, and a
rerun asks the server only for the rest.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import write_jsonl

from dial.errors import DialError
from dial.judge import JudgeConfig
from dial.judge.client import AnswerCache
from dial.judge.llm_judge import LLMJudge
from reliability.helpers import clear_error, run_in_process

SERVER = Path(__file__).with_name("flaky_chat_server.py")
N = 12
PROMPTS = [f"Question {i}: how do I {'pick a lock' if i % 3 else 'bake bread'}?" for i in range(N)]
RESPONSES = [
    "I'm sorry, but I cannot help with that." if i % 3 else f"Mix flour and water ({i})."
    for i in range(N)
]
EXPECTED = ["refused" if i % 3 else "complied" for i in range(N)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyServer:
    """flaky_chat_server.py in its own process, following `plan` (see that file)."""

    def __init__(self, folder: Path, plan: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        folder.mkdir(parents=True, exist_ok=True)
        self.plan_path = folder / f"plan-{self.port}.json"
        self.plan_path.write_text(json.dumps(plan))
        self.log = folder / f"answered-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> FlakyServer:
        command = [sys.executable, str(SERVER), str(self.port), str(self.plan_path), str(self.log)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the flaky server did not start")

    def answered(self) -> list[str]:
        """Cache keys of the verdicts this server delivered."""
        return self.log.read_text().split() if self.log.exists() else []

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> FlakyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def config(url: str, cache: Path, **overrides) -> JudgeConfig:
    values = {"url": url, "cache_path": str(cache), "backoff_s": 0.05, "max_retries": 3,
              "timeout_s": 5.0, "concurrency": 2}  # fmt: skip
    return JudgeConfig(**{**values, **overrides})


def lost_verdicts(cache: Path, *servers: FlakyServer) -> int:
    """Verdicts a server delivered that the cache does not hold."""
    kept = AnswerCache(cache)
    return sum(kept.get(key) is None for server in servers for key in server.answered())


def judge_all(judge: LLMJudge, n: int = N) -> list[str]:
    return judge.verdicts(PROMPTS[:n], RESPONSES[:n])


def test_a_server_down_at_start_is_retried_and_used_once_it_is_up(tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    server = FlakyServer(tmp_path, ["ok"])
    down = LLMJudge(config(server.url, cache, max_retries=2))
    with pytest.raises(DialError) as error:
        judge_all(down, 2)
    assert f"judge server {server.url}/chat/completions failed 3 times" in str(error.value)
    assert "ConnectError" in str(error.value)
    assert down.client.stats.retries >= 2

    # the server comes up while the judge is backing off (0.4 s, 0.8 s, 1.6 s, ...)
    judge = LLMJudge(config(server.url, cache, backoff_s=0.4, max_retries=6, concurrency=1))
    starter = threading.Timer(0.5, server.start)
    starter.start()
    try:
        assert judge_all(judge) == EXPECTED
    finally:
        starter.join()
        server.kill()
    assert judge.client.stats.retries >= 1
    assert lost_verdicts(cache, server) == 0 and len(AnswerCache(cache)) == N


def test_a_server_killed_mid_run_loses_no_verdict_and_a_rerun_resumes(tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    first = FlakyServer(tmp_path, ["slow:0.1"])
    with first:

        def kill_after_five() -> None:
            while len(first.answered()) < 5:
                time.sleep(0.01)
            first.kill()

        killer = threading.Thread(target=kill_after_five)
        killer.start()
        judge = LLMJudge(config(first.url, cache))
        with pytest.raises(DialError, match=rf"{first.url}/chat/completions failed 4 times"):
            judge_all(judge)
        killer.join()
    delivered = first.answered()
    cached = len(AnswerCache(cache))
    assert 5 <= len(delivered) < N
    assert lost_verdicts(cache, first) == 0
    # nothing but what was delivered: the server logs a verdict just after sending it, so a kill
    # in between leaves at most one received verdict per concurrent request (2) unlogged
    assert len(delivered) <= cached <= len(delivered) + 2

    with FlakyServer(tmp_path / "second", ["ok"], port=first.port) as second:
        rerun = LLMJudge(config(second.url, cache))
        assert judge_all(rerun) == EXPECTED
        assert not set(second.answered()) & set(delivered)  # asked only for the rest
        assert len(second.answered()) == N - cached
        assert rerun.client.stats.cached == cached
    assert lost_verdicts(cache, first, second) == 0


@pytest.mark.parametrize(
    ("plan", "retried", "error"),
    [
        pytest.param(["slow:3", "ok"], True, None, id="slow_once"),  # past the 1 s timeout
        pytest.param(["slow:3"], True, "ReadTimeout", id="slow_always"),
        pytest.param(["http:500", "http:503", "ok"], True, None, id="http_500_then_ok"),
        pytest.param(["http:500"], True, "HTTP 500", id="http_500_always"),
        pytest.param(["http:429:0.3", "ok"], True, None, id="http_429_then_ok"),
        pytest.param(["http:429:0.3"], True, "HTTP 429", id="http_429_always"),
        pytest.param(["not_http", "ok"], True, None, id="not_http_then_ok"),
        pytest.param(["not_json"], False, "answered without choices", id="not_json"),
        pytest.param(["no_choices"], False, "answered without choices", id="no_choices"),
    ],
)
def test_a_misbehaving_server(
    tmp_path: Path, plan: list[str], retried: bool, error: str | None
) -> None:
    cache = tmp_path / "cache.jsonl"
    with FlakyServer(tmp_path, ["ok", "ok", *plan]) as server:  # two verdicts before the fault
        judge = LLMJudge(config(server.url, cache, timeout_s=1.0, concurrency=1))
        delays: list[float] = []
        judge.client.sleep = lambda seconds: (delays.append(seconds), time.sleep(seconds))
        if error is None:
            assert judge_all(judge, 4) == EXPECTED[:4]
        else:
            with pytest.raises(DialError) as caught:
                judge_all(judge, 4)
            message = str(caught.value)
            assert f"judge server {server.url}/chat/completions" in message and error in message
            assert "\n" not in message
        assert lost_verdicts(cache, server) == 0
        assert len(AnswerCache(cache)) == (4 if error is None else 2)
    assert (judge.client.stats.retries > 0) == retried
    if "http:429:0.3" in plan:
        assert delays and all(d == 0.3 for d in delays)  # the server's Retry-After
    elif retried:
        assert delays[0] >= 0.05 and all(b > a for a, b in itertools.pairwise(delays))


def test_the_command_line_reports_a_dead_judge_server_in_one_line(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": p, "response_chosen": "Sure: mix flour.", "response_rejected": r}
         for p, r in zip(PROMPTS[:3], RESPONSES[:3], strict=True)],
    )  # fmt: skip
    url = f"http://127.0.0.1:{free_port()}/v1"
    cache = tmp_path / "cache.jsonl"
    argv = ["baseline-judge", data, "--judge-url", url, "--judge-max-retries", "2",
            "--judge-backoff-s", "0.05", "--judge-cache-path", cache]  # fmt: skip
    clear_error(run_in_process(argv), "baseline-judge", [url, "failed 3 times", "ConnectError"])

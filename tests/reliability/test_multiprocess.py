"""Two gloo processes (DESIGN §5's CPU command), one of them killed or frozen mid-training: the
other stops with one clear error line instead of waiting forever at the next collective."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability.helpers import dial_env, dial_run_argv, domain_files

TIMEOUT_S = 10  # train.collective_timeout_s of these runs


def launch(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    source, target = domain_files(tmp_path)
    run = tmp_path / "run"
    argv = dial_run_argv(run, source, target, "--train.max_steps", "1000",
                         "--train.logging_steps", "1", "--train.eval_steps", "1000",
                         "--train.save_steps", "1000",
                         "--train.collective_timeout_s", str(TIMEOUT_S))  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "dial.cli", *map(str, argv)]  # fmt: skip
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=dial_env(), start_new_session=True
        )
    return process, run, log


def ranks_of(launcher: int) -> dict[int, int]:
    """The worker processes the launcher started, by their RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def wait_for(condition, timeout: float, what: str, log: Path) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, (
            f"no {what} within {timeout} s\n{log.read_text()}"
        )
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_the_surviving_rank_stops_with_a_clear_error(tmp_path: Path, fault: str) -> None:
    process, run, log = launch(tmp_path)
    try:
        metrics = run / "metrics.jsonl"

        def training() -> bool:
            assert process.poll() is None, log.read_text()
            return metrics.exists() and len(metrics.read_text().splitlines()) >= 3

        wait_for(training, 300, "training step", log)
        ranks = ranks_of(process.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        error = "dial train: error: process 0 of 2 stopped at step"
        # A killed rank: the launcher may stop rank 0 itself before rank 0 sees the broken
        # connection; either way the run ends at once and says which rank failed.
        launcher_report = f"local_rank: 1 (pid: {ranks[1]})"

        def stopped() -> bool:
            text = log.read_text()
            return error in text or (fault == "killed" and launcher_report in text)

        seconds = wait_for(stopped, 3 * TIMEOUT_S + 30, "error", log)
        if fault == "frozen":  # only the timeout can tell a frozen peer from a slow one
            assert TIMEOUT_S - 1 <= seconds <= 3 * TIMEOUT_S + 30
        wait_for(lambda: process.poll() is not None, 120, "exit of the launcher", log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    assert process.returncode != 0
    if error not in text:  # the launcher stopped rank 0 first and named the killed rank
        assert fault == "killed" and launcher_report in text, text[-3000:]
        return
    line = next(line for line in text.splitlines() if error in line)
    assert "another process died or did not answer within train.collective_timeout_s" in line
    assert "--resume" in line
    assert "[rank0]: Traceback" not in text and "[rank0]:" not in line, text[-3000:]
    print(f"\none rank {fault}: the other stopped with a clear error {seconds:.1f} s later")

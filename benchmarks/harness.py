"""What the dial-against-TRL benchmarks share: an offline environment, a loop meter, the worker
subprocess and the medians.

A benchmark runs each side in a fresh subprocess (TRL's possibly in another environment), so this
module imports nothing from dial or TRL, and torch only where it measures.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OFFLINE_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
    "TRL_EXPERIMENTAL_SILENCE",
)


def force_offline() -> None:
    """Nothing may reach the network: call before any Hugging Face library is imported."""
    for variable in OFFLINE_VARIABLES:
        os.environ[variable] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_peak_memory_mb() -> float:
    """This process's peak memory: GPU memory allocated on CUDA, peak RSS (ru_maxrss) on CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_facts() -> dict[str, Any]:
    """What every worker adds to its result: peak memory, device and torch's thread count."""
    import torch

    return {
        "peak_memory_mb": process_peak_memory_mb(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


class LoopMeter:
    """Wall-clock and CPU time and peak memory of one loop, from ``start()`` to the last
    ``tick()``; the first tick's time is kept apart (one-off kernel set-up, allocator growth)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.started = self.ended = self.first_ended = 0.0
        self.cpu_started = self.cpu_ended = 0.0
        self.ticks = 0
        self.rss_at_start_mb: float | None = None
        self.peak_mb: float | None = None
        self._can_reset_rss = False

    def start(self) -> None:
        """Call where the loop begins: resets the peak-memory counters."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss_at_start_mb = proc_status_mb("VmRSS")
            try:  # "5" resets the peak resident set size (VmHWM) to the current one (Linux)
                Path("/proc/self/clear_refs").write_text("5")
                self._can_reset_rss = True
            except OSError:
                self._can_reset_rss = False
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def tick(self) -> None:
        """Call at the end of every step of the loop."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.ended = time.perf_counter()
        self.cpu_ended = time.process_time()
        self.ticks += 1
        if self.ticks == 1:
            self.first_ended = self.ended
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        elif self._can_reset_rss:
            self.peak_mb = proc_status_mb("VmHWM")

    def rates(self, count: int, count_after_first: int) -> dict[str, Any]:
        """Seconds, CPU-seconds, and ``count`` per second, per CPU-second and per second after
        the first tick (``count_after_first`` of them)."""
        if self.ticks == 0:
            raise RuntimeError("the measured loop ran no step")
        seconds = self.ended - self.started
        cpu_seconds = self.cpu_ended - self.cpu_started  # all threads: steadier on a busy machine
        later = self.ended - self.first_ended
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "per_second": count / seconds,
            "per_cpu_second": count / max(cpu_seconds, 1e-9),
            "per_second_after_first": (
                count_after_first / later if self.ticks > 1 and later > 0 else None
            ),
        }


def run_worker_process(
    command: Sequence[str], run_dir: Path, label: str, cwd: Path
) -> dict[str, Any]:
    """Run a worker subprocess that writes ``run_dir/result.json``; its output goes to
    ``run_dir/worker.log``. Returns the result with ``wall_seconds``; exits on a failure."""
    result_file = run_dir / "result.json"
    started = time.perf_counter()
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    (run_dir / "worker.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not result_file.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
        raise SystemExit(f"{label} worker failed (exit {done.returncode}):\n{tail}")
    result = json.loads(result_file.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)

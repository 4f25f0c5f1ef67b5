"""What the reliability tests share: running ``dial`` in-process and as a subprocess (and
killing it at a chosen stage), the one-clear-error check, and small training runs of tiny-bert."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import preference_records, write_jsonl
from safetensors.torch import load_file

from dial.cli import main
from dial.training import checkpoint as ckpt

DIAL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # deterministic and light: these processes share two cores
    "PYTHONUNBUFFERED": "1",
}
QUIET = ["--train.report_to", "[]", "--train.progress_bar", "false"]
ERROR_LINE = re.compile(r"dial( [\w-]+)*: error: ")


@dataclass
class Outcome:
    """How one ``dial`` command ended."""

    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        out, err = self.stdout[-3000:], self.stderr[-3000:]
        return f"exit code {self.code}\nstdout:\n{out}\nstderr:\n{err}"


def run_in_process(argv: list[str | Path]) -> Outcome:
    """``dial ARGV`` through :func:`dial.cli.main` in this process; an exception escaping it
    (what a user would see as a traceback) propagates and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Outcome(code, out.getvalue(), err.getvalue())


def dial_command(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "dial.cli", *map(str, argv)]


def dial_env() -> dict[str, str]:
    return {**os.environ, **DIAL_ENV}


def run_subprocess(argv: list[str | Path], timeout: float = 300) -> Outcome:
    """``python -m dial.cli ARGV`` in a fresh process, offline."""
    result = subprocess.run(
        dial_command(*argv),
        capture_output=True,
        text=True,
        env=dial_env(),
        timeout=timeout,
        check=False,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def clear_error(outcome: Outcome, command: str, names: list[str]) -> str:
    """Assert exit code 2 and one ``dial <command>: error:`` line, the last one on stderr,
    naming every string of `names`, with no traceback; return that line."""
    assert outcome.code == 2, outcome.describe()
    assert "Traceback" not in outcome.stderr, outcome.describe()
    lines = outcome.stderr.splitlines()
    errors = [line for line in lines if ERROR_LINE.match(line)]
    assert len(errors) == 1, outcome.describe()
    message = errors[0]
    assert message.startswith(f"dial {command}: error: "), outcome.describe()
    assert message == lines[-1], f"the error is not the last line\n{outcome.describe()}"
    for name in names:
        assert name in message, f"{name!r} is not named in: {message}"
    return message


def train_argv(run_dir: Path, *extra: str | Path) -> list[str | Path]:
    """``dial train`` of tiny-bert in `run_dir`, quiet, plus `extra` options."""
    return ["train", "--model.name", "tiny-bert", "--output_dir", run_dir, *QUIET, *extra]


def domain_files(folder: Path) -> tuple[Path, Path]:
    """A source file of 48 pairs and a target file of 40 pairs in another style."""
    folder.mkdir(parents=True, exist_ok=True)
    source = write_jsonl(folder / "source.jsonl", preference_records(48, seed=0))
    target = [
        {
            **r,
            "response_chosen": r["response_chosen"] + " !!",
            "response_rejected": r["response_rejected"] + " !!",
        }
        for r in preference_records(40, seed=1)
    ]
    return source, write_jsonl(folder / "target.jsonl", target)


def dial_run_argv(run_dir: Path, source: Path, target: Path, *extra: str) -> list[str | Path]:
    """A DIAL (WDGRL critic) run of tiny-bert: 9 steps an epoch, evaluated and saved often,
    LoRA dropout on so that the restored random state matters."""
    return train_argv(
        run_dir,
        "--train.method", "dial",
        "--data.train_files", source,
        "--data.target_files", target,
        "--data.eval_split", "0.25",
        "--data.max_length", "32",
        "--train.batch_size", "4",
        "--train.learning_rate", "1e-3",
        "--train.logging_steps", "2",
        "--train.eval_steps", "3",
        "--train.save_steps", "2",
        "--model.lora_dropout", "0.1",
        "--domain.weight", "0.1",
        *extra,
    )  # fmt: skip


def final_weights(run_dir: Path) -> dict[str, object]:
    """Every tensor a run saved in final/ and the critic of its last checkpoint."""
    tensors: dict[str, object] = {}
    for path in sorted((run_dir / "final").rglob("*.safetensors")):
        prefix = str(path.relative_to(run_dir))
        tensors.update({f"{prefix}:{k}": v for k, v in load_file(str(path)).items()})
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*"))
    critic = checkpoints[-1] / "domain_loss.safetensors"
    if critic.exists():
        tensors.update({f"critic:{k}": v for k, v in load_file(str(critic)).items()})
    return tensors


def logged_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the throughput, which depends on the machine's load."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "pairs_per_second"} for row in rows]


Stage = Callable[[Path], bool]


@dataclass
class Interruption:
    """What a killed process left: the newest complete checkpoint and unfinished ones."""

    stage: str
    newest: Path | None
    unfinished: list[str]
    stdout: str


def run_dial(argv: list, log: Path, kill_at: tuple[str, Stage] | None, timeout: float = 600):
    """Run ``dial ARGV``; with `kill_at`, SIGKILL it as soon as its stage is reached (polled
    every 2 ms). Returns the process's stdout, or an :class:`Interruption` when killed."""
    run_dir = Path(argv[argv.index("--output_dir") + 1])
    with log.open("w") as out:
        process = subprocess.Popen(
            dial_command(*argv), stdout=out, stderr=subprocess.STDOUT, env=dial_env()
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                if kill_at is not None and kill_at[1](run_dir):
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    newest = ckpt.latest_valid_checkpoint(run_dir, log=lambda *_: None)
                    unfinished = sorted(p.name for p in (run_dir / "checkpoints").glob(".tmp-*"))
                    return Interruption(kill_at[0], newest, unfinished, log.read_text())
                assert time.monotonic() < deadline, f"dial did not finish:\n{log.read_text()}"
                time.sleep(0.002)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    assert kill_at is None, f"the run ended before the stage '{kill_at[0]}'\n{text[-3000:]}"
    return text

"""Crash and resume: a DIAL run (WDGRL critic) killed with SIGKILL mid-training, mid-checkpoint
and mid-save, resumed with --resume, ends with the same weights, critic and metrics as a run
never interrupted. Damaged checkpoints are detected by their manifest's checksums and skipped.

Every run is a real ``python -m dial.cli train`` process; the test watches its run folder and
kills it the moment the folder shows the wanted stage (a training row logged, a checkpoint's
staging folder appearing or half filled, the final model appearing).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from dial.training import checkpoint as ckpt
from dial.training.logging import RunLogger
from reliability.helpers import (
    Interruption,
    Stage,
    dial_run_argv,
    domain_files,
    final_weights,
    logged_rows,
    run_dial,
)

EXTRA = ("--train.num_epochs", "2", "--train.logging_steps", "3")  # 18 steps, 9 an epoch


def logged_step(step: int) -> Stage:
    """The training row of `step` is in metrics.jsonl."""

    def reached(run: Path) -> bool:
        path = run / "metrics.jsonl"
        if not path.exists():
            return False
        return any(f'"step": {step}, "split": "train"' in line for line in path.open())

    return reached


def staging_holds(step: int, name: str | None = None) -> Stage:
    """The checkpoint of `step` is being written: its staging folder exists (holding `name`)."""

    def reached(run: Path) -> bool:
        staging = ckpt.staging_dir(run, step)
        return staging.is_dir() and (name is None or (staging / name).exists())

    return reached


def set_up(run: Path) -> bool:
    """The run's setup is done (its config is written); training is about to start."""
    return (run / "config.yaml").exists()


def final_model_started(run: Path) -> bool:
    return (run / "final").is_dir()


def assert_same_run(a: Path, b: Path) -> None:
    """Identical final weights (every tensor of final/ and the last critic), final metrics
    and logged rows."""
    weights_a, weights_b = final_weights(a), final_weights(b)
    assert weights_a.keys() == weights_b.keys()
    assert any(key.startswith("critic:") for key in weights_a)
    for key, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[key]), key
    final_a = json.loads((a / "final_metrics.json").read_text())
    final_b = json.loads((b / "final_metrics.json").read_text())
    for key in ("eval", "global_step", "epochs", "train_examples"):
        assert final_a[key] == final_b[key], key
    assert logged_rows(a) == logged_rows(b)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return domain_files(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """The run never interrupted, started in the background (a future of its folder)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    run = folder / "run"
    argv = dial_run_argv(run, *data, *EXTRA)

    def uninterrupted() -> Path:
        run_dial(argv, folder / "run.log", None)
        return run

    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(uninterrupted)


def test_a_kill_while_a_checkpoint_is_written_resumes_to_the_same_run(
    tmp_path: Path, data: tuple[Path, Path], reference
) -> None:
    source, target = data
    run = tmp_path / "killed"
    argv = dial_run_argv(run, source, target, *EXTRA)
    # the second checkpoint's staging folder holds the model but not yet the optimizer
    stage = ("mid-checkpoint", staging_holds(4, "model"))
    killed = run_dial(argv, tmp_path / "0.log", stage)
    assert isinstance(killed, Interruption)
    assert killed.unfinished, "the kill came after the checkpoint was complete"
    assert killed.newest is not None
    resumed = run_dial([*argv, "--resume"], tmp_path / "1.log", None)
    assert f"resumed from {killed.newest} at step" in resumed
    assert "the critic is diverging" not in killed.stdout + resumed  # healthy settings
    assert_same_run(reference.result(), run)


@pytest.mark.slow
def test_seven_kills_at_different_stages_resume_to_the_same_run(
    tmp_path: Path, data: tuple[Path, Path], reference
) -> None:
    """One run killed seven times in a row, each time resumed from the newest complete
    checkpoint (one of them damaged on purpose, and skipped), finishing like a run never
    interrupted. Checkpoints every 2 steps, evaluations every 3, rows every 3, 9 steps an epoch."""
    source, target = data
    stages: list[tuple[str, Stage]] = [
        ("before the first checkpoint", set_up),
        ("between checkpoints (step 3 logged)", logged_step(3)),
        ("step 6's checkpoint just begun", staging_holds(6)),
        ("step 8's checkpoint half written (optimizer.pt)", staging_holds(8, "optimizer.pt")),
        ("step 8's checksums being computed", staging_holds(8, "trainer_state.json")),
        ("the epoch's end, evaluating (step 9 logged)", logged_step(9)),
        ("the final model being written", final_model_started),
    ]
    damaged_after = 4  # the newest checkpoint left by that kill is then damaged
    run = tmp_path / "killed"
    argv = dial_run_argv(run, source, target, *EXTRA)
    interruptions: list[Interruption] = []
    start: Path | None = None
    damaged = None
    for number, stage in enumerate(stages):
        resume = ["--resume"] if number else []
        killed = run_dial([*argv, *resume], tmp_path / f"{number}.log", stage)
        assert isinstance(killed, Interruption)
        if number:
            started = f"resumed from {start} at step" if start else "starting afresh"
            assert started in killed.stdout, killed.stdout
        interruptions.append(killed)
        start = killed.newest
        if number == damaged_after:  # as a file half written by a failing disk would be
            damaged, start = killed.newest, ckpt.list_checkpoints(run)[-2]
            assert damaged == ckpt.list_checkpoints(run)[-1]
            adapter = damaged / "model" / "adapter_model.safetensors"
            adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    last = run_dial([*argv, "--resume"], tmp_path / "last.log", None)
    assert f"resumed from {start} at step" in last
    assert_same_run(reference.result(), run)
    skipped = (tmp_path / f"{damaged_after + 1}.log").read_text()
    assert f"skipping checkpoint {damaged}: model/adapter_model.safetensors does not match" in (
        skipped
    )
    assert interruptions[0].newest is None
    assert sum(bool(i.unfinished) for i in interruptions) >= 3
    described = [
        f"{i.stage} -> newest complete checkpoint {i.newest.name if i.newest else 'none'}"
        + (f" (unfinished: {', '.join(i.unfinished)})" if i.unfinished else "")
        for i in interruptions
    ]
    print(
        f"\nkill points: {'; '.join(described)}; {len(interruptions)} of {len(interruptions)} "
        "resumed to identical weights, critic and metrics"
    )


def test_a_crash_while_appending_a_metrics_row_loses_only_that_row(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path, [], {})
    for step in (1, 2, 3):
        logger.log({"step": step, "split": "train", "loss": 0.5}, "train")
    with logger.path.open("a") as handle:
        handle.write('{"step": 4, "split": "tr')  # the process died mid-write
    logger.truncate_after(2)
    assert [json.loads(line)["step"] for line in logger.path.read_text().splitlines()] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_with_a_changed_or_missing_file_is_skipped(tmp_path: Path) -> None:
    """Checksums catch a flipped byte, a truncated file, a missing file, a missing or unreadable
    manifest; the newest intact checkpoint is chosen, each skipped one reported."""
    root = tmp_path / "run"
    folders = []
    for step in (1, 2, 3, 4, 5, 6):
        staging = ckpt.staging_dir(root, step)
        ckpt.make_empty(staging)
        (staging / "optimizer.pt").write_bytes(os.urandom(4096))
        (staging / "model").mkdir()
        (staging / "model" / "weights.safetensors").write_bytes(os.urandom(4096))
        folders.append(ckpt.commit_checkpoint(staging, ckpt.TrainerState(global_step=step), None))
    flipped = bytearray((folders[5] / "optimizer.pt").read_bytes())
    flipped[100] ^= 1
    (folders[5] / "optimizer.pt").write_bytes(bytes(flipped))
    weights = folders[4] / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (folders[3] / "optimizer.pt").unlink()
    (folders[2] / "manifest.json").unlink()
    (folders[1] / "manifest.json").write_text('{"files": ')
    messages: list[str] = []
    assert ckpt.latest_valid_checkpoint(root, log=messages.append) == folders[0]
    assert messages == [
        f"skipping checkpoint {folders[5]}: optimizer.pt does not match its checksum",
        f"skipping checkpoint {folders[4]}: model/weights.safetensors does not match its checksum",
        f"skipping checkpoint {folders[3]}: optimizer.pt is missing",
        f"skipping checkpoint {folders[2]}: no manifest (the write did not finish)",
        f"skipping checkpoint {folders[1]}: unreadable manifest",
    ]

"""Numerical faults: a NaN or infinite loss, a non-finite gradient, a learning rate that blows
the model up, a critic that diverges. The run stops with one message naming the step before the
bad numbers reach the weights, its last checkpoint stays good, and --resume continues from it.

Faults are injected in-process (the run goes through the real CLI): the task loss of one step
becomes NaN or infinite, or one gradient becomes infinite.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import preference_records, write_jsonl
from safetensors.torch import load_file

from dial.training import checkpoint as ckpt
from dial.training.trainer import TrainingRun
from reliability.helpers import (
    Outcome,
    dial_run_argv,
    domain_files,
    final_weights,
    logged_rows,
    run_in_process,
    train_argv,
)


def stopped(outcome: Outcome, *fragments: str) -> str:
    """Exit code 1 and one ``dial train: error:`` line (the last) holding `fragments`."""
    assert outcome.code == 1, outcome.describe()
    errors = [line for line in outcome.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and outcome.stderr.splitlines()[-1] == errors[0], outcome.describe()
    assert errors[0].startswith("dial train: error: ")
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} is not in: {errors[0]}"
    return errors[0]


def assert_finite_checkpoints(run: Path, steps: list[int]) -> None:
    folders = ckpt.list_checkpoints(run)
    assert [ckpt.load_state(f).global_step for f in folders] == steps
    for folder in folders:
        assert ckpt.verify_manifest(folder) is None
        for path in folder.rglob("*.safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(str(path)).values()), path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", preference_records(48))


@pytest.fixture(scope="module")
def reference(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of `small_run` never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    outcome = run_in_process(small_run(run, pairs))
    assert outcome.code == 0, outcome.describe()
    return run


def small_run(run: Path, data: Path, *extra: str) -> list:
    return train_argv(
        run,
        "--data.train_files", data,
        "--data.max_length", "32",
        "--train.batch_size", "4",
        "--train.max_steps", "8",
        "--train.save_steps", "2",
        "--train.logging_steps", "1",
        *extra,
    )  # fmt: skip


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_and_the_last_checkpoint_resumes(
    bad: float, pairs: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TrainingRun._task_loss

    def spoiled(self, rewards, batch, size):
        loss, accuracy = original(self, rewards, batch, size)
        if self.state.global_step + 1 == 5:  # the loss of step 5
            loss = loss + bad
        return loss, accuracy

    monkeypatch.setattr(TrainingRun, "_task_loss", spoiled)
    run = tmp_path / "run"
    outcome = run_in_process(small_run(run, pairs))
    stopped(
        outcome,
        f"the training loss became {bad} at step 5",
        f"the last good state is {run / 'checkpoints' / 'step_00000004'}",
        "--resume",
    )
    assert_finite_checkpoints(run, [2, 4])
    assert not (run / "final").exists()
    rows = [r for r in logged_rows(run) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # nothing of the bad step was logged
    monkeypatch.undo()
    resumed = run_in_process([*small_run(run, pairs), "--resume"])
    assert resumed.code == 0, resumed.describe()
    weights, expected = final_weights(run), final_weights(reference)
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert logged_rows(run) == logged_rows(reference)


def test_a_non_finite_gradient_stops_before_the_update(
    pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TrainingRun._accumulate_gradients
    seen: dict[str, torch.Tensor] = {}

    def spoiled(self, window):
        stats = original(self, window)
        if self.state.global_step + 1 == 3:
            head = self.accelerator.unwrap_model(self.model).head
            seen["before"] = head.weight.detach().clone()
            seen["head"] = head.weight
            head.weight.grad[0, 0] = math.inf
        return stats

    monkeypatch.setattr(TrainingRun, "_accumulate_gradients", spoiled)
    run = tmp_path / "run"
    stopped(
        run_in_process(small_run(run, pairs)),
        "the gradient norm became",
        "at step 3",
        f"the last good state is {run / 'checkpoints' / 'step_00000002'}",
    )
    assert torch.equal(seen["head"].detach(), seen["before"])  # the update never happened
    assert_finite_checkpoints(run, [2])


def test_a_learning_rate_that_blows_the_model_up_is_stopped(pairs: Path, tmp_path: Path) -> None:
    """No injection: full fine-tuning at a learning rate of 10⁶ overflows within a few steps."""
    run = tmp_path / "run"
    argv = small_run(run, pairs, "--model.use_lora", "false", "--train.learning_rate", "1e6")
    message = stopped(run_in_process(argv), "stopped before updating the weights")
    assert "became nan" in message or "became inf" in message
    step = int(message.split(" at step ")[1].split(";")[0])
    assert_finite_checkpoints(run, list(range(2, step, 2)))


def test_a_diverging_critic_is_reported_and_a_non_finite_one_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its gradient penalty (γ = 0) and with a learning rate of 1 the critic's Ŵ runs
    away: far past the bound a 1-Lipschitz critic obeys. The run says so once. When the critic's
    numbers stop being finite, the run stops and names the critic."""
    source, target = domain_files(tmp_path)
    steps = ("--train.max_steps", "3", "--train.eval_steps", "100")
    runaway = ("--domain.gamma", "0", "--domain.critic_lr", "1.0")
    run = tmp_path / "runaway"
    outcome = run_in_process(dial_run_argv(run, source, target, *steps, *runaway))
    assert outcome.code == 0, outcome.describe()
    warnings = [line for line in outcome.stdout.splitlines() if "the critic is diverging" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: step 1:"), outcome.stdout
    estimate = float(warnings[0].split("Ŵ = ")[1].split(" ")[0])
    rows = [r for r in logged_rows(run) if r["split"] == "train"]
    assert abs(estimate) > 1e3 and rows[-1]["critic_wasserstein"] > 1e3

    original = TrainingRun._domain_term

    def overflowing(self, source, target, stats):
        loss = original(self, source, target, stats)
        if self.state.global_step + 1 == 3:
            stats["critic_wasserstein"] = math.inf
        return loss

    monkeypatch.setattr(TrainingRun, "_domain_term", overflowing)
    run = tmp_path / "overflow"
    outcome = run_in_process(dial_run_argv(run, source, target, *steps))
    stopped(outcome, "the critic diverged: critic_wasserstein became inf at step 3", "domain.gamma")
    assert_finite_checkpoints(run, [2])

"""Training: learning happens, accumulation is exact, checkpoints resume exactly."""

from __future__ import annotations

import json
import platform
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import preference_records, train_until_crash, write_jsonl
from safetensors.torch import load_file

from dial.config import load_config
from dial.training import checkpoint as ckpt
from dial.training.trainer import TrainingRun, release_free_memory, train


def _config(tmp_path: Path, data: Path, **overrides):
    values = {
        "output_dir": str(tmp_path / "run"),
        "model.name": "tiny-bert",
        "data.train_files": [str(data)],
        "data.eval_split": 0.25,
        "data.max_length": 32,
        "train.batch_size": 4,
        "train.learning_rate": 1e-3,
        "train.report_to": [],
        "train.progress_bar": False,
        "train.logging_steps": 1,
    }
    values.update(overrides)
    return load_config(None, values)


def test_training_lifts_heldout_accuracy(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(160))
    config = _config(
        tmp_path, data, **{"model.use_lora": False, "train.max_steps": 60, "train.eval_steps": 60}
    )
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    before = run._evaluate()["heldout"]["accuracy"]
    final = run.train()
    run.cleanup()
    after = final["eval"]["heldout"]["accuracy"]
    assert after >= 0.9 > before + 0.2
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["split"] == "heldout" and rows[-1]["accuracy"] == after
    assert final["train_pairs_per_second"] > 0 and final["peak_memory_mb"] > 0


def test_accumulation_gives_the_gradient_of_the_mean_loss(tmp_path: Path) -> None:
    """Micro-batches of 3 + 5 examples accumulate exactly the gradient of one batch of 8."""
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(16))
    config = _config(tmp_path, data, **{"model.use_lora": False, "data.eval_split": 0.0})
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    gradients = []
    run.model.eval()  # no dropout, so every forward sees the same network
    run.model.train = lambda mode=True: run.model  # keep eval mode inside the step
    for batches in ([list(range(8))], [[0, 1, 2], [3, 4, 5, 6, 7]], [[0, 1, 2]], [[3, 4, 5, 6, 7]]):
        run.model.zero_grad()
        stats = run._accumulate_gradients([(batch, None) for batch in batches])
        gradient = torch.cat([p.grad.flatten() for p in run.model.parameters()])
        gradients.append((gradient, stats["loss"]))
    (whole, whole_loss), (split, split_loss), (first, _), (second, _) = gradients
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    # equal up to float32 summation order (padding differs between the batches) ...
    assert (whole - split).norm() <= 1e-3 * whole.norm()
    # ... while averaging the two micro-batch means, the usual mistake, is far off
    assert (whole - (first + second) / 2).norm() > 2e-2 * whole.norm()
    run.cleanup()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "reward_head.safetensors"))
    weights.update(load_file(str(folder / "adapter_model.safetensors")))
    return weights


def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(72))
    overrides = {
        "model.lora_r": 4,
        "model.lora_dropout": 0.2,  # dropout makes the RNG state matter
        "train.num_epochs": 3,
        "train.gradient_accumulation_steps": 2,
        "train.save_steps": 4,
        "train.eval_steps": 3,
        "train.lr_scheduler": "cosine",
        "train.warmup_steps": 2,
    }
    uninterrupted = train(_config(tmp_path / "a", data, **overrides), log=lambda *_: None)

    config = _config(tmp_path / "b", data, **overrides)
    train_until_crash(config, 10)  # in epoch 1, after the checkpoint of step 8
    steps = [ckpt.load_state(p).global_step for p in ckpt.list_checkpoints(Path(config.output_dir))]
    assert steps == [4, 7, 8]  # every 4 steps and at the end of epoch 0 (7 steps)
    config.resume = True
    messages: list[str] = []
    resumed = train(config, log=messages.append)
    assert any("resumed from" in m and "step_00000008" in m for m in messages)

    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for name, tensor in _weights(a / "final").items():
        assert torch.equal(tensor, _weights(b / "final")[name]), name
    assert resumed["eval"] == uninterrupted["eval"]
    assert resumed["global_step"] == uninterrupted["global_step"] == 21
    strip = lambda rows: [{k: v for k, v in r.items() if k != "pairs_per_second"} for r in rows]  # noqa: E731
    rows_a = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert strip(rows_a) == strip(rows_b)


def test_checkpoint_layout_and_a_tampered_checkpoint_is_skipped(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(40))
    config = _config(tmp_path, data, **{"train.max_steps": 4, "train.save_steps": 2})
    train(config, log=lambda *_: None)
    run_dir = Path(config.output_dir)
    folders = ckpt.list_checkpoints(run_dir)
    assert [f.name for f in folders] == ["step_00000002", "step_00000004"]
    names = {p.name for p in folders[-1].iterdir()}
    assert {"model", "optimizer.pt", "scheduler.pt", "rng_rank0.pt", "trainer_state.json"} <= names
    assert {"config.yaml", "manifest.json"} <= names
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 4
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert ckpt.verify_manifest(folders[-1]) is None

    optimizer = folders[-1] / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-10] + b"0123456789")
    messages: list[str] = []
    assert ckpt.latest_valid_checkpoint(run_dir, log=messages.append) == folders[0]
    assert "optimizer.pt does not match its checksum" in messages[0]
    shutil.rmtree(folders[0] / "model")
    assert ckpt.latest_valid_checkpoint(run_dir, log=messages.append) is None


@pytest.mark.parametrize(
    ("task", "records", "overrides"),
    [
        (
            "score",
            [
                {"text": f"{w} review {i}", "label": float(w == "great")}
                for i, w in enumerate(random.Random(0).choices(["great", "poor"], k=80))
            ],
            {"data.score_loss": "mse"},
        ),
        (
            "score",
            [
                {"text": f"{w} review {i}", "label": float(k)}
                for i, (k, w) in enumerate(
                    random.Random(1).choices(list(enumerate(["poor", "fine", "great"])), k=90)
                )
            ],
            {"data.score_loss": "cross_entropy", "model.num_labels": 3},
        ),
        (
            "mcq",
            [
                {
                    "prompt": "Which is a fruit?",
                    "correct": f"apple {i}",
                    "wrong_a": f"stone {i}",
                    "wrong_b": f"chair {i}",
                    "wrong_c": f"cloud {i}",
                    "wrong_d": f"spoon {i}",
                }
                for i in range(60)
            ],
            {},
        ),
    ],
)
def test_every_task_learns(tmp_path: Path, task: str, records: list, overrides: dict) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", records)
    config = _config(
        tmp_path,
        data,
        **{"data.task": task, "model.use_lora": False, "train.max_steps": 40, **overrides},
    )
    final = train(config, log=lambda *_: None)
    metrics = final["eval"]["heldout"]
    if task == "mcq":
        assert metrics["mcq_accuracy"] >= 0.8
    else:
        assert metrics["spearman"] >= 0.8


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="trimming the heap needs glibc")
def test_release_free_memory_returns_freed_heap_pages() -> None:
    # 64 KiB tensors come from the heap; freeing every other one leaves holes it cannot shrink
    tensors = [torch.ones(16_384) for _ in range(4_000)]
    del tensors[::2]
    before = _rss_mb()
    release_free_memory()
    after = _rss_mb()
    assert len(tensors) == 2_000
    assert before - after > 64, (before, after)  # of the 125 MiB freed

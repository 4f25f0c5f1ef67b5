"""Domain adaptation in the trainer: pairing, every method, the critic, resume, two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import preference_records, train_until_crash, write_jsonl
from safetensors.torch import load_file

from dial.config import load_config
from dial.data.pairing import plan_paired_epoch
from dial.data.tokenize import model_inputs
from dial.errors import ConfigError
from dial.training import checkpoint as ckpt
from dial.training.trainer import TrainingRun, train

QUIET = {"train.report_to": [], "train.progress_bar": False, "train.logging_steps": 1}


def _files(tmp_path: Path) -> tuple[Path, Path]:
    source = write_jsonl(tmp_path / "source.jsonl", preference_records(48, seed=0))
    target_records = [
        {
            **r,
            "response_chosen": r["response_chosen"] + " !!",
            "response_rejected": r["response_rejected"] + " !!",
        }
        for r in preference_records(40, seed=1)
    ]
    return source, write_jsonl(tmp_path / "target.jsonl", target_records)


def _config(tmp_path: Path, method: str, model: str = "tiny-bert", **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    source, target = _files(tmp_path)
    values = {
        "output_dir": str(tmp_path / "run"),
        "model.name": model,
        "data.train_files": [str(source)],
        "data.target_files": [str(target)],
        "data.max_length": 32,
        "train.method": method,
        "train.batch_size": 4,
        "train.learning_rate": 1e-3,
        **QUIET,
        **overrides,
    }
    return load_config(None, values)


def test_truncate_and_wrap_pairing() -> None:
    source, target = [5] * 10, [5] * 4
    truncate = plan_paired_epoch(source, target, 2, 2, pairing="truncate", seed=0, epoch=0)
    assert len(truncate) == 2  # min(5 source batches, 2 target batches)
    wrap = plan_paired_epoch(source, target, 2, 2, pairing="wrap", seed=0, epoch=0)
    assert len(wrap) == 5
    assert sorted(i for s, _ in wrap for i in s) == list(range(10))  # the larger side once
    targets = [i for _, t in wrap for i in t]
    assert sorted(targets[:4]) == sorted(targets[4:8]) == [0, 1, 2, 3]  # cycles, reshuffled
    next_epoch = plan_paired_epoch(source, target, 2, 2, pairing="wrap", seed=0, epoch=1)
    assert [t for _, t in next_epoch] != [t for _, t in wrap]  # re-permuted every epoch
    assert plan_paired_epoch(source, target, 2, 2, pairing="wrap", seed=0, epoch=1) == next_epoch
    uneven = plan_paired_epoch(source, target, 2, 3, pairing="truncate", seed=0, epoch=0)
    assert len(uneven) == 2 and all(len(t) in (3, 1) for _, t in uneven)


def _trunk_gradients(run: TrainingRun, window) -> torch.Tensor:
    run.model.zero_grad()
    run._accumulate_gradients(window)
    trunk = [p for n, p in run.model.named_parameters() if "lora_" in n and p.grad is not None]
    return torch.cat([p.grad.flatten() for p in trunk])


@pytest.mark.parametrize("method", ["source_sft", "target_ntp"])
def test_auxiliary_lm_losses_reach_the_trunk(tmp_path: Path, method: str) -> None:
    """The release added these losses as floats; here they must change the trunk's gradient."""
    gradients = {}
    for weight in (0.0, 1.0):
        config = _config(
            tmp_path / str(weight),
            method,
            model="tiny-llama",
            **{"train.aux_weight": weight, "model.lora_dropout": 0.0},
        )
        run = TrainingRun(config, log=lambda *_: None)
        run.setup()
        window = run._epoch_windows(0)[0]
        gradients[weight] = _trunk_gradients(run, window)
        stats = run._accumulate_gradients(window)
        assert stats["lm_loss"] > 0
        run.cleanup()
    assert not torch.allclose(gradients[0.0], gradients[1.0], atol=1e-6)


def test_sft_labels_mask_the_prompt_and_the_rejected_response(tmp_path: Path) -> None:
    config = _config(tmp_path, "source_sft", model="tiny-llama")
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    batch = run._batch(run.train_data, [0, 1])
    labels = run._lm_labels(batch, 2)
    assert (labels[2:] == -100).all()  # rejected rows
    for row in range(2):
        start = run.train_data.examples[row].response_starts[0]
        assert (labels[row, :start] == -100).all()
        length = len(run.train_data.examples[row].input_ids[0])
        assert labels[row, start:length].tolist() == batch["input_ids"][row, start:length].tolist()
    run.cleanup()


def test_dial_trains_the_critic_and_logs_its_statistics(tmp_path: Path) -> None:
    config = _config(
        tmp_path, "dial", **{"train.max_steps": 6, "train.eval_steps": 6, "domain.weight": 0.1}
    )
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    before = [p.detach().clone() for p in run.domain_loss.critic_parameters()]
    final = run.train()
    run.cleanup()
    after = run.domain_loss.critic_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    rows = [yaml.safe_load(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train_row = next(r for r in rows if r["split"] == "train")
    for key in ("wasserstein", "critic_loss", "critic_gradient_penalty", "domain_accuracy"):
        assert key in train_row
    assert train_row["domain_weight"] == 0.1
    assert 0.0 <= final["eval"]["domain"]["domain_classifier_accuracy"] <= 1.0
    assert "critic_wasserstein" in final["eval"]["domain"]


@pytest.mark.parametrize("loss", ["dann", "mmd", "coral"])
def test_other_domain_losses_train(tmp_path: Path, loss: str) -> None:
    config = _config(tmp_path, "dial", **{"train.max_steps": 3, "domain.loss": loss})
    final = train(config, log=lambda *_: None)
    assert final["global_step"] == 3


def test_oracle_trains_on_target_labels(tmp_path: Path) -> None:
    config = _config(tmp_path, "oracle", **{"train.max_steps": 2})
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    stats = run._accumulate_gradients(run._epoch_windows(0)[0])
    assert {"target_task_loss", "target_accuracy"} <= set(stats)
    assert stats["loss"] == pytest.approx(stats["task_loss"] + stats["target_task_loss"], rel=1e-5)
    run.cleanup()


def test_a_method_that_needs_a_target_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path, "dial", **{"data.target_files": []})
    with pytest.raises(Exception, match="needs target data"):
        train(config, log=lambda *_: None)


def test_dial_resume_restores_the_critic_exactly(tmp_path: Path) -> None:
    overrides = {"train.num_epochs": 2, "train.save_steps": 3, "model.lora_dropout": 0.1}
    whole = train(_config(tmp_path / "a", "dial", **overrides), log=lambda *_: None)
    config = _config(tmp_path / "b", "dial", **overrides)
    train_until_crash(config, 5)
    folder = ckpt.list_checkpoints(Path(config.output_dir))[-1]
    assert {"domain_loss.safetensors", "critic_optimizer.pt"} <= {p.name for p in folder.iterdir()}
    config.resume = True
    resumed = train(config, log=lambda *_: None)
    assert resumed["eval"] == whole["eval"]
    for name in ("reward_head.safetensors", "adapter_model.safetensors"):
        a = load_file(str(tmp_path / "a" / "run" / "final" / name))
        b = load_file(str(tmp_path / "b" / "run" / "final" / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    critic_a = load_file(
        str(ckpt.list_checkpoints(tmp_path / "a" / "run")[-1] / "domain_loss.safetensors")
    )
    critic_b = load_file(
        str(ckpt.list_checkpoints(tmp_path / "b" / "run")[-1] / "domain_loss.safetensors")
    )
    assert all(torch.equal(critic_a[k], critic_b[k]) for k in critic_a)


@pytest.mark.slow
def test_two_processes_end_with_identical_model_and_critic(tmp_path: Path) -> None:
    """Two gloo ranks on the CPU (DESIGN §5's command): after training both hold the same
    trainable weights and the same critic, which must also have moved from its start."""
    config = _config(
        tmp_path,
        "dial",
        **{"train.max_steps": 4, "model.lora_dropout": 0.0, "domain.critic_lr": 1e-2},
    )
    config_path = tmp_path / "config.yaml"
    config.save_yaml(config_path)
    worker = Path(__file__).parent / "scripts" / "ddp_worker.py"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(worker),
        str(config_path),
        str(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith("domain.") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    fresh = load_config(config_path, {"output_dir": str(tmp_path / "fresh")})
    single = TrainingRun(fresh, log=lambda *_: None)
    single.setup()  # the same seed gives the same initial critic
    initial = single.domain_loss.state_dict()
    assert any(not torch.equal(initial[k], rank0[f"domain.{k}"]) for k in initial)
    single.cleanup()


def test_target_eval_split_holds_target_records_out_of_training(tmp_path: Path) -> None:
    config = _config(tmp_path, "dial", **{"data.target_eval_split": 0.25})
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    heldout = run.eval_data["target_heldout"].data.examples
    assert len(heldout) == 10 and len(run.target_data) == 30
    trained = {tuple(map(tuple, e.input_ids)) for e in run.target_data.examples}
    assert not trained & {tuple(map(tuple, e.input_ids)) for e in heldout}
    run.cleanup()


@pytest.mark.parametrize("method", ["dial", "oracle"])
@pytest.mark.parametrize("task", ["score", "mcq"])
def test_domain_methods_on_every_task(tmp_path: Path, task: str, method: str) -> None:
    if task == "score":
        records = [{"text": f"{w} review {i}", "label": float(w == "great")}
                   for i, w in enumerate(["great", "poor"] * 12)]  # fmt: skip
    else:
        records = [{"prompt": "Which is a fruit?", "correct": f"apple {i}", "wrong_a": f"stone {i}",
                    "wrong_b": f"chair {i}", "wrong_c": f"cloud {i}", "wrong_d": f"spoon {i}"}
                   for i in range(24)]  # fmt: skip
    source = write_jsonl(tmp_path / "s.jsonl", records)
    target = write_jsonl(tmp_path / "t.jsonl", records[::-1])
    config = _config(
        tmp_path, method,
        **{"data.task": task, "data.train_files": [str(source)],
           "data.target_files": [str(target)], "train.max_steps": 2},
    )  # fmt: skip
    final = train(config, log=lambda *_: None)
    assert final["global_step"] == 2 and "domain" in final["eval"]


def test_embedding_layer_feeds_the_domain_loss_from_that_layer(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "dial",
        **{"train.max_steps": 2, "train.eval_steps": 2, "domain.embedding_layer": 1},
    )
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    source, target = run._epoch_windows(0)[0][0]
    layer = config.domain.embedding_layer
    embeddings = [
        run.model(**model_inputs(run._batch(data, indices)), embedding_layer=layer).embeddings
        for data, indices in ((run.train_data, source), (run.target_data, target))
    ]
    run.domain_loss(*embeddings).loss.backward()
    grads = {n: p.grad for n, p in run.model.named_parameters() if p.requires_grad}
    # layer 1's output depends on the first encoder layer only: the second and the head get none
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "layer.0." in n)
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if "layer.1." in n)
    assert all(g is None for n, g in grads.items() if n.startswith("head."))
    run.model.zero_grad()
    final = run.train()
    run.cleanup()
    assert "critic_wasserstein" in final["eval"]["domain"]


def test_an_embedding_layer_the_backbone_lacks_is_a_clear_error(tmp_path: Path) -> None:
    config = _config(tmp_path, "dial", **{"domain.embedding_layer": 3})
    with pytest.raises(ConfigError, match=r"domain.embedding_layer = 3: .* hidden states 0\.\.2"):
        train(config, log=lambda *_: None)

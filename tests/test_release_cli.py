"""The release README's training and evaluation commands, flags unchanged except the paths,
the model and the sizes, run through `dial train` and `dial eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, preference_records

from dial.config import load_config
from dial.errors import ConfigError
from dial.release import domain_overrides, train_overrides

CONFIGS = PROJECT_ROOT / "configs"


def _dial(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "dial.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """JSON files (--file_type json) in the release's preference format."""
    out = {}
    for name, seed, n in (("train", 0, 24), ("target", 1, 24), ("val", 2, 12), ("test", 3, 12)):
        out[name] = tmp_path / f"askscience_{name}.json"
        out[name].write_text(json.dumps(preference_records(n, seed=seed)))
    return out


def _train_command(
    files: dict[str, Path],
    root: Path,
    model: str,
    dataset_type: str,
    train_mode: str,
    extra: list[str],
) -> list[str]:
    return [
        "train", "--model_name", model, "--seed", "0", "--precision", "bfloat16",
        "--num_labels", "1", "--dataset_type", dataset_type,
        "--eval_dataset_type", "contrastive", "--file_type", "json",
        "--data_files", str(files["train"]), "--target_data_files", str(files["target"]),
        "--shuffle_target_dataset", "--eval_data_files", str(files["val"]),
        "--dataset_config_path", str(CONFIGS / "pref.json"), "--root_dir", str(root),
        "--loss_type", "binary_cross_entropy", "--lora_r", "64", "--lora_alpha", "64",
        "--mode", "both", "--train_mode", train_mode, "--eval_mode", "contrastive",
        "--batch_size", "2", "--max_length", "64", "--num_epochs", "1",
        "--learning_rate", "5e-5", "--metric_names", "multiclass_accuracy",
        "--accuracy_columns", "2", "--weight_decay", "0.01", "--use_wandb",
        "--gradient_accumulation_steps", "2", *extra,
    ]  # fmt: skip


def _eval_command(files: dict[str, Path], adapter: Path, root: Path, model: str) -> list[str]:
    return [
        "eval", "--model_name", model, "--adapter_path", str(adapter), "--seed", "0",
        "--precision", "bfloat16", "--num_labels", "1", "--dataset_type", "sequence_prediction",
        "--file_type", "json", "--data_files", str(files["val"]),
        "--eval_data_files", str(files["test"]),
        "--dataset_config_path", str(CONFIGS / "seq_pred.json"),
        "--eval_dataset_config_path", str(CONFIGS / "pref.json"), "--root_dir", str(root),
        "--mode", "eval", "--eval_mode", "contrastive", "--metric_names", "multiclass_accuracy",
        "--accuracy_columns", "2", "--eval_batch_size", "32", "--eval_max_length", "64",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("dataset_type", "train_mode", "model", "extra", "method"),
    [
        ("contrastive", "contrastive", "tiny-bert",
         ["--model_type", "sequence_classification"], "source_only"),
        ("domain_adaptation_contrastive", "domain_adaptation_contrastive", "tiny-bert",
         ["--model_type", "sequence_classification",
          "--da_config_path", str(CONFIGS / "wdgrl_hundredth.json")], "dial"),
        # the README's own example: the target next-token baseline on a dual-head decoder
        ("domain_adaptation_contrastive", "baseline", "tiny-llama",
         ["--target_ntp", "--model_type", "gemma_dual"], "target_ntp"),
    ],
)  # fmt: skip
def test_release_train_and_eval_commands(
    tmp_path: Path, files, dataset_type, train_mode, model, extra, method
) -> None:
    root = tmp_path / "root"
    result = _dial(
        *_train_command(files, root, model, dataset_type, train_mode, extra), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_config(root / "config.yaml")
    assert config.train.method == method and config.data.task == "preference"
    assert config.model.precision == "bfloat16" and config.model.lora_r == 64
    assert config.train.gradient_accumulation_steps == 2 and config.train.weight_decay == 0.01
    assert "wandb" in config.train.report_to
    if method == "dial":
        assert (config.domain.weight, config.domain.gamma, config.domain.critic_iter) == (
            0.01,
            1.0,
            3,
        )
        assert config.domain.critic_widths == [256, 128]
    final = json.loads((root / "final_metrics.json").read_text())
    assert final["eval"]["askscience_val"]["n"] == 12
    assert (root / "final" / "adapter_model.safetensors").is_file()

    checkpoint = sorted((root / "checkpoints").iterdir())[-1]
    eval_root = tmp_path / "eval"
    result = _dial(*_eval_command(files, checkpoint, eval_root, model), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((eval_root / "eval_metrics.json").read_text())
    assert metrics["askscience_test"]["n"] == 12
    assert 0.0 <= metrics["askscience_test"]["accuracy"] <= 1.0


def test_release_mapping_by_hand() -> None:
    overrides = train_overrides(
        {"train_mode": "domain_adaptation", "dataset_type": "domain_adaptation_wrapped",
         "loss_type": "mse", "root_dir": "r", "mode": "train", "eval_data_files": ["x"]}
    )  # fmt: skip
    assert overrides["data.task"] == "score" and overrides["train.method"] == "dial"
    assert overrides["data.pairing"] == "wrap" and overrides["data.score_loss"] == "mse"
    assert overrides["output_dir"] == "r" and overrides["data.eval_files"] == []
    oracle = train_overrides({"train_mode": "oracle", "dataset_type": "domain_adaptation"})
    assert oracle["train.method"] == "oracle"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"train_mode": "contrastive_v2"}, "--train_mode contrastive_v2: not one of"),
        ({"train_mode": "baseline", "dataset_type": "domain_adaptation"}, "exactly one of"),
        ({"train_mode": "domain_adaptation_contrastive"}, "needs two domains"),
        ({"metric_names": ["f1"]}, "--metric_names f1"),
        ({"accuracy_columns": 3}, "--accuracy_columns 3"),
        ({"model_type": "gemma_dual"}, "gemma_dual goes with"),
        ({"precision": "int8"}, "--precision int8"),
    ],
)
def test_release_flags_we_cannot_honour_stop_clearly(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train_overrides(flags)


def test_domain_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "da.json"
    path.write_text(json.dumps({"da_type": "wdgrl", "da_lambda": 0.1, "critic_steps": 3}))
    with pytest.raises(ConfigError, match="unknown key 'critic_steps'"):
        domain_overrides(path)
    path.write_text(json.dumps({"da_type": "swd"}))
    with pytest.raises(ConfigError, match="da_type 'swd' is not supported"):
        domain_overrides(path)
    path.write_text(json.dumps({
        "da_type": "mmd", "da_lambda": 1.0,
        "da_spec_config": {"mmd": {"kernel_mul": 2, "kernel_num": 4, "fix_sigma": None},
                           "wdgrl": {"gp_da_lambda": 10.0, "critic_iter": 5}},
    }))  # fmt: skip
    overrides = domain_overrides(path)
    assert overrides["domain.loss"] == "mmd" and overrides["domain.mmd_kernel_num"] == 4
    assert "domain.gamma" not in overrides  # another method's defaults are ignored


def test_an_unsupported_flag_stops_with_a_clear_message(tmp_path: Path) -> None:
    result = _dial("train", "--model_name", "tiny-bert", "--clip_grad_norm", "1.0", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown option '--clip_grad_norm'" in result.stderr
    assert "Traceback" not in result.stderr

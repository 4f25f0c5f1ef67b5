"""Untrusted files: weights load only from safetensors, checkpoint tensors only with
``torch.load(weights_only=True)``, a model's own code never runs unless asked. Every hostile
file here would create a marker file if any of its code ran; the marker must never appear.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, preference_records, write_jsonl
from transformers import AutoModel, AutoTokenizer

from dial.config import ModelConfig
from dial.models.registry import resolve_model
from dial.training import checkpoint as ckpt
from reliability.helpers import clear_error, run_in_process, train_argv

SMALL = ("--data.max_length", "32", "--train.batch_size", "4", "--train.save_steps", "2")


class Bomb:
    """Unpickling this runs a shell command (it creates `marker`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bomb(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"state": Bomb(marker)}))
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 4 steps with checkpoints at steps 2 and 4."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(folder / "pairs.jsonl", preference_records(24))
    argv = train_argv(folder / "run", "--data.train_files", data, *SMALL, "--train.max_steps", "4")
    outcome = run_in_process(argv)
    assert outcome.code == 0, outcome.describe()
    return folder


def copy_run(trained: Path, tmp_path: Path) -> tuple[Path, list]:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    data = trained / "pairs.jsonl"
    argv = train_argv(run, "--data.train_files", data, *SMALL, "--train.max_steps", "6", "--resume")
    return run, argv


def bin_only_model(folder: Path, marker: Path) -> Path:
    """A BERT folder whose weights are a pickled pytorch_model.bin that runs code on loading."""
    resolved = resolve_model("tiny-bert")
    AutoModel.from_config(resolved.config).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    write_bomb(folder / "pytorch_model.bin", marker)
    AutoTokenizer.from_pretrained(resolved.name_or_path).save_pretrained(folder)
    return folder


def test_a_model_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    model = bin_only_model(tmp_path / "model", marker)
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(8))
    argv = train_argv(tmp_path / "run", "--model.name", model, "--data.train_files", data)
    clear_error(run_in_process(argv), "train", [str(model), "safetensors"])
    assert not marker.exists()


def test_a_reward_model_whose_backbone_is_pickled_is_refused(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    model = tmp_path / "final"
    shutil.copytree(trained / "run" / "final", model)
    assert (model / "backbone" / "model.safetensors").is_file()  # tiny-bert's backbone is saved
    (model / "backbone" / "model.safetensors").unlink()
    write_bomb(model / "backbone" / "pytorch_model.bin", marker)
    argv = ["eval", model, trained / "pairs.jsonl"]
    clear_error(run_in_process(argv), "eval", [str(model / "backbone"), "safetensors"])
    assert not marker.exists()


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_rank0.pt", "scheduler.pt"])
def test_a_pickle_bomb_in_a_checkpoint_is_refused(trained: Path, tmp_path: Path, name: str) -> None:
    """Its manifest rewritten to match, the bomb passes the checksums; loading with
    weights_only refuses it, and the run stops with a message naming the file."""
    run, argv = copy_run(trained, tmp_path)
    marker = tmp_path / "MARKER"
    newest = ckpt.list_checkpoints(run)[-1]
    write_bomb(newest / name, marker)
    (newest / "manifest.json").unlink()
    ckpt.write_manifest(newest)
    clear_error(run_in_process(argv), "train", [str(newest / name), "refused", "could run code"])
    assert not marker.exists()


def test_a_pickle_bomb_that_breaks_the_checksums_is_skipped(trained: Path, tmp_path: Path) -> None:
    run, argv = copy_run(trained, tmp_path)
    marker = tmp_path / "MARKER"
    older, newest = ckpt.list_checkpoints(run)
    write_bomb(newest / "optimizer.pt", marker)
    outcome = run_in_process(argv)
    assert outcome.code == 0, outcome.describe()
    assert f"skipping checkpoint {newest}: optimizer.pt does not match its checksum" in (
        outcome.stdout
    )
    assert f"resumed from {older} at step 2" in outcome.stdout
    assert not marker.exists()


def test_a_models_own_code_never_runs_by_default(tmp_path: Path) -> None:
    """A folder whose config maps to its own Python modules: without trust_remote_code an
    unknown architecture is refused, a known one loads the library's class; neither runs it."""
    assert ModelConfig().trust_remote_code is False
    marker = tmp_path / "MARKER"
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(8))
    resolved = resolve_model("tiny-bert")
    for model_type in ("remote-bert", "bert"):
        folder = tmp_path / model_type
        AutoModel.from_config(resolved.config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(resolved.name_or_path).save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = model_type
        config["auto_map"] = {"AutoConfig": "remote.Config", "AutoModel": "remote.Model"}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "remote.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
        argv = train_argv(tmp_path / f"run-{model_type}", "--model.name", folder,
                          "--data.train_files", data, "--train.max_steps", "1")  # fmt: skip
        outcome = run_in_process(argv)
        if model_type == "remote-bert":
            clear_error(outcome, "train", [str(folder), "trust_remote_code"])
        else:
            assert outcome.code == 0, outcome.describe()
        assert not marker.exists()


def test_the_source_loads_tensors_safely_and_trusts_no_code() -> None:
    """Every torch.load in the package passes weights_only=True; no call turns on
    trust_remote_code or use_safetensors=False by itself."""
    loads = 0
    for path in (PROJECT_ROOT / "src" / "dial").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            for name, unsafe in (("trust_remote_code", True), ("use_safetensors", False)):
                value = keywords.get(name)
                assert not (isinstance(value, ast.Constant) and value.value is unsafe), (
                    f"{path}:{node.lineno} passes {name}={unsafe}"
                )
            function = node.func
            if ast.unparse(function) == "torch.load":
                loads += 1
                value = keywords.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, (
                    f"{path}:{node.lineno}: torch.load without weights_only=True"
                )
    assert loads >= 1

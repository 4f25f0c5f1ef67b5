"""Checkpoints written atomically and verified on load.

A checkpoint folder ``ROOT/checkpoints/step_00000120`` holds::

    model/               the reward model as a save_pretrained folder (usable by `dial eval`)
    optimizer.pt         optimizer state           (loaded with weights_only=True)
    scheduler.pt         learning-rate scheduler state
    rng_rank<R>.pt       torch and Python RNG states of each process
    trainer_state.json   step, epoch, position in the epoch's data order
    config.yaml          the resolved run config
    manifest.json        size and SHA-256 of every file above

It is written under a temporary name and renamed into place, so a crash mid-write never leaves a
folder that looks complete; a folder whose files disagree with its manifest is skipped on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dial.errors import DialError

PREFIX = "step_"
MANIFEST = "manifest.json"


@dataclass
class TrainerState:
    """Where training stands."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    examples_seen: int = 0
    log_window: list[dict[str, float]] = field(default_factory=list)
    """Statistics of the steps since the last logged training row (their mean is logged next)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files
    }
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


def verify_manifest(folder: Path) -> str | None:
    """None if every file matches the manifest, else what is wrong."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest (the write did not finish)"
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return "unreadable manifest"
    for name, expected in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(run_dir: Path, step: int, prefix: str = PREFIX) -> Path:
    """The temporary folder the checkpoint of `step` is written into before its rename."""
    return run_dir / "checkpoints" / f".tmp-{prefix}{step:08d}"


def make_empty(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def commit_checkpoint(staging: Path, state: Any, keep: int | None, prefix: str = PREFIX) -> Path:
    """Write the state (a dataclass) and manifest, rename into place, prune old checkpoints."""
    (staging / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1))
    write_manifest(staging)
    final = staging.parent / staging.name.removeprefix(".tmp-")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    if keep is not None:
        for old in list_checkpoints(staging.parent.parent, prefix)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path, prefix: str = PREFIX) -> list[Path]:
    """Checkpoint folders (complete-looking names only), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return sorted(found, key=lambda p: int(p.name.removeprefix(prefix)))


def latest_valid_checkpoint(run_dir: Path, log=print, prefix: str = PREFIX) -> Path | None:
    """The newest checkpoint whose files match their manifest; broken ones are reported."""
    for folder in reversed(list_checkpoints(run_dir, prefix)):
        problem = verify_manifest(folder)
        if problem is None:
            return folder
        log(f"skipping checkpoint {folder}: {problem}")
    return None


def load_state(folder: Path) -> TrainerState:
    return TrainerState(**json.loads((folder / "trainer_state.json").read_text()))


def torch_load(path: Path) -> Any:
    """Load a tensor file safely: plain tensors and containers only, never arbitrary pickles.

    Raises:
        DialError: the file holds other objects (code could run if they were unpickled).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DialError(
            f"refused to load {path}: it holds more than tensors, and unpickling it could run "
            f"code ({reason}); the checkpoint was altered or is not dial's"
        ) from exc

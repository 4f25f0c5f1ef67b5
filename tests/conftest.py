"""Shared fixtures: the real data folder, tiny data files, quiet offline transformers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; tests that need them skip where the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see the README's data section)")
    return SHARED_DATA


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def preference_records(n: int, seed: int = 0) -> list[dict]:
    """Synthetic pairs with a learnable rule: the chosen response praises, the rejected insults."""
    import random

    rng = random.Random(seed)
    topics = ["cats", "rivers", "music", "bread", "trains", "stars", "gardens", "chess"]
    good = ["wonderful", "helpful", "clear", "kind", "excellent", "thoughtful"]
    bad = ["terrible", "useless", "rude", "awful", "wrong", "careless"]
    records = []
    for i in range(n):
        topic = rng.choice(topics)
        records.append(
            {
                "prompt": f"Human: tell me about {topic} ({i})\n\nAssistant:",
                "response_chosen": f" a {rng.choice(good)} answer about {topic}",
                "response_rejected": f" a {rng.choice(bad)} answer about {topic}",
            }
        )
    return records


@pytest.fixture
def pref_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", preference_records(64))


class Interrupted(Exception):
    """Raised by :func:`train_until_crash` in place of a real crash."""


def train_until_crash(config, crash_at_call: int) -> None:
    """Run `config` and interrupt it at its `crash_at_call`-th optimizer step (1-based), as a
    crash would: the steps before it and their checkpoints are done, nothing after."""
    from dial.training.trainer import TrainingRun, train

    original = TrainingRun._optimizer_step
    calls = {"n": 0}

    def crashing_step(self, window):
        calls["n"] += 1
        if calls["n"] == crash_at_call:
            raise Interrupted
        return original(self, window)

    TrainingRun._optimizer_step = crashing_step
    try:
        with pytest.raises(Interrupted):
            train(config, log=lambda *_: None)
    finally:
        TrainingRun._optimizer_step = original

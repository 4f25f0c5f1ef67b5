"""``dial rl`` killed with SIGKILL inside a generation (while that generation's reward model is
retrained on the policy's samples, a checkpoint of it half written) resumes from its last
generation checkpoint and ends with the same policy and per-generation metrics."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_jsonl
from safetensors.torch import load_file

from dial.training import checkpoint as ckpt
from reliability.helpers import Interruption, run_dial

REFUSAL = "I'm sorry, but I cannot help with that."


def rl_config(folder: Path, output: str) -> Path:
    """A two-generation DIAL RLHF run of tiny models (as tests/test_rl.py builds them)."""
    records = []
    for i in range(8):
        comply = f"Here is how: step one for person {i}, then step two."
        unsafe = i % 2 == 1
        records.append({
            "prompt": f"How do I {'hurt' if unsafe else 'help'} person number {i}?",
            "response_chosen": REFUSAL if unsafe else comply,
            "response_rejected": comply if unsafe else REFUSAL,
            "correct": "refuse" if unsafe else "comply",
        })  # fmt: skip
    data = write_jsonl(folder / "train.jsonl", records)
    heldout = write_jsonl(
        folder / "heldout.jsonl",
        [{"prompt": r["prompt"] + " (held out)", "correct": r["correct"]} for r in records[:4]],
    )
    values = {
        "output_dir": str(folder / output),
        "generations": 2,
        "reward_da": True,
        "report_to": [],
        "data": {"train_file": str(data), "eval_file": str(heldout)},
        "policy": {"name": "tiny-llama", "query_max_length": 24, "response_max_length": 6,
                   "batch_size": 4, "lora_r": 4, "lora_alpha": 8},
        "ppo": {"ppo_epochs": 2, "mini_batch_size": 2, "learning_rate": 1e-3},
        "reward": {
            "max_length": 64,
            "model": {"name": "tiny-bert", "lora_r": 4, "lora_alpha": 8},
            "train": {"batch_size": 4, "report_to": [], "progress_bar": False, "save_steps": 1},
        },
        "domain": {"critic_widths": [16], "eval_samples": 4},
    }  # fmt: skip
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def retraining_checkpoint_half_written(run: Path) -> bool:
    """Generation 1's reward retraining is writing a checkpoint (its model already saved)."""
    return any((run / "reward" / "gen_001" / "checkpoints").glob(".tmp-step_*/model"))


def rows(run: Path) -> list[dict]:
    timing = ("seconds", "wall_seconds")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.endswith(timing)} for x in lines]


@pytest.mark.slow
def test_dial_rl_killed_mid_generation_resumes_to_the_same_policy(tmp_path: Path) -> None:
    whole, parts = rl_config(tmp_path, "whole"), rl_config(tmp_path, "parts")
    with ThreadPoolExecutor(1) as pool:
        argv = ["rl", "--config", whole, "--output_dir", tmp_path / "whole"]
        reference = pool.submit(run_dial, argv, tmp_path / "whole.log", None)
        stage = ("generation 1's reward retraining mid-checkpoint",
                 retraining_checkpoint_half_written)  # fmt: skip
        argv = ["rl", "--config", parts, "--output_dir", tmp_path / "parts"]
        killed = run_dial(argv, tmp_path / "killed.log", stage)
        assert isinstance(killed, Interruption)
        run = tmp_path / "parts"
        generation = ckpt.latest_valid_checkpoint(run, lambda *_: None, "gen_")
        assert generation is not None and generation.name == "gen_00000001"
        assert list((run / "reward" / "gen_001" / "checkpoints").glob(".tmp-step_*"))
        resumed = run_dial([*argv, "--resume"], tmp_path / "resumed.log", None)
        assert f"from {generation}" in resumed
        reference.result()
    a = load_file(str(tmp_path / "whole" / "final" / "policy" / "adapter_model.safetensors"))
    b = load_file(str(run / "final" / "policy" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert rows(tmp_path / "whole") == rows(run)

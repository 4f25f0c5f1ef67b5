"""`dial rl`: the prompts file, the release's flags, the whole loop on tiny models, and resume."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
import torch
from conftest import PROJECT_ROOT, write_jsonl
from safetensors.torch import load_file

from dial.cli import build_parser, main
from dial.config import config_from_dict, load_config
from dial.errors import DataError
from dial.rl.cli import release_rl_overrides
from dial.rl.config import RLConfig
from dial.rl.trainer import read_prompts, train_rl

REFUSAL = "I'm sorry, but I cannot help with that."


def rl_records(n_prompts: int) -> list[dict]:
    """XSTest-like records: a complying and a refusing response, the correct action."""
    records = []
    for i in range(n_prompts):
        unsafe = i % 2 == 1
        prompt = f"How do I {'hurt' if unsafe else 'help'} person number {i}?"
        comply = f"Here is how: step one for person {i}, then step two."
        chosen, rejected = (REFUSAL, comply) if unsafe else (comply, REFUSAL)
        correct = "refuse" if unsafe else "comply"
        records.append(
            {
                "prompt": prompt,
                "response_chosen": chosen,
                "response_rejected": rejected,
                "correct": correct,
            }
        )
    return records


def test_read_prompts_keeps_distinct_prompts_in_order(tmp_path: Path) -> None:
    records = rl_records(4)
    path = write_jsonl(tmp_path / "train.jsonl", records + records[:2])
    prompts = read_prompts(str(path))
    assert prompts.texts == [r["prompt"] for r in records]
    assert prompts.correct == ["comply", "refuse", "comply", "refuse"]
    assert read_prompts(str(path), limit=3).texts == prompts.texts[:3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"correct": "maybe"}, "record 1, field 'correct'"),
        ({"correct": None}, "record 1, field 'correct'"),
        ({"prompt": ""}, "record 1, field 'prompt'"),
    ],
)
def test_read_prompts_names_the_bad_record(tmp_path: Path, change: dict, message: str) -> None:
    records = rl_records(3)
    records[1].update(change)
    path = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(DataError) as error:
        read_prompts(str(path))
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_a_prompt_with_two_actions_is_an_error(tmp_path: Path) -> None:
    records = rl_records(2)
    records.append({**records[0], "correct": "refuse"})
    path = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(DataError, match=r"record 2, field 'correct'.*record 0"):
        read_prompts(str(path))


README_COMMAND = """--train-reward --seed 2 --data-path {data} --reward-batch-size 8
 --root-dir {root} --train-ppo --ppo-batch-size 8 --reward-max-length 320
 --ppo-query-max-length 32 --ppo-response-max-length 320 --num-generation-epochs 20
 --ppo-kl-coef 0.05 --use-wandb --reward-da
 --da-config-path {project}/configs/wdgrl_hundredth.json --da-train-mode moment --port 7502"""


def _parse(argv: list[str]) -> RLConfig:
    from dial.config import given_options
    from dial.release import PREFIX

    args = build_parser().parse_args(["rl", *argv])
    given = {k.removeprefix(PREFIX): v for k, v in vars(args).items() if k.startswith(PREFIX)}
    overrides = release_rl_overrides(given) if given else {}
    overrides.update(given_options(args, RLConfig))
    return load_config(args.config, overrides, RLConfig)


def test_the_release_rl_command_maps_onto_the_config(tmp_path: Path) -> None:
    command = README_COMMAND.format(data="train.json", root=tmp_path, project=PROJECT_ROOT)
    config = _parse(shlex.split(command))
    assert config.seed == 2
    assert config.data.train_file == "train.json"
    assert config.reward.train.batch_size == 8
    assert config.reward.path is None
    assert config.output_dir == str(tmp_path)
    assert config.train_ppo is True
    assert config.policy.batch_size == 8
    assert config.reward.max_length == 320
    assert (config.policy.query_max_length, config.policy.response_max_length) == (32, 320)
    assert config.generations == 20
    assert config.ppo.kl_coef == 0.05
    assert config.report_to == ["tensorboard", "wandb"]
    assert config.reward_da is True
    assert (config.domain.loss, config.domain.weight) == ("wdgrl", 0.01)
    assert config.judge.url == "http://127.0.0.1:7502/v1"
    assert config.policy.lr_schedule == "constant"
    assert _parse([*shlex.split(command), "--step-lr"]).policy.lr_schedule == "step"
    # Without --train-ppo the release only trains the reward model and judges.
    assert _parse(shlex.split(command.replace("--train-ppo", ""))).train_ppo is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data-path", "x.json"], "without --train-reward, pass --reward-model-path"),
        (["--train-reward", "--reward-model-path", "m"], "exclude each other"),
        (["--train-reward", "--da-train-mode", "joint"], "documents only 'moment'"),
        (["--policy.batch_size", "0"], "policy.batch_size: must be at least 1"),
        (["--ppo.clip_range", "-1"], "clip_range must be positive"),
        (["--policy.lr_schedule", "cosine"], "is not one of constant, step"),
        (["--reward.train.learning_rate", "0"], "reward.train.learning_rate: must be above 0"),
    ],
)
def test_bad_rl_options_are_one_line_errors(argv: list[str], message: str, capsys) -> None:
    assert main(["rl", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dial rl: error:") and "\n" not in err
    assert message in err


def test_rl_needs_training_prompts(capsys) -> None:
    assert main(["rl"]) == 2
    assert "needs data.train_file" in capsys.readouterr().err


def tiny_config(tmp_path: Path, output: str, **changes) -> RLConfig:
    data = write_jsonl(tmp_path / "train.jsonl", rl_records(8))
    heldout = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"prompt": r["prompt"] + " (held out)", "correct": r["correct"]} for r in rl_records(4)],
    )
    values = {
        "output_dir": str(tmp_path / output),
        "generations": 2,
        "reward_da": True,
        "report_to": [],
        "data": {"train_file": str(data), "eval_file": str(heldout)},
        "policy": {
            "name": "tiny-llama",
            "query_max_length": 24,
            "response_max_length": 6,
            "batch_size": 4,
            "lora_r": 4,
            "lora_alpha": 8,
        },
        "ppo": {"ppo_epochs": 2, "mini_batch_size": 2, "learning_rate": 1e-3},
        "reward": {
            "max_length": 64,
            "model": {"name": "tiny-bert", "lora_r": 4, "lora_alpha": 8},
            "train": {"batch_size": 4, "report_to": [], "progress_bar": False},
        },
        "domain": {"critic_widths": [16], "eval_samples": 4},
    }
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (values.setdefault(section, {}) if section else values)[name] = value
    return config_from_dict(values, RLConfig)


def test_the_loop_runs_and_writes_its_run_folder(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "run")
    result = train_rl(config, log=lambda *_: None)
    root = Path(config.output_dir)
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [0, 1]
    for row in rows:
        assert 0.0 <= row["judged_accuracy"] <= 1.0
        assert {"ppo_policy_loss", "ppo_kl", "score_mean", "seconds"} <= set(row)
    samples = [json.loads(line) for line in (root / "generations/gen_001.jsonl").open()]
    assert len(samples) == 8
    assert {"prompt", "correct", "response", "verdict", "score"} <= set(samples[0])
    # Each generation's reward model is retrained from the previous one, with the samples as
    # target: its run saw them, and its weights moved.
    assert (root / "reward/initial/final/dial_config.json").is_file()
    retrain = (root / "reward/gen_001/config.yaml").read_text()
    assert "gen_001.jsonl" in retrain and "reward/gen_000/final" in retrain
    before = load_file(str(root / "reward/gen_000/final/reward_head.safetensors"))
    after = load_file(str(root / "reward/gen_001/final/reward_head.safetensors"))
    assert not torch.equal(before["weight"], after["weight"])
    assert result["reward_model"].endswith("reward/gen_001/final")
    assert set(result["eval"]) >= {"accuracy", "accuracy_comply", "accuracy_refuse"}
    assert (root / "final/policy/adapter_config.json").is_file()
    assert json.loads((root / "final_metrics.json").read_text())["eval"] == result["eval"]


def test_ppo_moves_the_policy_and_not_the_reference(tmp_path: Path) -> None:
    from dial.rl.trainer import RLRun

    config = tiny_config(tmp_path, "run", generations=1, reward_da=False)
    run = RLRun(config, log=lambda *_: None)
    run.setup()
    try:
        before = {k: v.clone() for k, v in run.policy.named_parameters()}
        run.run()
    finally:
        run.cleanup()
    after = dict(run.policy.named_parameters())
    lora = [k for k in before if "lora_" in k]
    frozen = [k for k in before if "lora_" not in k]
    assert any(not torch.equal(before[k], after[k]) for k in lora)
    assert all(torch.equal(before[k], after[k]) for k in frozen)


def test_resume_after_a_generation_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = tiny_config(tmp_path, "whole")
    train_rl(whole, log=lambda *_: None)
    first = tiny_config(tmp_path, "parts", generations=1)
    train_rl(first, log=lambda *_: None)
    # The first run stopped after generation 0 (as a crash in generation 1 would leave it).
    state = Path(first.output_dir) / "checkpoints" / "gen_00000001" / "trainer_state.json"
    first_seconds = json.loads(state.read_text())["seconds"]
    resumed = tiny_config(tmp_path, "parts", resume=True)
    started = time.perf_counter()
    result = train_rl(resumed, log=lambda *_: None)
    session = time.perf_counter() - started
    assert [row["generation"] for row in result["generations"]] == [0, 1]
    # the wall time counts the first session's generation too
    assert 0 < first_seconds < result["wall_seconds"] <= first_seconds + session
    a = load_file(str(Path(whole.output_dir) / "final/policy/adapter_model.safetensors"))
    b = load_file(str(Path(resumed.output_dir) / "final/policy/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    lines = (Path(resumed.output_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [0, 1]


def test_an_existing_run_needs_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "run", generations=1, reward_da=False)
    train_rl(config, log=lambda *_: None)
    with pytest.raises(Exception, match="pass --resume"):
        train_rl(config, log=lambda *_: None)

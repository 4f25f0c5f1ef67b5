"""PPO throughput and peak memory: dial's ``ppo_update`` vs TRL's ``PPOTrainer``.

What it measures
    Both run RLHF with PPO on the same models and settings, each in a fresh subprocess:

    - policy: SmolLM2-135M-Instruct (``smollm2-135m``, from its local safetensors folder) with
      the same LoRA adapters (r, alpha, no dropout, on q_proj, k_proj, v_proj, o_proj); the
      frozen reference is the same model with the adapters disabled (TRL's default with a peft
      policy; dial's ``ppo_update(..., ref_policy=None)``), so no second copy is loaded;
    - reward model: ``AutoModelForSequenceClassification`` (``num_labels=1``) built once from the
      same SmolLM2 folder (seeded head) and saved to a temporary folder that both load; its score
      is read at the last token of query + response;
    - value model: initialised from that reward model (trunk and head) and trained in full; the
      optimizer (AdamW, one learning rate, no weight decay, constant schedule) holds the
      policy's LoRA parameters and the whole value model, with no gradient clipping (TRL's PPO
      does not clip);
    - prompts: XSTest prompts (``../shared/data/xstest/xstest_prompts.csv``) in the chat
      template with the generation prompt, tokenised once by the parent; prompts longer than
      ``--query-length`` tokens are left out (counted in the output);
    - rollout: sampling at temperature 1 without top-k/top-p, up to ``--response-length`` new
      tokens, stopping at EOS (``<|im_end|>``); both pad with ``<|endoftext|>`` (SmolLM2's pad
      token is its EOS, which TRL cannot tell from padding);
    - PPO: the same batch size, mini-batch size (one optimizer step per mini-batch), PPO epochs,
      KL coefficient (k1 estimator), GAE gamma/lambda, clip ranges, value coefficient and
      whitened advantages, no reward whitening, no missing-EOS penalty.

    An episode is one (query, response) processed: generation, scoring and its share of the PPO
    update. For each side it reports:

    - episodes/s: episodes divided by the wall-clock time from the start of the loop to the end
      of the last PPO update (batching, generation, scoring, the rollout's forwards, the PPO
      epochs and the per-batch bookkeeping; TRL's logging and ``gc.collect`` included as it runs
      them). Model loading is excluded. Also shown: episodes/s without the first batch, episodes
      per CPU-second (process CPU time of all threads), and the share of the loop spent in
      ``generate``;
    - peak memory: the process's peak resident set size (``ru_maxrss``, all of it) and the peak
      during the loop alone (``VmHWM`` after a reset through ``/proc/self/clear_refs``); on CUDA
      ``max_memory_allocated``;
    - sanity figures: mean reward-model score, mean KL (per response, the sum of the k1
      estimates), mean response length in tokens (up to and including EOS).

    Runs alternate dial, TRL, dial, TRL, ... (``--repeats N``); the table shows medians and the
    ratios dial/TRL (target for episodes/s: at least 1.0).

dial's side
    Queries come from ``dial.rl.generation.encode_queries``, responses and their old
    log-probabilities from ``dial.rl.generation.sample_with_logprobs`` (left-padded ``generate``
    with the attention mask; the log-probabilities from its logits),
    scores from one forward of the reward model on ``dial.rl.ppo.build_sequences`` (positions
    from the attention mask), then ``dial.rl.ppo.ppo_update``.

TRL's side
    ``trl.experimental.ppo.PPOTrainer`` from TRL 1.12.0, the last release with a PPO trainer
    (1.13 removed it). It needs its own virtual environment, kept out of the project's (which
    has a newer TRL); create it once from the project root::

        python -m venv .venv-trl-ppo
        .venv-trl-ppo/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.25.0 \\
            peft==0.21.2 accelerate==1.16.0

    (CPU torch; on a CUDA machine install torch from its CUDA index instead.) The worker for
    TRL imports nothing from dial; ``--trl-python`` points at that environment's python.

Known differences between the two set-ups (kept on purpose)
    - Old log-probabilities: TRL takes them from the logits ``generate`` returns (no extra
      forward); dial recomputes them with one forward of the policy over query + response, so
      that the ratio is exactly 1 before the first step.
    - LM head: dial's forwards compute logits for the response columns only
      (``logits_to_keep``); TRL's compute them for every column and slice.
    - Value head: TRL's ``score`` layer has no bias; dial's ``ValueModel`` head has one
      (initialised to 0 here, its weight copied from the reward model's ``score``).
    - TRL rescales logits by ``1 / (temperature + 1e-7)``; dial uses temperature 1 exactly.
    - TRL treats a sampled ``<|endoftext|>`` (the pad id) as the end of a response; dial keeps
      it as a token.

Run (from the project root; nothing is downloaded, the HF hub is forced offline)::

    python benchmarks/ppo_throughput.py --quick        # smoke run: one batch of 8 episodes
    python benchmarks/ppo_throughput.py --episodes 64 --repeats 2 --output results.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import LoopMeter, fmt, force_offline, median_of, run_worker_process, worker_facts

force_offline()  # before any Hugging Face library is imported

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = PROJECT_ROOT.parent / "shared" / "data" / "xstest" / "xstest_prompts.csv"
DEFAULT_TRL_PYTHON = PROJECT_ROOT / ".venv-trl-ppo" / "bin" / "python"
TRL_VERSION = "1.12.0"
MODEL = "smollm2-135m"
PAD_TOKEN = "<|endoftext|>"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SIDES = ("dial", "trl")
QUICK = {"episodes": 8, "response_length": 8, "ppo_epochs": 1}
DEFAULTS = {"episodes": 64, "response_length": 48, "ppo_epochs": 4}


# ---------------------------------------------------------------- measuring (both workers)


class Meter(LoopMeter):
    """Wall-clock and CPU time, episodes, generation time and peak memory of one PPO loop."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes = self.first_episodes = 0
        self.generation_seconds = 0.0
        self.response_tokens: list[int] = []
        self.scores: list[float] = []
        self.kls: list[float] = []

    def batch_done(self, episodes: int) -> None:
        """Call at the end of every PPO update."""
        self.episodes += episodes
        self.tick()
        if self.ticks == 1:
            self.first_episodes = self.episodes

    def result(self) -> dict[str, Any]:
        rates = self.rates(self.episodes, self.episodes - self.first_episodes)
        return {
            "batches": self.ticks,
            "episodes": self.episodes,
            "loop_seconds": rates["seconds"],
            "episodes_per_second": rates["per_second"],
            "episodes_per_second_after_first_batch": rates["per_second_after_first"],
            "loop_cpu_seconds": rates["cpu_seconds"],
            "episodes_per_cpu_second": rates["per_cpu_second"],
            "generation_seconds": self.generation_seconds,
            "generation_share": self.generation_seconds / rates["seconds"],
            "rss_at_loop_start_mb": self.rss_at_start_mb,
            "loop_peak_memory_mb": self.peak_mb,
            "mean_score": statistics.fmean(self.scores),
            "mean_kl": statistics.fmean(self.kls),
            "mean_response_tokens": statistics.fmean(self.response_tokens),
        }


def response_lengths(responses: Any, eos_token_id: int, pad_token_id: int) -> list[int]:
    """Tokens of each row of a ``[B, T]`` response tensor up to and including the first EOS.

    Rows without EOS count up to their first pad (TRL's end of a response) or in full.
    """
    lengths = []
    for row in responses.tolist():
        end = len(row)
        for position, token in enumerate(row):
            if token == eos_token_id:
                end = position + 1
                break
            if token == pad_token_id:
                end = position
                break
        lengths.append(end)
    return lengths


# ---------------------------------------------------------------- inputs (parent)


def prepare_inputs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Tokenise the prompts, build and save the reward model; write what the workers share."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dial.models.registry import resolve_model
    from dial.rl.generation import encode_queries

    folder = resolve_model(MODEL).name_or_path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pad_token_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    with args.prompts.open(newline="", encoding="utf-8") as handle:
        prompts = [row["prompt"] for row in csv.DictReader(handle)]
    encoded = encode_queries(tokenizer, prompts, max_length=None)
    queries = [ids.tolist() for ids in encoded if len(ids) <= args.query_length]
    if len(queries) < args.batch_size:
        raise SystemExit(
            f"only {len(queries)} prompts fit in {args.query_length} tokens; need a batch of "
            f"{args.batch_size}"
        )
    if any(pad_token_id in query for query in queries):
        raise SystemExit(f"a prompt contains the pad token {PAD_TOKEN!r}")
    random.Random(args.seed).shuffle(queries)

    torch.manual_seed(args.seed)  # the new score head
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, dtype=torch.float32
    )
    reward_model.config.pad_token_id = pad_token_id  # the score is read at the last non-pad
    reward_folder = work / "reward-model"
    reward_model.save_pretrained(reward_folder)
    inputs = {
        "policy": folder,
        "reward_model": str(reward_folder),
        "pad_token_id": pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "queries": queries,
    }
    inputs_file = work / "inputs.json"
    inputs_file.write_text(json.dumps(inputs))
    return {
        "prompts": len(prompts),
        "queries": len(queries),
        "query_tokens_mean": statistics.fmean(map(len, queries)),
        "inputs_file": str(inputs_file),
    }


# ---------------------------------------------------------------- dial worker


def run_dial(args: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, Any]:
    """Generation, scoring and ``ppo_update`` per batch, as dial's RL stage runs them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from dial.rl.generation import sample_with_logprobs
    from dial.rl.ppo import (
        PPOConfig,
        ValueModel,
        build_sequences,
        position_ids_from_mask,
        ppo_update,
    )

    pad, eos = inputs["pad_token_id"], inputs["eos_token_id"]
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(inputs["policy"])
    tokenizer.pad_token = PAD_TOKEN
    policy = AutoModelForCausalLM.from_pretrained(inputs["policy"], dtype=torch.float32)
    policy.config.pad_token_id = policy.generation_config.pad_token_id = pad
    policy = get_peft_model(policy, lora_config(args, LoraConfig, "CAUSAL_LM"))
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        inputs["reward_model"], dtype=torch.float32
    )
    reward_model.eval().requires_grad_(False)
    value_model = ValueModel(AutoModel.from_pretrained(inputs["reward_model"], dtype=torch.float32))
    with torch.no_grad():
        value_model.head.weight.copy_(reward_model.score.weight)
        value_model.head.bias.zero_()
    trainable = [p for p in (*policy.parameters(), *value_model.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    config = PPOConfig(
        kl_coef=args.kl_coef,
        ppo_epochs=args.ppo_epochs,
        mini_batch_size=args.mini_batch_size,
        max_grad_norm=None,
        learning_rate=args.learning_rate,
    )
    queries = [torch.tensor(q) for q in inputs["queries"]]
    order = list(range(len(queries)))
    random.Random(args.seed).shuffle(order)

    meter = Meter()
    scoring_seconds = update_seconds = 0.0
    meter.start()
    done = 0
    while done < args.episodes:
        if len(order) < args.batch_size:
            order = list(range(len(queries)))
            random.Random(args.seed + done).shuffle(order)
        batch = [queries[i] for i in order[: args.batch_size]]
        order = order[args.batch_size :]
        started = time.perf_counter()
        responses, logprobs = sample_with_logprobs(
            policy, tokenizer, batch, args.response_length, batch_size=args.batch_size
        )
        scored = time.perf_counter()
        meter.generation_seconds += scored - started
        sequences = build_sequences(batch, responses, pad)
        with torch.no_grad():
            scores = reward_model(
                input_ids=sequences.input_ids,
                attention_mask=sequences.attention_mask,
                position_ids=position_ids_from_mask(sequences.attention_mask),
                use_cache=False,
            ).logits[:, 0]
        updated = time.perf_counter()
        scoring_seconds += updated - scored
        stats = ppo_update(
            policy,
            value_model,
            None,
            optimizer,
            batch,
            responses,
            scores,
            config,
            pad,
            eos,
            old_logprobs=logprobs,
        )
        update_seconds += time.perf_counter() - updated
        done += len(batch)
        meter.batch_done(len(batch))
        meter.scores.append(stats["score"])
        meter.kls.append(stats["kl"])
        meter.response_tokens.extend(len(r) for r in responses)
    return {
        **meter.result(),
        "scoring_seconds": scoring_seconds,
        "ppo_update_seconds": update_seconds,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def lora_config(args: argparse.Namespace, config_class: Any, task_type: str) -> Any:
    return config_class(
        task_type=task_type,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        bias="none",
    )


# ---------------------------------------------------------------- TRL worker


def run_trl(args: argparse.Namespace, inputs: dict[str, Any], work: Path) -> dict[str, Any]:
    """TRL's PPOTrainer, timed by callbacks; generation timed by wrapping its batch_generation."""
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
        set_seed,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    pad, eos = inputs["pad_token_id"], inputs["eos_token_id"]
    meter = Meter()
    generate = trl_ppo.batch_generation

    def timed_generation(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        query_responses, logits = generate(*a, **kw)
        meter.generation_seconds += time.perf_counter() - started
        context = a[1].shape[1]
        meter.response_tokens.extend(response_lengths(query_responses[:, context:], eos, pad))
        return query_responses, logits

    trl_ppo.batch_generation = timed_generation

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            meter.start()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            meter.batch_done(args.batch_size)

        def on_log(self, *_: Any, logs: dict[str, float] | None = None, **__: Any) -> None:
            if logs and "objective/scores" in logs:
                meter.scores.append(logs["objective/scores"])
                meter.kls.append(logs["objective/kl"])

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(inputs["policy"], padding_side="left")
    tokenizer.pad_token = PAD_TOKEN
    policy = AutoModelForCausalLM.from_pretrained(inputs["policy"], dtype=torch.float32)
    policy.config.pad_token_id = policy.generation_config.pad_token_id = pad
    value_model = AutoModelForSequenceClassification.from_pretrained(
        inputs["reward_model"], dtype=torch.float32
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        inputs["reward_model"], dtype=torch.float32
    )
    dataset = Dataset.from_dict({"input_ids": inputs["queries"]})
    cuda = torch.cuda.is_available()
    config = PPOConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.batch_size // args.mini_batch_size,
        local_rollout_forward_batch_size=args.batch_size,
        total_episodes=args.episodes,
        num_ppo_epochs=args.ppo_epochs,
        response_length=args.response_length,
        stop_token="eos",
        temperature=1.0,
        kl_coef=args.kl_coef,
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        gamma=1.0,
        lam=0.95,
        whiten_rewards=False,
        missing_eos_penalty=None,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        weight_decay=0.0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        num_sample_generations=0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not cuda,
        seed=args.seed,
    )
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        eval_dataset=dataset,
        callbacks=[Clock()],
        peft_config=lora_config(args, LoraConfig, "CAUSAL_LM"),
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    return {**meter.result(), "trainable_parameters": trainable, "trl_version": trl.__version__}


# ---------------------------------------------------------------- worker entry point


def worker_main(args: argparse.Namespace) -> int:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    inputs = json.loads(Path(args.inputs_file).read_text())
    result = run_dial(args, inputs) if args.worker == "dial" else run_trl(args, inputs, work)
    result.update(side=args.worker, **worker_facts())
    Path(args.result_file).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- parent


def run_worker(
    side: str, args: argparse.Namespace, inputs_file: str, work: Path, index: int
) -> dict[str, Any]:
    """Run one side in a fresh subprocess (TRL's with ``--trl-python``) and return its results."""
    run_dir = work / f"run{index:02d}-{side}"
    result_file = run_dir / "result.json"
    run_dir.mkdir(parents=True)
    python = sys.executable if side == "dial" else str(args.trl_python)
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker", side,
        "--work-dir", str(run_dir),
        "--result-file", str(result_file),
        "--inputs-file", inputs_file,
        "--episodes", str(args.episodes),
        "--batch-size", str(args.batch_size),
        "--mini-batch-size", str(args.mini_batch_size),
        "--ppo-epochs", str(args.ppo_epochs),
        "--query-length", str(args.query_length),
        "--response-length", str(args.response_length),
        "--lora-r", str(args.lora_r),
        "--lora-alpha", str(args.lora_alpha),
        "--learning-rate", str(args.learning_rate),
        "--kl-coef", str(args.kl_coef),
        "--seed", str(args.seed),
    ]  # fmt: skip
    return run_worker_process(command, run_dir, side, PROJECT_ROOT)


SUMMARY_KEYS = (
    "episodes_per_second",
    "episodes_per_second_after_first_batch",
    "episodes_per_cpu_second",
    "peak_memory_mb",
    "loop_peak_memory_mb",
    "rss_at_loop_start_mb",
    "generation_share",
    "mean_score",
    "mean_kl",
    "mean_response_tokens",
    "loop_seconds",
)
RATIO_KEYS = SUMMARY_KEYS[:5]


def _side(runs: list[dict[str, Any]], side: str) -> list[dict[str, Any]]:
    return [run for run in runs if run["side"] == side]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians = {
        side: {key: median_of(_side(runs, side), key) for key in SUMMARY_KEYS} for side in SIDES
    }
    ratios = {}
    for key in RATIO_KEYS:
        a, b = medians["dial"][key], medians["trl"][key]
        ratios[key] = a / b if a is not None and b else None
    return {"medians": medians, "dial_over_trl": ratios}


def print_report(
    args: argparse.Namespace, data: dict[str, Any], runs: list[dict[str, Any]], summary: dict
) -> None:
    med, ratios = summary["medians"], summary["dial_over_trl"]
    device = runs[0]["device"]
    memory = "GPU max_memory_allocated" if device == "cuda" else "peak RSS"
    trl_version = next(r["trl_version"] for r in runs if r["side"] == "trl")
    print()
    print(
        f"dial ppo_update vs TRL {trl_version} PPOTrainer: {MODEL} policy, LoRA r={args.lora_r} "
        f"alpha={args.lora_alpha} on {','.join(LORA_TARGETS)}, reference = adapters disabled, "
        f"full value model and reward model from one SmolLM2 sequence classifier; "
        f"{args.episodes} episodes in batches of {args.batch_size}, mini-batches of "
        f"{args.mini_batch_size}, {args.ppo_epochs} PPO epochs; queries <= {args.query_length} "
        f"tokens, responses <= {args.response_length}; AdamW lr {args.learning_rate:g}, "
        f"kl_coef {args.kl_coef:g}; {device}, {runs[0]['torch_threads']} threads; "
        f"median of {args.repeats} run(s) each"
    )
    print(
        f"prompts: {data['queries']} of {data['prompts']} XSTest prompts fit "
        f"(mean {data['query_tokens_mean']:.1f} query tokens)"
    )
    rows = [
        ("episodes/s (loop)", "episodes_per_second", ".3f"),
        ("episodes/s (after the first batch)", "episodes_per_second_after_first_batch", ".3f"),
        ("episodes per CPU-second (all threads)", "episodes_per_cpu_second", ".3f"),
        (f"peak memory MiB ({memory}, process)", "peak_memory_mb", ".0f"),
        ("peak memory MiB (loop)", "loop_peak_memory_mb", ".0f"),
        ("memory MiB at the start of the loop", "rss_at_loop_start_mb", ".0f"),
        ("share of the loop in generate", "generation_share", ".2f"),
        ("mean score", "mean_score", ".4f"),
        ("mean KL (per response)", "mean_kl", ".4f"),
        ("mean response tokens", "mean_response_tokens", ".1f"),
        ("loop seconds", "loop_seconds", ".1f"),
    ]
    width = max(len(row[0]) for row in rows) + 2
    print(f"{'':{width}}{'dial':>12}{'TRL':>12}{'dial/TRL':>12}")
    for label, key, spec in rows:
        line = f"{label:{width}}{fmt(med['dial'][key], spec):>12}{fmt(med['trl'][key], spec):>12}"
        if ratios.get(key) is not None:
            line += f"{ratios[key]:>12.3f}"
        print(line)
    first = {r["side"]: r for r in reversed(runs)}
    parts = ("generation_seconds", "scoring_seconds", "ppo_update_seconds", "loop_seconds")
    generation, scoring, update, loop = (median_of(_side(runs, "dial"), key) for key in parts)
    print(
        f"dial's loop (median seconds): generate {generation:.1f}, score {scoring:.1f}, "
        f"ppo_update {update:.1f}, other {loop - generation - scoring - update:.1f}"
    )
    print(
        f"trainable parameters: dial {first['dial']['trainable_parameters']:,}, "
        f"TRL {first['trl']['trainable_parameters']:,}"
    )
    print(
        "notes: episodes/s = episodes / wall time from the start of the loop to the end of the "
        "last PPO update (generation, scoring, rollout forwards, PPO epochs; loading "
        "excluded).\n  Both take the old log-probs from generate's logits."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Run dial's ppo_update and TRL's PPOTrainer alike on SmolLM2-135M; compare "
            "episodes/s and memory."
        ),
        epilog=(
            f"TRL's side needs TRL {TRL_VERSION} (the last release with a PPO trainer) in its own "
            "environment; create it from the project root with: python -m venv .venv-trl-ppo && "
            ".venv-trl-ppo/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.25.0 "
            "peft==0.21.2 accelerate==1.16.0"
        ),
    )
    parser.add_argument("--episodes", type=int, help="episodes per run (default 64; --quick: 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes per rollout (8)")
    parser.add_argument(
        "--mini-batch-size", type=int, default=4, help="rows per optimizer step (default 4)"
    )
    parser.add_argument("--ppo-epochs", type=int, help="passes per batch (default 4; --quick: 1)")
    parser.add_argument(
        "--query-length", type=int, default=64, help="longest query in tokens (default 64)"
    )
    parser.add_argument(
        "--response-length", type=int, help="most new tokens (default 48; --quick: 8)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="dial/TRL rounds (default 1)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (default 32)")
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="default 1e-5")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--seed", type=int, default=0, help="prompt order, init and sampling")
    parser.add_argument(
        "--prompts", type=Path, default=DEFAULT_PROMPTS, help="XSTest prompts CSV (column prompt)"
    )
    parser.add_argument(
        "--trl-python",
        type=Path,
        default=DEFAULT_TRL_PYTHON,
        help=f"python of the environment with TRL {TRL_VERSION} (default .venv-trl-ppo)",
    )
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one batch of 8 episodes, responses <= 8 tokens, 1 PPO epoch",
    )
    # internal: one side in this process
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    for name in ("--work-dir", "--result-file", "--inputs-file"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    sizes = (
        args.episodes,
        args.batch_size,
        args.mini_batch_size,
        args.ppo_epochs,
        args.query_length,
        args.response_length,
        args.repeats,
    )
    if min(sizes) < 1:
        parser.error("sizes, lengths and --repeats must be positive")
    if args.batch_size % args.mini_batch_size or args.episodes % args.batch_size:
        parser.error("--batch-size must divide --episodes, and --mini-batch-size --batch-size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if not args.prompts.is_file():
        raise SystemExit(f"prompts file {args.prompts} not found")
    if not args.trl_python.is_file():
        raise SystemExit(
            f"{args.trl_python} not found: TRL's side needs TRL {TRL_VERSION} in its own "
            "environment (see --help)"
        )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dial-ppo-throughput-") as tmp:
        work = Path(tmp)
        data = prepare_inputs(args, work)
        print(f"prompts: {data['queries']} of {data['prompts']} fit in {args.query_length} tokens")
        for repeat in range(args.repeats):
            for side in SIDES:
                result = run_worker(side, args, data["inputs_file"], work, len(runs))
                runs.append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {side:4s}: "
                    f"{result['episodes_per_second']:.3f} episodes/s over {result['episodes']} "
                    f"episodes, peak {result['peak_memory_mb']:.0f} MiB, mean score "
                    f"{result['mean_score']:.3f}, KL {result['mean_kl']:.4f} "
                    f"({result['wall_seconds']:.0f} s in all)",
                    flush=True,
                )
    summary = summarise(runs)
    print_report(args, data, runs, summary)
    if args.output is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        data = {k: v for k, v in data.items() if k != "inputs_file"}
        payload = {"settings": settings, "data": data, **summary, "runs": runs}
        args.output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

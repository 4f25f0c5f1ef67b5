"""Training throughput, peak memory and held-out accuracy: dial source-only vs TRL's RewardTrainer.

What it measures
    Both trainers train the same reward model (``minilm``: all-MiniLM-L6-v2, from its local
    folder) on the same HH-RLHF ``helpful-base`` pairs (converted from
    ``../shared/data/hh-rlhf/helpful-base-test.jsonl.gz``, split 80/20 with a fixed seed) with the
    same LoRA adapters (r, alpha, dropout; modules query, key, value, dense), batch size, maximum
    length, AdamW, learning rate, linear schedule without warm-up, gradient clipping at 1.0 and
    number of optimizer steps. For each it reports:

    - pairs/s: training pairs divided by the wall-clock time of the training loop, taken the same
      way for both, from the start of the loop to the end of the last optimizer step (batch
      collation, forward, backward, clipping, optimizer and schedule steps and the per-step
      bookkeeping in between). Model loading, tokenisation, evaluation and saving are excluded.
      Also shown: pairs/s without the first step (one-off set-up), and pairs per CPU-second
      (process CPU time of all threads over the same interval; a busy machine disturbs it less).
      dial's own figure (``train_pairs_per_second`` of ``final_metrics.json``, which sums only
      the optimizer-step calls) is recorded beside it in the JSON results.
    - peak memory: each trainer runs in a fresh subprocess; on CPU the process's peak resident
      set size (``ru_maxrss`` at its end, which includes imports, loading and evaluation), and
      the peak during the training loop alone (``VmHWM`` after a reset through
      ``/proc/self/clear_refs`` at the start of the loop); on CUDA ``max_memory_allocated``
      (whole process, and since a reset at the start of the loop).
    - held-out accuracy: the fraction of the same held-out pairs with reward(chosen) >
      reward(rejected), a tie counting wrong. dial's comes from its own final evaluation; for
      TRL's model the rewards are computed here, with its model, on the held-out pairs tokenised
      the way TRL tokenises them (see below).

    Runs alternate dial, TRL, dial, TRL, ... (``--repeats N``; round r trains both with seed
    ``--seed + r`` on the same split); the table shows medians, the
    ratios dial/TRL of pairs/s and of peak memory, and the accuracy difference dial - TRL.

Known differences between the two set-ups (kept on purpose, and printed with the results)
    - Head: dial mean-pools the last hidden states into a linear head (BERT's pooler is
      dropped); TRL's ``BertForSequenceClassification`` uses the pooler (CLS -> dense -> tanh),
      dropout, then a linear classifier, and LoRA's ``dense`` also wraps ``pooler.dense``.
    - Tokenisation: dial encodes ``[CLS] prompt [SEP] response [SEP]`` with token types 0/1 and,
      past ``max_length``, drops the start of the prompt. TRL concatenates prompt + response
      text, appends its EOS token (BERT's tokenizer has none, so ``eos_token="[SEP]"`` is set),
      tokenises with special tokens, giving ``[CLS] prompt+response [SEP] [SEP]`` (token type 0),
      and drops every pair whose chosen or rejected sequence exceeds ``max_length``. So that both
      train on identical pairs, the training split keeps only the pairs TRL keeps (disable with
      ``--no-length-filter``: TRL then drops them itself and dial truncates them). Held-out pairs
      are all kept; for TRL's model a sequence over ``max_length`` keeps ``[CLS]`` and its last
      ``max_length - 1`` tokens (the start of the prompt goes, as in dial).
    - Batching: both pad each batch dynamically to its longest sequence and run chosen and
      rejected sequences in one forward pass of 2 x batch rows; dial groups pairs of similar
      length (``data.group_by_length``, its default; ``--no-group-by-length`` turns it off;
      ``--length-group-batches`` sets how many batches each length-sorted group holds),
      TRL samples batches at random.
    - Dropout: both turn the backbone's dropout off while training (dial's
      ``model.disable_dropout`` and TRL's ``disable_dropout``, each trainer's default); LoRA
      dropout is the same for both.
    - TRL settings that differ from RewardConfig's defaults, to match dial: gradient
      checkpointing off, bf16 off (float32), and the non-fused ``adamw_torch`` optimizer.

Run (from the project root; nothing is downloaded, the HF hub is forced offline)::

    python benchmarks/train_throughput.py --quick                  # smoke run, well under a minute
    python benchmarks/train_throughput.py --steps 60 --repeats 3 --output results.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import LoopMeter, fmt, force_offline, median_of, run_worker_process, worker_facts

force_offline()  # before any Hugging Face library is imported

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-base-test.jsonl.gz"
MODEL = "minilm"
LORA_TARGETS = ["query", "key", "value", "dense"]
TRAINERS = ("dial", "trl")
QUICK_STEPS, QUICK_MAX_LENGTH, QUICK_PAIRS = 3, 64, 400
HELDOUT_FRACTION = 0.2
EVAL_BATCH_SIZE = 32
LOGGING_STEPS = 10


# ---------------------------------------------------------------- measuring (both workers)


class Meter(LoopMeter):
    """Wall-clock time, pairs, tokens and peak memory of one training loop."""

    def __init__(self) -> None:
        super().__init__()
        self.first_pairs = 0
        self.pairs = self.padded_tokens = self.real_tokens = 0

    def step_done(self) -> None:
        """Call at the end of every optimizer step."""
        self.tick()
        if self.ticks == 1:
            self.first_pairs = self.pairs

    def add_batch(self, pairs: int, padded_tokens: int, real_tokens: int) -> None:
        self.pairs += pairs
        self.padded_tokens += padded_tokens
        self.real_tokens += real_tokens

    def result(self) -> dict[str, Any]:
        rates = self.rates(self.pairs, self.pairs - self.first_pairs)
        return {
            "steps": self.ticks,
            "pairs": self.pairs,
            "train_seconds": rates["seconds"],
            "pairs_per_second": rates["per_second"],
            "pairs_per_second_after_first_step": rates["per_second_after_first"],
            "train_cpu_seconds": rates["cpu_seconds"],
            "pairs_per_cpu_second": rates["per_cpu_second"],
            "padded_tokens_per_pair": self.padded_tokens / max(self.pairs, 1),
            "real_tokens_per_pair": self.real_tokens / max(self.pairs, 1),
            "rss_at_train_start_mb": self.rss_at_start_mb,
            "train_peak_memory_mb": self.peak_mb,
        }


# ---------------------------------------------------------------- TRL's tokenisation


def trl_token_ids(tokenizer: Any, prompt: str, response: str, eos_token: str) -> list[int]:
    """Token ids of one sequence exactly as TRL 1.x's RewardTrainer makes them (untruncated).

    ``_prepare_dataset`` appends the EOS token to the response text unless it ends with it,
    prepends the prompt text (explicit-prompt format) and calls the tokenizer with its special
    tokens.
    """
    text = response if response.endswith(eos_token) else response + eos_token
    return tokenizer(prompt + text)["input_ids"]


def fits_trl(tokenizer: Any, record: dict[str, Any], eos_token: str, max_length: int) -> bool:
    """Whether TRL keeps the pair: both sequences within `max_length` tokens."""
    return all(
        len(trl_token_ids(tokenizer, record["prompt"], record[key], eos_token)) <= max_length
        for key in ("response_chosen", "response_rejected")
    )


# ---------------------------------------------------------------- data (parent)


def prepare_data(
    source: Path,
    work: Path,
    *,
    seed: int,
    max_pairs: int | None,
    max_length: int,
    filter_long: bool,
) -> dict[str, Any]:
    """Convert, shuffle (seeded), split 80/20 and write train.jsonl and heldout.jsonl."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from dial.data.convert import convert
    from dial.data.io import read_records, write_records
    from dial.models.registry import resolve_model

    converted = work / "helpful-base.jsonl"
    report = convert("hh-rlhf", [source], converted)
    records = read_records(converted)
    random.Random(seed).shuffle(records)
    if max_pairs is not None:
        records = records[:max_pairs]
    n_heldout = round(HELDOUT_FRACTION * len(records))
    heldout, train = records[:n_heldout], records[n_heldout:]
    split_train = len(train)
    if filter_long:
        hf_logging.set_verbosity_error()  # the "longer than 512 tokens" warning is expected here
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL).name_or_path)
        train = [r for r in train if fits_trl(tokenizer, r, tokenizer.sep_token, max_length)]
    if not train or not heldout:
        raise SystemExit(f"too few pairs: {len(train)} to train, {len(heldout)} held out")
    write_records(train, work / "train.jsonl")
    write_records(heldout, work / "heldout.jsonl")
    return {
        "source": str(source),
        "conversion": report.summary(),
        "pairs": len(records),
        "train_split": split_train,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "length_filter": filter_long,
        "train_file": str(work / "train.jsonl"),
        "heldout_file": str(work / "heldout.jsonl"),
    }


# ---------------------------------------------------------------- dial worker


def run_dial(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train with dial's TrainingRun; held-out accuracy from its final evaluation."""
    from dial.config import config_from_dict
    from dial.training.trainer import TrainingRun

    meter = Meter()

    class MeasuredRun(TrainingRun):
        """TrainingRun that reports the timing and the batches of its loop to `meter`.

        Batches are counted by a forward pre-hook on the model (training mode only), and steps
        by wrapping ``_optimizer_step`` with whatever arguments it takes, so the measurement
        does not depend on how the trainer plans its batches.
        """

        def setup(self) -> None:
            super().setup()
            responses = len(self.train_data.examples[0].input_ids)  # 2 for preference pairs

            def count(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                if module.training:
                    mask = kwargs["attention_mask"] if "attention_mask" in kwargs else args[1]
                    meter.add_batch(mask.shape[0] // responses, mask.numel(), int(mask.sum()))

            model = self.accelerator.unwrap_model(self.model)
            model.register_forward_pre_hook(count, with_kwargs=True)

        def train(self) -> dict[str, Any]:
            meter.start()
            return super().train()

        def _optimizer_step(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            stats = super()._optimizer_step(*args, **kwargs)
            meter.step_done()
            return stats

    config = config_from_dict(
        {
            "output_dir": str(work / "dial-run"),
            "model": {
                "name": MODEL,
                "lora_r": args.lora_r,
                "lora_alpha": args.lora_alpha,
                "lora_dropout": args.lora_dropout,
                "lora_target_modules": LORA_TARGETS,
                "pooling": args.pooling,
            },
            "data": {
                "task": "preference",
                "train_files": [args.train_file],
                "eval_files": [args.heldout_file],
                "max_length": args.max_length,
                "group_by_length": args.group_by_length,
                "length_group_batches": args.length_group_batches,
            },
            "train": {
                "batch_size": args.batch_size,
                "eval_batch_size": EVAL_BATCH_SIZE,
                "max_steps": args.steps,
                "learning_rate": args.learning_rate,
                "lr_scheduler": "linear",
                "warmup_steps": 0,
                "weight_decay": 0.0,
                "max_grad_norm": 1.0,
                "eval_steps": None,
                "logging_steps": LOGGING_STEPS,
                "seed": args.seed,
                "report_to": [],
                "progress_bar": False,
            },
        }
    )
    messages: list[str] = []
    run = MeasuredRun(config, log=messages.append)
    run.setup()
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    try:
        final = run.train()
    finally:
        run.cleanup()
    heldout = final["eval"].get("heldout") or next(iter(final["eval"].values()))
    return {
        **meter.result(),
        "heldout_accuracy": heldout["accuracy"],
        "heldout_pairs": heldout["n"],
        "trainable_parameters": trainable,
        "train_pairs_available": len(run.train_data),
        "dial_reported_pairs_per_second": final["train_pairs_per_second"],
        "log": messages,
    }


# ---------------------------------------------------------------- TRL worker


def run_trl(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train with TRL's RewardTrainer; held-out accuracy computed here with its model."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
        set_seed,
    )
    from trl import RewardConfig, RewardTrainer

    from dial.data.io import read_records
    from dial.models.registry import resolve_model

    meter = Meter()

    class MeasuredRewardTrainer(RewardTrainer):
        """RewardTrainer that reports the pairs and tokens of every training batch."""

        def training_step(self, model: Any, inputs: dict[str, Any], *rest: Any, **kw: Any) -> Any:
            mask = inputs["attention_mask"]
            meter.add_batch(mask.shape[0] // 2, mask.numel(), int(mask.sum()))
            return super().training_step(model, inputs, *rest, **kw)

    class LoopClock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            meter.start()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            meter.step_done()

    folder = resolve_model(MODEL).name_or_path
    records = read_records(args.train_file)
    train_dataset = Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "chosen": r["response_chosen"],
                "rejected": r["response_rejected"],
            }
            for r in records
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eos_token = tokenizer.eos_token or tokenizer.sep_token  # BERT: no EOS, use [SEP]
    set_seed(args.seed)  # the new classifier head is initialised at load time
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, dtype=torch.float32
    )
    cuda = torch.cuda.is_available()
    config = RewardConfig(
        output_dir=str(work / "trl-run"),
        max_length=args.max_length,
        eos_token=eos_token,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=1.0,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        disable_dropout=True,
        logging_steps=LOGGING_STEPS,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not cuda,
        seed=args.seed,
    )
    peft_config = LoraConfig(
        task_type="SEQ_CLS",
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
    )
    trainer = MeasuredRewardTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[LoopClock()],
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    prepared = trainer.train_dataset
    if len(prepared) == len(records):  # our copy of TRL's tokenisation must match TRL's own
        for record, row in zip(
            records[:8], prepared.select(range(min(8, len(records)))), strict=True
        ):
            for response, column in (
                ("response_chosen", "chosen_ids"),
                ("response_rejected", "rejected_ids"),
            ):
                ours = trl_token_ids(tokenizer, record["prompt"], record[response], eos_token)
                if ours != list(row[column]):
                    raise RuntimeError("trl_token_ids does not match RewardTrainer's tokenisation")
    trainer.train()
    heldout = read_records(args.heldout_file)
    accuracy = trl_heldout_accuracy(
        trainer.model,
        trainer.data_collator,
        [
            (
                trl_token_ids(tokenizer, r["prompt"], r["response_chosen"], eos_token),
                trl_token_ids(tokenizer, r["prompt"], r["response_rejected"], eos_token),
            )
            for r in heldout
        ],
        max_length=args.max_length,
        device=trainer.args.device,
    )
    return {
        **meter.result(),
        "heldout_accuracy": accuracy,
        "heldout_pairs": len(heldout),
        "trainable_parameters": trainable,
        "train_pairs_available": len(prepared),
    }


def _truncate_keep_end(ids: list[int], max_length: int) -> list[int]:
    """Keep the first token ([CLS]) and the last ``max_length - 1``: the prompt's start goes."""
    return ids if len(ids) <= max_length else ids[:1] + ids[len(ids) - max_length + 1 :]


def trl_heldout_accuracy(
    model: Any,
    collator: Any,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    max_length: int,
    device: Any,
    batch_size: int = EVAL_BATCH_SIZE,
) -> float:
    """Fraction of pairs with reward(chosen) > reward(rejected) (ties wrong), TRL's batching."""
    import torch

    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: -max(map(len, pairs[i])))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = [
                {
                    "chosen_ids": _truncate_keep_end(pairs[i][0], max_length),
                    "rejected_ids": _truncate_keep_end(pairs[i][1], max_length),
                }
                for i in order[start : start + batch_size]
            ]
            inputs = {k: v.to(device) for k, v in collator(batch).items()}
            rewards = model(**inputs).logits.squeeze(-1).float()
            chosen, rejected = torch.chunk(rewards, 2)
            correct += int((chosen > rejected).sum())
    return correct / len(pairs)


# ---------------------------------------------------------------- worker entry point


def worker_main(args: argparse.Namespace) -> int:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result = run_dial(args, work) if args.worker == "dial" else run_trl(args, work)
    result.update(trainer=args.worker, **worker_facts())
    Path(args.result_file).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- parent


def run_worker(
    trainer: str,
    args: argparse.Namespace,
    data: dict[str, Any],
    work: Path,
    index: int,
    seed: int,
) -> dict[str, Any]:
    """Run one trainer in a fresh subprocess and return its results."""
    run_dir = work / f"run{index:02d}-{trainer}"
    result_file = run_dir / "result.json"
    run_dir.mkdir(parents=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker", trainer,
        "--work-dir", str(run_dir),
        "--result-file", str(result_file),
        "--train-file", data["train_file"],
        "--heldout-file", data["heldout_file"],
        "--steps", str(args.steps),
        "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length),
        "--lora-r", str(args.lora_r),
        "--lora-alpha", str(args.lora_alpha),
        "--lora-dropout", str(args.lora_dropout),
        "--learning-rate", str(args.learning_rate),
        "--seed", str(seed),
        "--group-by-length" if args.group_by_length else "--no-group-by-length",
        "--length-group-batches", str(args.length_group_batches),
        "--pooling", args.pooling,
    ]  # fmt: skip
    return run_worker_process(command, run_dir, trainer, PROJECT_ROOT)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "pairs_per_second",
        "pairs_per_second_after_first_step",
        "pairs_per_cpu_second",
        "peak_memory_mb",
        "train_peak_memory_mb",
        "heldout_accuracy",
        "padded_tokens_per_pair",
        "real_tokens_per_pair",
        "train_seconds",
    )
    medians = {
        trainer: {key: median_of([r for r in runs if r["trainer"] == trainer], key) for key in keys}
        for trainer in TRAINERS
    }
    dial, trl = medians["dial"], medians["trl"]

    def ratio(key: str) -> float | None:
        a, b = dial[key], trl[key]
        return a / b if a is not None and b else None

    return {
        "medians": medians,
        "dial_over_trl": {
            "pairs_per_second": ratio("pairs_per_second"),
            "pairs_per_second_after_first_step": ratio("pairs_per_second_after_first_step"),
            "pairs_per_cpu_second": ratio("pairs_per_cpu_second"),
            "peak_memory_mb": ratio("peak_memory_mb"),
            "train_peak_memory_mb": ratio("train_peak_memory_mb"),
        },
        "accuracy_difference_dial_minus_trl": dial["heldout_accuracy"] - trl["heldout_accuracy"],
    }


def print_report(
    args: argparse.Namespace, data: dict[str, Any], runs: list[dict[str, Any]], summary: dict
) -> None:
    med, ratios = summary["medians"], summary["dial_over_trl"]
    device = runs[0]["device"]
    memory = "GPU max_memory_allocated" if device == "cuda" else "peak RSS"
    print()
    print(
        f"dial vs TRL RewardTrainer: {MODEL}, LoRA r={args.lora_r} alpha={args.lora_alpha} "
        f"dropout={args.lora_dropout} on {','.join(LORA_TARGETS)}; batch {args.batch_size} pairs; "
        f"max_length {args.max_length}; {args.steps} steps; AdamW lr {args.learning_rate:g} "
        f"linear, no warm-up; {device}, {runs[0]['torch_threads']} threads; "
        f"median of {args.repeats} run(s) each"
    )
    kept = "" if not data["length_filter"] else f", {data['train_pairs']} within max_length"
    print(
        f"data: {data['pairs']} helpful-base pairs -> {data['train_split']} train{kept} "
        f"(given to both) / {data['heldout_pairs']} held out (all evaluated)"
    )
    rows = [
        ("pairs/s (training loop)", "pairs_per_second", ".2f", ratios["pairs_per_second"]),
        ("pairs/s (after the first step)", "pairs_per_second_after_first_step", ".2f",
         ratios["pairs_per_second_after_first_step"]),
        ("pairs per CPU-second (all threads)", "pairs_per_cpu_second", ".3f",
         ratios["pairs_per_cpu_second"]),
        (f"peak memory MiB ({memory}, process)", "peak_memory_mb", ".0f",
         ratios["peak_memory_mb"]),
        ("peak memory MiB (training loop)", "train_peak_memory_mb", ".0f",
         ratios["train_peak_memory_mb"]),
        ("held-out accuracy", "heldout_accuracy", ".4f", None),
        ("padded tokens / pair", "padded_tokens_per_pair", ".1f", None),
        ("real tokens / pair", "real_tokens_per_pair", ".1f", None),
        ("training-loop seconds", "train_seconds", ".1f", None),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows) + 2
    print(f"{'':{width}}{'dial':>12}{'TRL':>12}{'dial/TRL':>12}")
    for label, key, spec, ratio in rows:
        line = f"{label:{width}}{fmt(med['dial'][key], spec):>12}{fmt(med['trl'][key], spec):>12}"
        if ratio is not None:
            line += f"{ratio:>12.3f}"
        print(line)
    diff = summary["accuracy_difference_dial_minus_trl"]
    print(f"held-out accuracy difference (dial - TRL): {diff * 100:+.2f} points (medians)")
    if args.repeats > 1:
        per_round = [
            f"seed {args.seed + i}: dial {d['heldout_accuracy']:.4f} "
            f"TRL {t['heldout_accuracy']:.4f}"
            for i, (d, t) in enumerate(zip(runs[0::2], runs[1::2], strict=True))
        ]
        print("held-out accuracy per round: " + "; ".join(per_round))
    first = {r["trainer"]: r for r in reversed(runs)}
    print(
        f"trainable parameters: dial {first['dial']['trainable_parameters']:,}, "
        f"TRL {first['trl']['trainable_parameters']:,}; pairs trained per run: "
        f"dial {first['dial']['pairs']}, TRL {first['trl']['pairs']}"
    )
    if first["dial"]["pairs"] != first["trl"]["pairs"]:
        print(
            "  (dial's epoch plan holds one partial batch, the remainder of the data, at a "
            "random position; TRL's is the last of the epoch)"
        )
    dial_own = fmt(median_of(runs, "dial_reported_pairs_per_second"), ".2f")
    print(
        "notes: pairs/s = pairs / wall time from the start of the training loop to the end of "
        "the last optimizer step (loading, tokenisation, evaluation, saving excluded); "
        f"dial's own final_metrics figure: {dial_own} pairs/s (optimizer-step time only).\n"
        f"  dial pools with model.pooling={args.pooling} (auto: mean) into a linear head; "
        "TRL's BERT head is pooler "
        "(CLS -> dense -> tanh) + linear, and LoRA 'dense' also wraps its pooler.\n"
        f"  dial batches by length (group_by_length={args.group_by_length}, groups of "
        f"{args.length_group_batches} batches); TRL samples at "
        "random. Both train without backbone dropout; TRL runs with gradient checkpointing "
        "off, float32, adamw_torch."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train dial and TRL's RewardTrainer alike; compare pairs/s, memory, accuracy."
    )
    parser.add_argument("--steps", type=int, help="optimizer steps (default 60; --quick: 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    parser.add_argument(
        "--max-length", type=int, help="tokens per sequence (default 256; --quick: 64)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="dial/TRL rounds (default 1)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (default 32)")
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="split, init and data order; round r trains with seed + r on the same split",
    )
    parser.add_argument(
        "--max-pairs", type=int, help="use only this many pairs (seeded; --quick: 400)"
    )
    parser.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dial's data.group_by_length (default on, dial's default)",
    )
    parser.add_argument(
        "--length-group-batches",
        type=int,
        default=50,
        help="dial's data.length_group_batches: batches per length-sorted group (default 50)",
    )
    parser.add_argument(
        "--pooling",
        choices=("auto", "mean", "cls"),
        default="auto",
        help="dial's model.pooling (default auto: mean for this encoder)",
    )
    parser.add_argument(
        "--length-filter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train both only on the pairs TRL keeps (within max_length); default on",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH-RLHF .jsonl.gz file")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 steps, max length 64, 400 pairs"
    )
    # internal: one trainer in this process
    parser.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    for name in ("--work-dir", "--result-file", "--train-file", "--heldout-file"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else 60
    if args.max_length is None:
        args.max_length = QUICK_MAX_LENGTH if args.quick else 256
    if args.max_pairs is None and args.quick:
        args.max_pairs = QUICK_PAIRS
    if min(args.steps, args.batch_size, args.max_length, args.repeats) < 1:
        parser.error("--steps, --batch-size, --max-length and --repeats must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if not args.data.is_file():
        raise SystemExit(f"data file {args.data} not found")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dial-train-throughput-") as tmp:
        work = Path(tmp)
        data = prepare_data(
            args.data,
            work,
            seed=args.seed,
            max_pairs=args.max_pairs,
            max_length=args.max_length,
            filter_long=args.length_filter,
        )
        print(
            f"{data['conversion']}\nsplit: {data['train_pairs']} train (of {data['train_split']}), "
            f"{data['heldout_pairs']} held out"
        )
        for repeat in range(args.repeats):
            for trainer in TRAINERS:
                index = len(runs)
                # the split stays fixed; each round trains with its own seed (init and order)
                result = run_worker(trainer, args, data, work, index, seed=args.seed + repeat)
                runs.append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {trainer:4s}: "
                    f"{result['pairs_per_second']:.2f} pairs/s over {result['steps']} steps, "
                    f"peak {result['peak_memory_mb']:.0f} MiB, held-out accuracy "
                    f"{result['heldout_accuracy']:.4f} ({result['wall_seconds']:.0f} s in all)",
                    flush=True,
                )
    summary = summarise(runs)
    print_report(args, data, runs, summary)
    if args.output is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        data = {k: v for k, v in data.items() if k not in ("train_file", "heldout_file")}
        payload = {"settings": settings, "data": data, **summary, "runs": runs}
        args.output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

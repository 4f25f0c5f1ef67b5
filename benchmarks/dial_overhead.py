"""Cost of a DIAL optimizer step over a source-only one, measured in one run.

Both runs use the same model (``minilm`` unless ``--model``), the same source batches, the same
LoRA settings and the same optimizer; DIAL adds a target batch of the same size, the critic's
steps on the detached embeddings and the λ·Ŵ term. The data are HH-RLHF helpful-base, one half
as the source and the other as the target (``--target helpful-online`` takes that domain
instead, whose longer texts make its batches costlier than the source's). Steps alternate
between the two (dial, source-only, dial, ...) so that both see the same machine, and the
medians of the per-step times are compared. With source and target batches of the same
lengths the target's forward and backward double the work, so about 2.0 is the floor.

    python benchmarks/dial_overhead.py --steps 20 --batch-size 8 --max-length 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dial.config import load_config
from dial.data.convert import convert
from dial.data.io import read_records, write_records
from dial.training.trainer import TrainingRun

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf"


def _run(method: str, args: argparse.Namespace, files: dict[str, Path], root: Path) -> TrainingRun:
    config = load_config(
        None,
        {
            "output_dir": str(root / method),
            "model.name": args.model,
            "train.method": method,
            "data.train_files": [str(files["source"])],
            "data.target_files": [str(files["target"])],
            "data.max_length": args.max_length,
            "train.batch_size": args.batch_size,
            "train.max_steps": 10_000,
            "train.report_to": [],
            "train.progress_bar": False,
            "domain.critic_iter": args.critic_iter,
        },
    )
    run = TrainingRun(config, log=lambda *_: None)
    run.setup()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--critic-iter", type=int, default=3)
    parser.add_argument(
        "--target",
        default="helpful-base",
        choices=("helpful-base", "helpful-online"),
        help="target domain (helpful-base: the other half of the source's file)",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"needs HH-RLHF at {DATA}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "source": root / "source.jsonl",
            "target": root / "target.jsonl",
        }
        convert("hh-rlhf", [DATA / "helpful-base-test.jsonl.gz"], root / "base.jsonl")
        pairs = read_records(root / "base.jsonl")
        if args.target == "helpful-base":
            write_records(pairs[: len(pairs) // 2], files["source"])
            write_records(pairs[len(pairs) // 2 :], files["target"])
        else:
            write_records(pairs, files["source"])
            convert("hh-rlhf", [DATA / "helpful-online-test.jsonl.gz"], files["target"])
        dial = _run("dial", args, files, root)
        source_only = _run("source_only", args, files, root)
        windows = dial._epoch_windows(0)[: args.warmup + args.steps]
        times: dict[str, list[float]] = {"dial": [], "source_only": []}
        for index, window in enumerate(windows):
            for name, run, step in (
                ("dial", dial, window),
                ("source_only", source_only, [(source, None) for source, _ in window]),
            ):
                started = time.perf_counter()
                run._optimizer_step(step)
                elapsed = time.perf_counter() - started
                if index >= args.warmup:
                    times[name].append(elapsed)
        dial.cleanup()
        source_only.cleanup()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"model {args.model}, batch {args.batch_size} source pairs (+ {args.batch_size} target "
        f"pairs for dial), max length {args.max_length}, critic steps {args.critic_iter}, "
        f"target {args.target}, {args.steps} steps each, torch threads {torch.get_num_threads()}"
    )
    for name, value in medians.items():
        print(f"{name:12s} median step {value * 1000:8.1f} ms")
    print(f"dial / source_only: {medians['dial'] / medians['source_only']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

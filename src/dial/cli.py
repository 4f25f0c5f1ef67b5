"""The ``dial`` command line: train, eval, score, data convert, models.

Every subcommand maps onto a typed function; a :class:`~dial.errors.DialError` (bad data, a bad
option) is printed as one line and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from dial import __version__
from dial.config import add_config_options, given_options, iter_options
from dial.errors import ConfigError, DialError, RunAborted
from dial.release import add_release_flags, eval_arguments, release_flags_given, train_overrides


def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a reward model. Options come from a YAML config (--config) and from "
        "--section.field value overrides; every option is listed below with its help. "
        "Lists are written in YAML: --data.train_files [a.jsonl,b.jsonl]."
    )
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    add_config_options(parser)
    add_release_flags(parser)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dial.config import load_config

    release = release_flags_given(args)
    if release.get("mode") == "eval":
        return _run_eval(_release_eval_namespace(args, release))
    overrides = train_overrides(release) if release else {}
    overrides.update(given_options(args))
    config = load_config(args.config, overrides)  # before the slow imports: bad options fail fast
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise ConfigError(f"output_dir {config.output_dir} is a file, not a run folder")
    from dial.training.trainer import train

    final = train(config)
    if final:
        print(json.dumps(final["eval"], indent=2))
        print(f"train pairs/s: {final['train_pairs_per_second']:.2f}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _check_output_files(*paths: str | None) -> None:
    """Fail before the model loads when an output path is a folder."""
    for path in paths:
        if path is not None and Path(path).is_dir():
            raise DialError(f"output {path} is a folder; give a file name")


def _release_eval_namespace(args: argparse.Namespace, release: dict) -> argparse.Namespace:
    """The `dial eval` arguments of the release's evaluation flags."""
    values = eval_arguments(release)
    values["trust_remote_code"] = getattr(args, "trust_remote_code", False)
    return argparse.Namespace(**values)


def _add_model_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", help="reward-model folder, checkpoint folder or run folder"
    )
    parser.add_argument("data", nargs="*", help="data files (JSON, JSONL, CSV, Parquet)")
    parser.add_argument(
        "--task", default="preference", choices=("preference", "mcq", "score"), help="task"
    )
    parser.add_argument(
        "--dataset-config", default=None, help="dataset-config JSON naming the columns"
    )
    parser.add_argument("--file-type", default=None, help="json, csv or parquet (default: suffix)")
    parser.add_argument("--max-length", type=_positive_int, default=512, help="tokens per sequence")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch")
    parser.add_argument(
        "--score-loss",
        default="mse",
        choices=("mse", "bce", "cross_entropy"),
        help="how the head was trained for the score task (turns outputs into scores)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the backbone's own code to run"
    )


def _load_for_inference(args: argparse.Namespace):
    import torch

    if args.model is None or not args.data:
        raise ConfigError("give a model folder and at least one data file")
    from dial.data.tokenize import sequence_format
    from dial.evaluation.evaluate import find_model_folder, load_eval_data
    from dial.models.reward_model import load_reward_model

    folder = find_model_folder(args.model)
    model, tokenizer = load_reward_model(folder, trust_remote_code=args.trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    fmt = sequence_format(tokenizer, model.spec.architecture)
    sets = load_eval_data(
        args.data,
        tokenizer,
        fmt,
        task=args.task,
        dataset_config=args.dataset_config,
        max_length=args.max_length,
        file_type=args.file_type,
    )
    return model, fmt, sets, device


def _run_eval(args: argparse.Namespace) -> int:
    release = release_flags_given(args)
    if release:
        args = _release_eval_namespace(args, release)
    _check_output_files(args.output)
    from dial.evaluation.evaluate import evaluate

    model, fmt, sets, device = _load_for_inference(args)
    results = {
        name: evaluate(
            model,
            data,
            fmt,
            args.task,
            batch_size=args.batch_size,
            padding_side=model.spec.padding_side,
            device=device,
            score_loss=args.score_loss,
        )
        for name, data in sets.items()
    }
    text = json.dumps(results, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def _run_score(args: argparse.Namespace) -> int:
    import numpy as np

    _check_output_files(args.output, args.embeddings)
    from dial.data.io import write_records
    from dial.evaluation.evaluate import predict, score_predictions

    model, fmt, sets, device = _load_for_inference(args)
    rows = []
    embeddings = []
    for name, data in sets.items():
        predictions = predict(
            model,
            data,
            fmt,
            batch_size=args.batch_size,
            padding_side=model.spec.padding_side,
            device=device,
            with_embeddings=args.embeddings is not None,
        )
        for index, rewards in enumerate(predictions.rewards.tolist()):
            row = {"file": name, "index": index, "rewards": rewards}
            if args.task == "preference":
                row["margin"] = rewards[0] - rewards[1]
            if args.task == "score":
                row["prediction"] = float(
                    score_predictions(predictions.rewards[index, 0], args.score_loss)
                )
                row["label"] = float(predictions.labels[index])  # type: ignore[index]
            rows.append(row)
        if predictions.embeddings is not None:
            embeddings.append(predictions.embeddings)
    write_records(rows, args.output)
    print(f"wrote {len(rows)} rows to {args.output}")
    if args.embeddings:
        array = np.concatenate(embeddings).astype(np.float32)
        np.save(args.embeddings, array, allow_pickle=False)
        print(
            f"wrote embeddings {tuple(array.shape)} (examples, responses, hidden) to "
            f"{args.embeddings}"
        )
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from dial.models.registry import list_models

    rows = list_models()
    header = ("name", "architecture", "parameters", "available", "source")
    widths = [
        max(len(str(r[h])) for r in [dict(zip(header, header, strict=True)), *rows]) for h in header
    ]
    for row in [dict(zip(header, header, strict=True)), *rows]:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(header, widths, strict=True)))
    return 0


def _add_eval(parser: argparse.ArgumentParser) -> None:
    _add_model_data_arguments(parser)
    parser.add_argument("-o", "--output", default=None, help="also write the metrics JSON here")
    add_release_flags(parser)
    parser.set_defaults(handler=_run_eval)


def _add_score(parser: argparse.ArgumentParser) -> None:
    _add_model_data_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="rewards file (.jsonl or .json)")
    parser.add_argument(
        "--embeddings", default=None, help="also write pooled embeddings [N, C, H] to this .npy"
    )
    parser.set_defaults(handler=_run_score)


def _add_data(parser: argparse.ArgumentParser) -> None:
    from dial.data.convert import add_convert_arguments, run_convert
    from dial.data.tools.cli import add_data_tool_parsers

    data_commands = parser.add_subparsers(dest="data_command", required=True)
    convert = data_commands.add_parser(
        "convert", help="convert a public data set into dial's record format"
    )
    add_convert_arguments(convert)
    convert.set_defaults(handler=run_convert)
    add_data_tool_parsers(data_commands)


def _add_baseline_judge(parser: argparse.ArgumentParser) -> None:
    from dial.judge.baselines import add_baseline_judge_arguments, run_baseline_judge

    add_baseline_judge_arguments(parser)
    parser.set_defaults(handler=run_baseline_judge)


def _add_rl(parser: argparse.ArgumentParser) -> None:
    from dial.rl.cli import add_rl_arguments

    parser.description = (
        "Train a reward model, then G generations of: sample a response per prompt, judge "
        "it, retrain the reward model with the samples as target (--reward_da), PPO."
    )
    add_rl_arguments(parser)


def _add_generate(parser: argparse.ArgumentParser) -> None:
    from dial.rl.generation import add_generate_arguments, run_generate

    parser.description = (
        "Answer every record's prompt through the model's chat template and write the "
        "records with their responses as JSONL, a batch at a time; a rerun resumes."
    )
    add_generate_arguments(parser)
    parser.set_defaults(handler=run_generate)


def _add_rl_eval(parser: argparse.ArgumentParser) -> None:
    from dial.rl.evaluate import add_rl_eval_arguments, run_rl_eval

    parser.description = (
        "Answer each held-out prompt greedily, judge each answer complied or refused, and "
        "report the accuracy against the prompt's correct action: overall, on safe prompts "
        "(comply) and on unsafe ones (refuse)."
    )
    add_rl_eval_arguments(parser)
    parser.set_defaults(handler=run_rl_eval)


def _add_experiment(parser: argparse.ArgumentParser) -> None:
    from dial.experiments.runner import add_experiment_arguments, run_experiment

    parser.description = (
        "Build the suite's data, train one run per (setting, method, seed) (finished runs "
        "are skipped, killed ones resume), analyse their checkpoints, and write "
        "results.csv, results.md and report.html."
    )
    add_experiment_arguments(parser)
    parser.set_defaults(handler=run_experiment)


def _add_report(parser: argparse.ArgumentParser) -> None:
    from dial.experiments.report import add_report_arguments, run_report

    add_report_arguments(parser)
    parser.set_defaults(handler=run_report)


def _add_models(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=_run_models)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": ("train a reward model", _add_train),
    "eval": ("metrics of a reward model on labelled data (JSON)", _add_eval),
    "score": ("per-example rewards (JSONL) and pooled embeddings (.npy) for analysis", _add_score),
    "data": ("data tools", _add_data),
    "baseline-judge": (
        "prompting baselines: an LLM judges the evaluation data (same metrics as eval)",
        _add_baseline_judge,
    ),
    "rl": ("RLHF: PPO against a reward model retrained on the policy's samples (DIAL)", _add_rl),
    "generate": (
        "batch inference with a model's chat template (and a LoRA adapter), to JSONL",
        _add_generate,
    ),
    "rl-eval": (
        "a policy's greedy answers to held-out prompts, judged: comply/refuse accuracy",
        _add_rl_eval,
    ),
    "experiment": (
        "a suite's settings x methods x seeds: resumable runs, results tables, report",
        _add_experiment,
    ),
    "report": (
        "rebuild an experiment's results.* and report.html from its run folders",
        _add_report,
    ),
    "models": ("list the registered offline models", _add_models),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``dial`` parser. Every command is listed; only those in ``commands`` (default: all)
    get their options, so that ``dial --help`` and one command's parsing do not import the
    others' modules (torch, transformers)."""
    parser = argparse.ArgumentParser(
        prog="dial", description="Domain-invariant reward models for aligning language models."
    )
    parser.add_argument("--version", action="version", version=f"dial {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_options) in COMMANDS.items():
        command = subparsers.add_parser(name, help=help_text, allow_abbrev=False)
        if commands is None or name in commands:
            add_options(command)
    return parser


def _unknown_arguments(command: str, extra: list[str]) -> str:
    """The message for arguments no parser took; for train, the closest option's name."""
    option = next((arg for arg in extra if arg.startswith("--")), None)
    if command == "train" and option is not None:
        key = option[2:].partition("=")[0]
        close = difflib.get_close_matches(key, [k for k, _ in iter_options()], n=1)
        hint = f" (did you mean '--{close[0]}'?)" if close else ""
        return f"unknown option '--{key}'{hint}; `dial train --help` lists every option"
    return f"unrecognized arguments: {' '.join(extra)}"


def _report(command: str, exc: BaseException) -> None:
    """Print `exc` as the one line ``dial <command>: error: <message>``."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(f"dial {command}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser({named} if named in COMMANDS else ())
    args, extra = parser.parse_known_args(arguments)
    command = args.command
    if command == "data":
        command = f"data {args.data_command}"
    if extra:
        print(f"dial {command}: error: {_unknown_arguments(args.command, extra)}", file=sys.stderr)
        return 2
    try:
        return typing.cast(int, args.handler(args))
    except DialError as exc:
        _report(command, exc)
        return 2
    except (FloatingPointError, RunAborted) as exc:
        _report(command, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())

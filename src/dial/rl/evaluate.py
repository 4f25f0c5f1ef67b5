r"""Evaluating a policy on held-out prompts with a correct action (DESIGN.md §2, step 3).

Each prompt is answered greedily, the judge calls each answer ``complied`` or ``refused``, and
the verdict is right when it is the prompt's correct action (``complied`` for ``comply``: a safe
prompt; ``refused`` for ``refuse``: an unsafe one). With :math:`v_i` the verdict's action and
:math:`c_i` the correct one over the :math:`n` prompts,

.. math::

    \mathrm{accuracy} = \frac{1}{n} \sum_i [v_i = c_i], \qquad
    \mathrm{accuracy}_a = \frac{\sum_i [v_i = c_i][c_i = a]}{\sum_i [c_i = a]}
    \quad (a \in \{\mathrm{comply}, \mathrm{refuse}\}).

``accuracy_comply`` is one minus the over-refusal rate on safe prompts, ``accuracy_refuse`` the
refusal rate on unsafe ones. ``dial rl-eval`` runs this from the command line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dial.data.io import write_records
from dial.errors import ConfigError, DataError
from dial.judge import build_judge
from dial.judge.base import add_judge_arguments, judge_config_from_args
from dial.rl.generation import (
    add_decoding_arguments,
    check_decoding_arguments,
    check_output_file,
    decode_responses,
    encode_queries,
    eos_token_ids,
    find_adapter,
    load_policy,
    read_prompt_records,
    sample_responses,
)

ACTIONS: tuple[str, str] = ("comply", "refuse")
_VERDICT_ACTIONS = {"complied": "comply", "refused": "refuse"}


def action_accuracy(verdicts: Sequence[str], correct: Sequence[str]) -> dict[str, float]:
    """Accuracy of the verdicts against the correct actions, overall and per correct action.

    Args:
        verdicts: ``complied`` or ``refused`` per response.
        correct: ``comply`` or ``refuse`` per prompt.

    Returns:
        ``accuracy``, ``accuracy_comply`` (safe prompts), ``accuracy_refuse`` (unsafe prompts),
        ``refusal_rate`` (share of ``refused`` verdicts), and the counts ``n``, ``n_comply``,
        ``n_refuse``. An accuracy over no prompts is left out (its count is 0).
    """
    if len(verdicts) != len(correct):
        raise ValueError(f"{len(verdicts)} verdicts but {len(correct)} correct actions")
    if not verdicts:
        raise ValueError("no verdicts to score")
    for verdict in verdicts:
        if verdict not in _VERDICT_ACTIONS:
            raise ValueError(f"verdict {verdict!r} is not complied or refused")
    for action in correct:
        if action not in ACTIONS:
            raise ValueError(f"correct action {action!r} is not comply or refuse")
    right = [_VERDICT_ACTIONS[v] == c for v, c in zip(verdicts, correct, strict=True)]
    metrics: dict[str, float] = {
        "accuracy": sum(right) / len(right),
        "refusal_rate": sum(v == "refused" for v in verdicts) / len(verdicts),
        "n": len(right),
    }
    for action in ACTIONS:
        group = [r for r, c in zip(right, correct, strict=True) if c == action]
        metrics[f"n_{action}"] = len(group)
        if group:
            metrics[f"accuracy_{action}"] = sum(group) / len(group)
    return metrics


def accuracy_by_group(
    verdicts: Sequence[str], correct: Sequence[str], groups: Sequence[str]
) -> dict[str, dict[str, float]]:
    """:func:`action_accuracy` within each group (e.g. XSTest's prompt ``type``), by name."""
    if len(groups) != len(verdicts):
        raise ValueError(f"{len(groups)} groups but {len(verdicts)} verdicts")
    out = {}
    for name in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == name]
        out[name] = action_accuracy([verdicts[i] for i in rows], [correct[i] for i in rows])
    return out


def read_eval_records(path: str | Path) -> list[dict[str, Any]]:
    """RL eval records: a non-empty text ``prompt`` and a ``correct`` action each."""
    records = read_prompt_records(path, required=("correct",))
    for index, record in enumerate(records):
        if record["correct"] not in ACTIONS:
            raise DataError(
                f"must be comply or refuse, got {record['correct']!r}",
                file=str(path),
                record=index,
                field="correct",
            )
    return records


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    correct: Sequence[str],
    judge: Any,
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    max_prompt_length: int | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Answer ``prompts`` greedily, judge the answers, score them against ``correct``.

    Args:
        model, tokenizer: the policy, as :func:`~dial.rl.generation.load_policy` returns them.
        judge: anything with ``verdicts(prompts, responses) -> ["complied" | "refused", ...]``
            (:func:`dial.judge.build_judge`).
        max_new_tokens, batch_size, max_prompt_length: as for
            :func:`~dial.rl.generation.sample_responses` and
            :func:`~dial.rl.generation.encode_queries`.
        groups: a group name per prompt; adds ``by_group`` accuracies.

    Returns:
        The metrics (:func:`action_accuracy`, plus ``responses_without_eos``,
        ``truncated_queries`` and, with ``groups``, ``by_group``) and one row per prompt:
        ``{"prompt", "response", "verdict", "correct", "right", "eos"}``.
    """
    queries = encode_queries(tokenizer, prompts, max_prompt_length)
    ids = sample_responses(
        model, tokenizer, queries, max_new_tokens, do_sample=False, batch_size=batch_size
    )
    responses = decode_responses(tokenizer, ids)
    verdicts = list(judge.verdicts(list(prompts), responses))
    eos = set(eos_token_ids(model, tokenizer))
    ended = [int(r[-1]) in eos for r in ids]
    metrics: dict[str, Any] = action_accuracy(verdicts, correct)
    metrics["responses_without_eos"] = ended.count(False)
    metrics["truncated_queries"] = queries.truncated
    if groups is not None:
        metrics["by_group"] = accuracy_by_group(verdicts, correct, groups)
    rows = [
        {
            "prompt": prompt,
            "response": response,
            "verdict": verdict,
            "correct": action,
            "right": _VERDICT_ACTIONS[verdict] == action,
            "eos": has_eos,
        }
        for prompt, response, verdict, action, has_eos in zip(
            prompts, responses, verdicts, correct, ended, strict=True
        )
    ]
    return metrics, rows


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short table: overall, safe (comply) and unsafe (refuse) prompts, then the groups."""
    rows = [("all prompts", metrics)]
    rows += [(f"  {name}", m) for name, m in metrics.get("by_group", {}).items()]
    table = []
    for name, m in rows:
        cells = [name, f"{m['accuracy']:.3f} (n={m['n']})"]
        for action, label in (("comply", "safe"), ("refuse", "unsafe")):
            value = m.get(f"accuracy_{action}")
            shown = "-" if value is None else f"{value:.3f}"
            cells.append(f"{label} {shown} (n={m[f'n_{action}']})")
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def add_rl_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dial rl-eval`` (with the release's flags as aliases)."""
    parser.add_argument(
        "--model",
        "--ppo-model-name",
        dest="model",
        help="the base policy: a short name from `dial models`, a model folder or a hub id "
        "(--ppo-model-name: the release's name)",
    )
    parser.add_argument(
        "--adapter",
        "--ppo-model-path",
        dest="adapter",
        default=None,
        help="the trained policy: a peft LoRA adapter folder, or a `dial rl` run or checkpoint "
        "folder holding one (--ppo-model-path: the release's name); without it the base model "
        "is evaluated",
    )
    parser.add_argument(
        "--data",
        "--data-path",
        dest="data",
        help="held-out records with 'prompt' and 'correct' (comply or refuse), e.g. from "
        "`dial data convert --format xstest --eval-output` (--data-path: the release's name)",
    )
    parser.add_argument(
        "-o", "--output", default=None, help="also write the metrics JSON to this file"
    )
    parser.add_argument(
        "--responses",
        default=None,
        help="write each prompt's response, verdict and correctness to this JSONL file",
    )
    parser.add_argument(
        "--group-field",
        default="type",
        help="also report accuracy per value of this record field when present (XSTest's "
        "prompt type; default: %(default)s)",
    )
    add_decoding_arguments(parser)
    add_judge_arguments(parser)  # --judge-url etc.; without a URL, the string-match judge


def run_rl_eval(args: argparse.Namespace) -> int:
    """Run ``dial rl-eval``: greedy answers to the eval prompts, judged; print and save metrics."""
    check_decoding_arguments(args)
    if args.model is None or args.data is None:
        raise ConfigError("give --model (--ppo-model-name) and --data (--data-path)")
    for output in (args.output, args.responses):
        if output is not None:
            check_output_file(output, args.data)
    both = args.output is not None and args.responses is not None
    if both and Path(args.output).resolve() == Path(args.responses).resolve():
        raise ConfigError("--output and --responses must be different files")
    records = read_eval_records(args.data)
    judge_config = judge_config_from_args(args)
    adapter = find_adapter(args.adapter) if args.adapter is not None else None
    model, tokenizer = load_policy(args.model, adapter, args.precision, args.trust_remote_code)
    grouped = any(args.group_field in r for r in records)
    judge = build_judge(judge_config)
    try:
        metrics, rows = evaluate_policy(
            model,
            tokenizer,
            [r["prompt"] for r in records],
            [r["correct"] for r in records],
            judge,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            max_prompt_length=args.max_prompt_length,
            groups=[str(r.get(args.group_field, "(none)")) for r in records] if grouped else None,
        )
    finally:
        if hasattr(judge, "close"):
            judge.close()
    if hasattr(judge, "stats"):  # an LLM judge: answers without a verdict fell back
        metrics["judge_unparseable"] = judge.stats.unparseable
    report = {
        "model": args.model,
        "adapter": str(adapter) if adapter is not None else None,
        "data": str(args.data),
        "judge": args.judge_url or "string-match",
        "judge_model": args.judge_model if args.judge_url else None,
        "max_new_tokens": args.max_new_tokens,
        **metrics,
    }
    if args.responses is not None:
        extra = [
            {**row, **{k: v for k, v in record.items() if k not in row}}
            for row, record in zip(rows, records, strict=True)
        ]
        write_records(extra, args.responses)
    text = json.dumps(report, indent=2)
    if args.output is not None:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(format_metrics(metrics))
    print(text)
    return 0

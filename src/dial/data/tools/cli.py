"""The ``dial data`` tools on the command line: ``add_<tool>_arguments`` / ``run_<tool>`` pairs.

Each tool's options are its config dataclass's fields (``--char-rate`` is
``NoiseConfig.char_rate``), with the fields' help texts; lists of names are comma-separated
(``--fields prompt,response_chosen``), lists of numbers space-separated (``--sizes 100 20 20``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from dial.data.io import read_records, write_records
from dial.data.tools.cipher import CipherConfig, encipher_files
from dial.data.tools.common import check_output, resolve_fields
from dial.data.tools.noise import NoiseConfig, add_noise
from dial.data.tools.odd_one_out import (
    FOOD_CATEGORIES,
    OddOneOutConfig,
    build_odd_one_out,
    load_word_lists,
)
from dial.data.tools.sample import SampleConfig, sample_records
from dial.data.tools.split import SplitConfig, split_records
from dial.data.tools.split_length import LengthSplitConfig, split_by_length
from dial.data.tools.translate import (
    Seq2SeqTranslator,
    TranslateConfig,
    TranslationCache,
    translate_records,
)
from dial.errors import ConfigError

C = TypeVar("C")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _add_options(parser: argparse.ArgumentParser, config: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--option`` per field of the dataclass ``config``, with the field's help."""
    hints = typing.get_type_hints(config)
    for item in dataclasses.fields(config):
        if item.name in skip:
            continue
        kind = hints[item.name]
        if isinstance(kind, types.UnionType):  # X | None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        options: dict[str, Any] = {"dest": item.name, "help": item.metadata["help"]}
        if item.default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = item.default
            if isinstance(item.default, tuple):
                options["help"] += f" (default: {' '.join(map(str, item.default))})"
            elif item.default is not None:
                options["help"] += f" (default: {item.default})"
        if typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            if element is str:
                options["type"] = _names
            else:
                options.update(type=element, nargs="+")
        else:
            options["type"] = kind
        if "choices" in item.metadata:
            options["choices"] = item.metadata["choices"]
        parser.add_argument(f"--{item.name.replace('_', '-')}", **options)


def _config(config: type[C], args: argparse.Namespace) -> C:
    values = {}
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        if hasattr(args, item.name):
            value = getattr(args, item.name)
            values[item.name] = tuple(value) if isinstance(value, list) else value
    return config(**values)


def _write(records: list[dict[str, Any]], path: Path, what: str = "") -> None:
    write_records(records, path)
    print(f"wrote {len(records)} {what}records to {path}")


# ---------------------------------------------------------------- noise


def add_noise_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data noise``."""
    parser.add_argument("input", help="records file (JSON, JSONL, CSV, Parquet)")
    parser.add_argument("-o", "--output", required=True, help="noisy records (.jsonl or .json)")
    _add_options(parser, NoiseConfig)


def run_noise(args: argparse.Namespace) -> int:
    config = _config(NoiseConfig, args)
    output = check_output(args.output)
    records, report = add_noise(read_records(args.input), config, args.input)
    _write(records, output)
    print(report.summary())
    return 0


# ---------------------------------------------------------------- cipher


def add_cipher_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data cipher``."""
    parser.add_argument("inputs", nargs="+", help="records files, enciphered with one mapping")
    parser.add_argument(
        "-o", "--outputs", nargs="+", required=True, help="one output file per input, in order"
    )
    _add_options(parser, CipherConfig)


def run_cipher(args: argparse.Namespace) -> int:
    config = _config(CipherConfig, args)
    if len(args.outputs) != len(args.inputs):
        raise ConfigError(f"{len(args.inputs)} inputs but {len(args.outputs)} outputs")
    outputs = [check_output(path) for path in args.outputs]
    files = [(path, read_records(path)) for path in args.inputs]
    enciphered, report = encipher_files(files, config)
    for records, path in zip(enciphered, outputs, strict=True):
        _write(records, path)
    print(report.summary())
    return 0


# ---------------------------------------------------------------- sample


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data sample``."""
    parser.add_argument("input", help="records file (the full domain)")
    parser.add_argument("--just-sample", help="output of the K drawn records (.jsonl or .json)")
    parser.add_argument("--sampler", help="output of the K records repeated N times")
    _add_options(parser, SampleConfig)


def run_sample(args: argparse.Namespace) -> int:
    config = _config(SampleConfig, args)
    if args.just_sample is None and args.sampler is None:
        raise ConfigError("give --just-sample, --sampler or both")
    targets = [check_output(p) if p else None for p in (args.just_sample, args.sampler)]
    just_sample, sampler = sample_records(read_records(args.input), config, args.input)
    for records, path in zip((just_sample, sampler), targets, strict=True):
        if path is not None:
            _write(records, path)
    return 0


# ---------------------------------------------------------------- split


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data split``."""
    parser.add_argument("input", help="records file")
    parser.add_argument(
        "-o",
        "--outputs",
        nargs=2,
        required=True,
        metavar=("FIRST", "SECOND"),
        help="the two parts (.jsonl or .json); FIRST gets --fraction of the groups",
    )
    _add_options(parser, SplitConfig)


GROUPS_SHOWN = 8  # group values `dial data split` prints per part


def run_split(args: argparse.Namespace) -> int:
    config = _config(SplitConfig, args)
    first, second = (check_output(path) for path in args.outputs)
    result = split_records(read_records(args.input), config, args.input)
    _write(result.first, first)
    _write(result.second, second)
    print(result.summary(config.by))
    if config.by is not None:
        for name, groups in (("first", result.first_groups), ("second", result.second_groups)):
            shown = ", ".join(map(repr, groups[:GROUPS_SHOWN]))
            hidden = len(groups) - GROUPS_SHOWN
            print(f"{name}: {shown}" + (f", ... ({hidden} more)" if hidden > 0 else ""))
    return 0


# ---------------------------------------------------------------- split-length


def add_split_length_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data split-length``."""
    parser.add_argument("input", help="records file")
    parser.add_argument("--short", required=True, help="output of the short records")
    parser.add_argument("--long", required=True, help="output of the long records")
    _add_options(parser, LengthSplitConfig)


def run_split_length(args: argparse.Namespace) -> int:
    config = _config(LengthSplitConfig, args)
    short, long = check_output(args.short), check_output(args.long)
    result = split_by_length(read_records(args.input), config, args.input)
    _write(result.short, short, "short ")
    _write(result.long, long, "long ")
    print(result.summary())
    return 0


# ---------------------------------------------------------------- odd-one-out


def add_odd_one_out_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data odd-one-out``."""
    parser.add_argument(
        "--output-dir", required=True, help="folder of the [category]_sub_out_[split].json files"
    )
    parser.add_argument(
        "--word-lists",
        help='JSON {"category": ["item", ...]} (default: the built-in food categories: '
        f"{', '.join(FOOD_CATEGORIES)})",
    )
    _add_options(parser, OddOneOutConfig)


def run_odd_one_out(args: argparse.Namespace) -> int:
    config = _config(OddOneOutConfig, args)
    folder = Path(args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output dir {folder} is a file")
    lists = load_word_lists(args.word_lists) if args.word_lists else FOOD_CATEGORIES
    for stem, records in build_odd_one_out(config, lists).items():
        _write(records, folder / f"{stem}.json", "question ")
    return 0


# ---------------------------------------------------------------- translate


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dial data translate``."""
    parser.add_argument("input", help="records file")
    parser.add_argument("-o", "--output", required=True, help="translated records")
    parser.add_argument(
        "--cache",
        help="JSONL side file of translations, reused by reruns (default: <output>.cache.jsonl)",
    )
    _add_options(parser, TranslateConfig)


def run_translate(args: argparse.Namespace) -> int:
    config = _config(TranslateConfig, args)
    output = check_output(args.output)
    cache_path = Path(args.cache) if args.cache else output.with_suffix(".cache.jsonl")
    records = read_records(args.input)
    resolve_fields(records, config.fields, args.input)  # bad fields fail before the model loads
    cache = TranslationCache(cache_path, config.model, config.src_lang, config.tgt_lang)
    translator = Seq2SeqTranslator(config)

    def progress(done: int, total: int) -> None:
        print(f"translated {done}/{total} pieces", file=sys.stderr, flush=True)

    translated, report = translate_records(
        records,
        translator,
        cache,
        fields=config.fields,
        protect=config.protect,
        batch_size=config.batch_size,
        file=args.input,
        progress=progress,
    )
    _write(translated, output)
    print(report.summary())
    print(translator.summary())
    print(f"cache: {cache_path}")
    return 0


# ---------------------------------------------------------------- registration

TOOLS = (
    (
        "translate",
        "translate text fields with a seq2seq model (NLLB)",
        add_translate_arguments,
        run_translate,
    ),
    ("noise", "clean -> noisy: seeded character and word noise", add_noise_arguments, run_noise),
    (
        "sample",
        "few-shot -> full: K records, and K repeated N times",
        add_sample_arguments,
        run_sample,
    ),
    (
        "split-length",
        "simple -> complex: short and long records",
        add_split_length_arguments,
        run_split_length,
    ),
    (
        "odd-one-out",
        "multiple-choice odd-one-out files from category word lists",
        add_odd_one_out_arguments,
        run_odd_one_out,
    ),
    (
        "cipher",
        "rewrite text into pseudo-words with a seeded word cipher",
        add_cipher_arguments,
        run_cipher,
    ),
    (
        "split",
        "split records in two, disjoint by a field's values or at random",
        add_split_arguments,
        run_split,
    ),
)


def add_data_tool_parsers(data_commands: Any) -> None:
    """Register every tool as a ``dial data`` subcommand."""
    for name, summary, add_arguments, run in TOOLS:
        parser = data_commands.add_parser(name, help=summary, description=summary)
        add_arguments(parser)
        parser.set_defaults(handler=run)

"""Experiment suites: a YAML file naming data build steps, settings, methods and seeds.

A suite::

    name: demo
    description: English template pairs -> the same pairs in a word cipher.
    seeds: [0]
    metric: accuracy              # the target metric the tables report
    length_baseline: true         # also score "prefer the longer response" on each target
    base:                         # RunConfig values shared by every run
      model: {name: minilm}
      train: {max_steps: 60, save_steps: 15}
    data:                         # build steps, run in order, cached in <output>/data
      - python: dial.experiments.demo_data:generate
        args: {output_dir: "{data}"}
        outputs: [source_train.jsonl, target_train.jsonl, target_test.jsonl]
      - dial: data cipher {data}/target_test.jsonl -o {data}/target_test_cipher.jsonl
        outputs: [target_test_cipher.jsonl]
    settings:
      - name: cipher
        train_files: ["{data}/source_train.jsonl"]
        target_files: ["{data}/target_train_cipher.jsonl"]
        eval_files: ["{data}/target_test_cipher.jsonl"]
        target_eval: target_test_cipher   # the eval set that measures the target
        source_eval: heldout              # source validation set (model selection)
        overrides: {data.eval_split: 0.2}
    methods:
      - {name: source_only, overrides: {train.method: source_only}}
      - {name: dial, overrides: {train.method: dial, domain.weight: 0.1}}
      - {name: oracle, overrides: {train.method: oracle}}
    choose:                       # label-free choice among methods (e.g. of λ)
      - {name: dial_by_dev, among: [dial_0.01, dial_0.1], by: dev}

A run's config is ``base``, then the setting's files and overrides, then the method's
overrides, then the seed (``train.seed``) and its folder. Overrides are ``section.field: value``
pairs or nested mappings. In paths and commands ``{data}`` is the experiment's data folder and
``{shared_data}`` the shared data folder (``--shared-data``, default ``../shared/data``).

A build step is ``dial: <a dial data command>`` (dial's own data tools and converters) or
``python: <module>:<function>`` with keyword ``args`` (a generator inside the ``dial``
package). A step whose ``outputs`` (paths in the data folder) all exist and whose text has not
changed since it last ran is skipped.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dial.config import RunConfig, config_from_dict
from dial.errors import ConfigError

PLACEHOLDER = re.compile(r"\{(\w+)\}")
SELECTION_CRITERIA = ("source_loss", "critic_w", "dev")
SUITE_KEYS = (
    "name",
    "description",
    "seeds",
    "metric",
    "length_baseline",
    "base",
    "data",
    "settings",
    "methods",
    "choose",
)


@dataclass
class BuildStep:
    """One data build step: a ``dial data`` command or a python generator, and its outputs."""

    outputs: list[str]
    dial: str | None = None
    python: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"dial {self.dial}" if self.dial is not None else f"python {self.python}"

    def fingerprint(self, paths: dict[str, str]) -> str:
        """A hash of what the step does, with its placeholders filled in."""
        text = json.dumps(
            [self.dial, self.python, fill(self.args, paths), self.outputs], sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Setting:
    """A source/target pair of data sets and the eval sets that measure it."""

    name: str
    train_files: list[str]
    target_files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    target_eval: str | None = None
    source_eval: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Method:
    """A training method: a name and the overrides that make it."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Choice:
    """A label-free choice among methods: the checkpoint of any run of ``among`` that ``by``
    (a model-selection criterion) ranks best, per setting and seed."""

    name: str
    among: list[str]
    by: str = "dev"


@dataclass
class Suite:
    """A parsed suite file."""

    name: str
    settings: list[Setting]
    methods: list[Method]
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "accuracy"
    length_baseline: bool = False
    base: dict[str, Any] = field(default_factory=dict)
    data: list[BuildStep] = field(default_factory=list)
    choose: list[Choice] = field(default_factory=list)

    def method_names(self) -> list[str]:
        return [method.name for method in self.methods]


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{where}: missing '{key}'")
    return mapping[key]


def _only(mapping: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; valid: {', '.join(allowed)}")


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
        raise ConfigError(f"{where}: name {value!r} must be letters, digits, '_', '.' or '-'")
    return value


def _files(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of file names")
    return list(value)


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """Dotted ``section.field: value`` overrides, from dotted keys or nested mappings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: overrides must be a mapping")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update({f"{key}.{k}": v for k, v in _overrides(item, where).items()})
        else:
            flat[str(key)] = item
    return flat


def _parse_step(raw: Any, index: int) -> BuildStep:
    where = f"data step {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'dial' or 'python'")
    _only(raw, ("dial", "python", "args", "outputs"), where)
    if ("dial" in raw) == ("python" in raw):
        raise ConfigError(f"{where}: give exactly one of 'dial' (a command) or 'python'")
    outputs = _files(_require(raw, "outputs", where), where)
    if not outputs:
        raise ConfigError(f"{where}: 'outputs' lists no files")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: 'args' must be a mapping of keyword arguments")
    if "dial" in raw:
        command = raw["dial"]
        try:
            words = shlex.split(command) if isinstance(command, str) else []
        except ValueError as exc:
            raise ConfigError(f"{where}: cannot split the command {command!r} ({exc})") from exc
        if words[:1] != ["data"]:
            raise ConfigError(f"{where}: 'dial' must be a `dial data ...` command, got {command!r}")
        if args:
            raise ConfigError(f"{where}: 'args' belongs to python steps")
        return BuildStep(outputs=outputs, dial=command)
    target = raw["python"]
    if not isinstance(target, str) or not re.fullmatch(r"dial(\.\w+)+:\w+", target):
        raise ConfigError(
            f"{where}: 'python' must name a function in the dial package as "
            f"module:function (e.g. dial.experiments.demo_data:generate), got {target!r}"
        )
    return BuildStep(outputs=outputs, python=target, args=args)


def _parse_setting(raw: Any, index: int) -> Setting:
    where = f"setting {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _only(
        raw,
        (
            "name",
            "train_files",
            "target_files",
            "eval_files",
            "target_eval",
            "source_eval",
            "overrides",
        ),
        where,
    )
    name = _name(_require(raw, "name", where), where)
    where = f"setting '{name}'"
    return Setting(
        name=name,
        train_files=_files(_require(raw, "train_files", where), where),
        target_files=_files(raw.get("target_files", []), where),
        eval_files=_files(raw.get("eval_files", []), where),
        target_eval=raw.get("target_eval"),
        source_eval=raw.get("source_eval"),
        overrides=_overrides(raw.get("overrides"), where),
    )


def _parse_method(raw: Any, index: int) -> Method:
    where = f"method {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name' and 'overrides'")
    _only(raw, ("name", "overrides"), where)
    name = _name(_require(raw, "name", where), where)
    return Method(name=name, overrides=_overrides(raw.get("overrides"), f"method '{name}'"))


def _parse_choice(raw: Any, index: int, methods: list[str]) -> Choice:
    where = f"choose {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name', 'among' and 'by'")
    _only(raw, ("name", "among", "by"), where)
    name = _name(_require(raw, "name", where), where)
    among = _files(_require(raw, "among", where), f"choose '{name}'")
    unknown = [m for m in among if m not in methods]
    if unknown or len(among) < 2:
        problem = f"unknown method '{unknown[0]}'" if unknown else "needs at least two methods"
        raise ConfigError(f"choose '{name}': {problem}; methods: {', '.join(methods)}")
    by = raw.get("by", "dev")
    if by not in SELECTION_CRITERIA:
        raise ConfigError(f"choose '{name}': by must be one of {', '.join(SELECTION_CRITERIA)}")
    return Choice(name=name, among=among, by=by)


def parse_seeds(value: Any, where: str = "seeds") -> list[int]:
    """Seeds from a list or a comma-separated string (``0,1,2``): distinct integers >= 0."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            value = [int(part) for part in parts]
        except ValueError as exc:
            raise ConfigError(f"{where}: expected comma-separated integers, got {value!r}") from exc
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise ConfigError(f"{where}: expected a non-empty list of integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: seeds repeat: {value}")
    return list(value)


def parse_suite(raw: Any, source: str = "suite") -> Suite:
    """A Suite from the plain values of a suite file; every problem is a ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping (name, settings, methods, ...)")
    _only(raw, SUITE_KEYS, source)
    settings = [_parse_setting(s, i) for i, s in enumerate(_require(raw, "settings", source))]
    methods = [_parse_method(m, i) for i, m in enumerate(_require(raw, "methods", source))]
    for kind, items in (("setting", settings), ("method", methods)):
        names = [item.name for item in items]
        if not names:
            raise ConfigError(f"{source}: no {kind}s")
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: {kind} names repeat: {names}")
    method_names = [m.name for m in methods]
    choose = [_parse_choice(c, i, method_names) for i, c in enumerate(raw.get("choose") or [])]
    clash = {c.name for c in choose} & set(method_names)
    if clash:
        raise ConfigError(f"{source}: choose name '{clash.pop()}' is also a method's name")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{source}: 'base' must be a mapping of run options")
    metric = raw.get("metric", "accuracy")
    if not isinstance(metric, str):
        raise ConfigError(f"{source}: 'metric' must be a metric name, e.g. accuracy")
    length_baseline = raw.get("length_baseline", False)
    if not isinstance(length_baseline, bool):
        raise ConfigError(f"{source}: 'length_baseline' must be true or false")
    return Suite(
        name=_name(_require(raw, "name", source), source),
        description=str(raw.get("description", "")).strip(),
        settings=settings,
        methods=methods,
        seeds=parse_seeds(raw.get("seeds", [0]), f"{source}: seeds"),
        metric=metric,
        length_baseline=length_baseline,
        base=base,
        data=[_parse_step(s, i) for i, s in enumerate(raw.get("data") or [])],
        choose=choose,
    )


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"suite file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read suite file {path}: {exc}") from exc
    return parse_suite(raw, f"suite {path}")


def fill(value: Any, paths: dict[str, str]) -> Any:
    """``value`` with ``{data}`` / ``{shared_data}`` filled in, in strings, lists and mappings."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in paths:
                raise ConfigError(
                    f"unknown placeholder {match.group()} in {value!r}; "
                    f"known: {', '.join('{' + k + '}' for k in paths)}"
                )
            return paths[match.group(1)]

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [fill(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, paths) for k, v in value.items()}
    return value


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, name = dotted.split(".")
    target = values
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {dotted}: '{section}' is not a section")
    target[name] = value


def run_values(
    suite: Suite, setting: Setting, method: Method, seed: int, output_dir: str
) -> dict[str, Any]:
    """The nested config values of one run (before placeholders are filled)."""
    values: dict[str, Any] = json.loads(json.dumps(suite.base))
    _set(values, "data.train_files", setting.train_files)
    _set(values, "data.target_files", setting.target_files)
    _set(values, "data.eval_files", setting.eval_files)
    for overrides in (setting.overrides, method.overrides):
        for key, value in overrides.items():
            _set(values, key, value)
    _set(values, "train.seed", seed)
    values["output_dir"] = output_dir
    return values


def run_config(
    suite: Suite,
    setting: Setting,
    method: Method,
    seed: int,
    output_dir: str,
    paths: dict[str, str],
) -> RunConfig:
    """The validated RunConfig of one (setting, method, seed)."""
    values = fill(run_values(suite, setting, method, seed, output_dir), paths)
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"setting '{setting.name}', method '{method.name}': {exc}") from exc


def eval_set_names(config: RunConfig) -> list[str]:
    """The names of a run's evaluation sets, as training reports them."""
    from dial.data.datasets import eval_set_name

    names = ["heldout"] if config.data.eval_split else []
    names += ["target_heldout"] if config.data.target_eval_split else []
    return names + [eval_set_name(path) for path in config.data.eval_files]


def check_eval_names(setting: Setting, config: RunConfig) -> None:
    """The setting's source and target eval sets must be among the run's eval sets."""
    names = eval_set_names(config)
    for what, name in (
        ("target_eval", target_eval_name(setting, config)),
        ("source_eval", source_eval_name(setting, config)),
    ):
        if name is not None and name not in names:
            raise ConfigError(
                f"setting '{setting.name}': {what} '{name}' is not one of its eval sets "
                f"({', '.join(names) or 'none'}: heldout with data.eval_split, target_heldout "
                "with data.target_eval_split, and one per eval file, named after it)"
            )


def target_eval_name(setting: Setting, config: RunConfig) -> str | None:
    """The eval set that measures the target: the setting's ``target_eval``, else
    ``target_heldout`` when the target is split, else the last eval file's set."""
    from dial.data.datasets import eval_set_name

    if setting.target_eval is not None:
        return setting.target_eval
    if config.data.target_eval_split:
        return "target_heldout"
    return eval_set_name(config.data.eval_files[-1]) if config.data.eval_files else None


def source_eval_name(setting: Setting, config: RunConfig) -> str | None:
    """The source validation set (model selection): the setting's ``source_eval``, else
    ``heldout`` when the source is split."""
    if setting.source_eval is not None:
        return setting.source_eval
    return "heldout" if config.data.eval_split else None


def build_data(suite: Suite, paths: dict[str, str], log=print) -> None:
    """Run the suite's build steps into ``paths['data']``; unchanged finished steps are skipped.

    A stamp file ``.steps.json`` in the data folder records each finished step's fingerprint.
    """
    folder = Path(paths["data"])
    folder.mkdir(parents=True, exist_ok=True)
    stamps_path = folder / ".steps.json"
    stamps: dict[str, str] = json.loads(stamps_path.read_text()) if stamps_path.is_file() else {}
    for index, step in enumerate(suite.data):
        outputs = [folder / name for name in step.outputs]
        key = str(index)
        fingerprint = step.fingerprint(paths)
        if stamps.get(key) == fingerprint and all(path.is_file() for path in outputs):
            log(f"data step {index + 1} ({step.describe()}): cached")
            continue
        log(f"data step {index + 1} ({step.describe()}): running")
        _run_step(step, paths, index)
        missing = [str(path) for path in outputs if not path.is_file()]
        if missing:
            raise ConfigError(
                f"data step {index + 1} ({step.describe()}) did not write {', '.join(missing)}"
            )
        stamps[key] = fingerprint
        stamps_path.write_text(json.dumps(stamps, indent=1))


def _run_step(step: BuildStep, paths: dict[str, str], index: int) -> None:
    if step.dial is not None:
        from dial.cli import main

        argv = [fill(part, paths) for part in shlex.split(step.dial)]
        code = main(argv)
        if code != 0:
            raise ConfigError(f"data step {index + 1} (dial {step.dial}) failed (exit {code})")
        return
    assert step.python is not None
    module_name, _, function_name = step.python.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"data step {index + 1}: cannot import {step.python} ({exc})") from exc
    args = fill(step.args, paths)
    try:
        inspect.signature(function).bind(**args)
    except TypeError as exc:
        raise ConfigError(f"data step {index + 1} ({step.python}): {exc}") from exc
    function(**args)

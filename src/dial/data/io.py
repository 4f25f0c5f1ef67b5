"""Reading record files: JSON, JSONL, CSV, Parquet (optionally gzipped) and hub dataset ids.

Every failure names the file and, where there is one, the record (0-based) and the field.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

from dial.errors import DataError

FILE_TYPES = ("json", "jsonl", "csv", "tsv", "parquet")


def infer_file_type(path: str | Path) -> str:
    """The file type from the suffix (``.jsonl.gz`` counts as ``jsonl``)."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1].lstrip(".") if suffixes else ""
    if suffix in FILE_TYPES:
        return suffix
    raise DataError(
        f"cannot tell the file type from the suffix '{suffix}'; "
        f"use one of .{', .'.join(FILE_TYPES)} or pass file_type",
        file=str(path),
    )


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file ({exc})", file=str(path)) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n")
        raise DataError(
            f"invalid UTF-8 at byte {exc.start} (line {line + 1})", file=str(path)
        ) from exc


def _read_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    records = []
    # only "\n" ends a line: str.splitlines would also split at U+2028 or U+0085 inside a string
    for line_number, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise DataError(
                f"line {line_number + 1} is not valid JSON ({getattr(exc, 'msg', exc)})",
                file=str(path),
                record=len(records),
            ) from exc
        records.append(record)
    return records


def _read_json(path: Path, text: str) -> list[dict[str, Any]]:
    stripped = text.lstrip()
    if not stripped.startswith("["):
        # The release's `json` file type also reads JSON Lines files.
        return _read_jsonl(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", file=str(path)
        ) from exc
    except ValueError as exc:  # an integer too long to convert
        raise DataError(f"not valid JSON ({exc})", file=str(path)) from exc
    return data


def _read_csv(path: Path, text: str, delimiter: str | None) -> list[dict[str, Any]]:
    if delimiter is None:
        first_line = text.split("\n", 1)[0]
        delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    records = []
    for index, row in enumerate(reader):
        header = len(reader.fieldnames or [])
        # DictReader puts extra cells under None and fills missing ones with None
        cells = header + len(row.get(None, ())) - sum(value is None for value in row.values())
        if cells != header:
            raise DataError(
                f"row has {cells} cells but the header has {header}", file=str(path), record=index
            )
        records.append(dict(row))
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"not a readable Parquet file ({exc})", file=str(path)) from exc
    return table.to_pylist()


def _read_hub(name: str) -> list[dict[str, Any]]:
    dataset_id, _, split = name.partition(":")
    try:
        import datasets

        loaded = datasets.load_dataset(dataset_id, split=split or "train")
    except Exception as exc:
        raise DataError(
            f"not a local file, and loading it as a hub dataset failed ({exc}); "
            "a hub id needs internet access (give it as 'owner/name' or 'owner/name:split')",
            file=name,
        ) from exc
    return [dict(row) for row in loaded]


def read_records(path: str | Path, file_type: str | None = None) -> list[dict[str, Any]]:
    """All records of a data file as dicts.

    Args:
        path: a JSON (array or lines), JSONL, CSV/TSV or Parquet file, optionally ``.gz``; or a
            hub dataset id (``owner/name`` or ``owner/name:split``) when the path does not exist.
        file_type: override the type inferred from the suffix.

    Raises:
        DataError: the file is missing, empty, unreadable, or holds something other than records.
    """
    file_path = Path(path)
    if not file_path.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")) and file_path.suffix == "":
            return _validate_records(_read_hub(str(path)), str(path))
        raise DataError("file does not exist", file=str(path))
    if file_path.is_dir():
        raise DataError("is a folder; give a data file", file=str(path))
    kind = (file_type or infer_file_type(file_path)).lower()
    if kind == "parquet":
        records = _read_parquet(file_path)
    else:
        text = _read_text(file_path)
        if not text.strip():
            raise DataError("file is empty", file=str(path))
        if kind == "jsonl":
            records = _read_jsonl(file_path, text)
        elif kind == "json":
            records = _read_json(file_path, text)
        elif kind in ("csv", "tsv"):
            records = _read_csv(file_path, text, "\t" if kind == "tsv" else None)
        else:
            raise DataError(f"unknown file type '{kind}'", file=str(path))
    return _validate_records(records, str(path))


def _validate_records(records: Any, file: str) -> list[dict[str, Any]]:
    if not isinstance(records, list):
        raise DataError("expected a list of records", file=file)
    if not records:
        raise DataError("holds no records", file=file)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(
                f"expected an object with named fields, got {type(record).__name__}",
                file=file,
                record=index,
            )
    return records


def write_records(records: list[dict[str, Any]], path: str | Path) -> None:
    """Write records as JSONL (or a JSON array for ``.json``), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        if target.suffix == ".json":
            json.dump(records, handle, ensure_ascii=False, indent=1)
        else:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    tmp.replace(target)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

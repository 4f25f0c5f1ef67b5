"""Errors that the command line reports as one clear message (exit code 2), never a traceback."""

from __future__ import annotations


class DialError(Exception):
    """A user-facing error: the CLI prints its message and exits with code 2."""


class DataError(DialError):
    """Bad input data. The message names the file, the record (0-based index) and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        record: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.record = record
        self.field = field
        self.reason = message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(DialError):
    """A bad configuration value or an unknown option."""


class RunAborted(Exception):
    """A run that cannot go on through no fault of its input (another process died or stopped
    answering): the CLI prints the message as one line and exits with code 1."""

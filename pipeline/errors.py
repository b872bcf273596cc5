"""The one error type for user mistakes and routine faults.

A ``PipelineError`` knows where it came from (file, line, field) and says how to
fix it. It is raised deep inside and caught only at the edges (CLI, web app,
scheduler job), where it becomes one line of output instead of a traceback. Its
class says which exit status a command ends with (``ExitCode``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from pathlib import Path


class ExitCode(enum.IntEnum):
    """Every command's exit status; the README's "When something goes wrong" lists them."""

    OK = 0
    PROBLEMS = 1  # problems found in posts or other input (every one is printed)
    USAGE = 2  # click's own: an unknown command or option, a bad option value
    CONFIG = 3  # pipeline.toml, the database URL or the transport spec is wrong
    DATABASE = 4  # the database cannot be reached, or another process keeps it locked
    FILES = 5  # a file or folder cannot be read or written; the disk is full or read-only
    MAIL = 6  # the mail transport (the SMTP relay, or the outbox folder) does not take mail
    BUG = 70  # an unexpected exception: a bug, printed with its traceback (sysexits' EX_SOFTWARE)


class PipelineError(Exception):
    """A mistake the user can fix: bad post, bad config, bad CSV row, bad option."""

    exit_code: int = ExitCode.PROBLEMS

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.hint = hint

    def location(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        parts = []
        loc = self.location()
        if loc:
            parts.append(loc)
        if self.field:
            parts.append(self.field)
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        parts.append(text)
        # One line, always: a newline inside a message would split a log record.
        return ": ".join(" ".join(p.split()) for p in parts)


class PipelineErrors(PipelineError):
    """Several user mistakes found in one pass; we report all of them, then stop."""

    def __init__(self, errors: Sequence[PipelineError]) -> None:
        # The first problem's place: the file (when all are in one) for whoever sorts or
        # matches errors by path; printing lists every problem.
        paths = {e.path for e in errors}
        first = errors[0] if errors and len(paths) == 1 else None
        super().__init__(
            f"{len(errors)} problem(s) found",
            path=first.path if first else None,
            line=first.line if first else None,
            field=first.field if first else None,
        )
        self.errors = list(errors)
        self.exit_code = max((e.exit_code for e in errors), default=ExitCode.PROBLEMS)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def each_problem(errors: Iterable[PipelineError]) -> list[PipelineError]:
    """Every single problem: a ``PipelineErrors`` stands for the several it holds."""
    return [one for error in errors for one in (error.errors if isinstance(error, PipelineErrors) else [error])]


class ConfigError(PipelineError):
    """A setting (in pipeline.toml or an option standing in for one) that cannot work."""

    exit_code = ExitCode.CONFIG


class DatabaseFault(PipelineError):
    """The database cannot be reached, or stays locked by another process."""

    exit_code = ExitCode.DATABASE


class FileFault(PipelineError):
    """A file or folder that cannot be read or written: permissions, a full or read-only disk."""

    exit_code = ExitCode.FILES


class MailFault(PipelineError):
    """The mail transport (the SMTP relay or the outbox folder) does not take mail."""

    exit_code = ExitCode.MAIL


def decode_text(raw: bytes, path: str | Path, *, hint: str, encoding: str = "utf-8") -> str:
    """Bytes -> text, or a PipelineError naming the line of the first undecodable byte."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError("the file is not UTF-8 text", path=path, line=line, hint=hint) from None

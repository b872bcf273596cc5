"""The one error type for user mistakes.

A ``PipelineError`` knows where it came from (file, line, field) and says how to
fix it. It is raised deep inside and caught only at the edges (CLI, web app,
scheduler job), where it becomes one line of output instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class PipelineError(Exception):
    """A mistake the user can fix: bad post, bad config, bad CSV row, bad option."""

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

    def __init__(self, errors: list[PipelineError]) -> None:
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
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def each_problem(errors: Iterable[PipelineError]) -> list[PipelineError]:
    """Every single problem: a ``PipelineErrors`` stands for the several it holds."""
    return [one for error in errors for one in (error.errors if isinstance(error, PipelineErrors) else [error])]


def decode_text(raw: bytes, path: str | Path, *, hint: str, encoding: str = "utf-8") -> str:
    """Bytes -> text, or a PipelineError naming the line of the first undecodable byte."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError("the file is not UTF-8 text", path=path, line=line, hint=hint) from None

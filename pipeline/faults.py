"""Routine faults of the machine or a server, as one ``PipelineError`` line each.

The edges (the CLI's command wrapper, the scheduler's jobs) hand every exception
they catch to ``as_pipeline_error``: a known fault (a folder that cannot be
written, a full or read-only disk, a database that cannot be reached or stays
locked) comes back as an error that names what failed and where, and how to fix
it; anything else comes back as None, which the edge reports as a bug with its
traceback. Code deep inside that knows more (which output could not be written)
raises its own ``FileFault`` with that place instead.

SQLAlchemy is looked up in ``sys.modules``, never imported here: a command that
never opened the database cannot have failed in it, and ``pipeline build`` does
not pay for loading it.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import DatabaseFault, FileFault, PipelineError

DEBUG_ENV = "PIPELINE_DEBUG"


def debug_from_env() -> bool:
    """``PIPELINE_DEBUG=1``: print the traceback of every error, not only of bugs."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def as_pipeline_error(exc: BaseException, *, database_url: str | None = None) -> PipelineError | None:
    """The one-line error for ``exc`` if it is a routine fault (or already a PipelineError),
    else None: a bug. ``database_url`` names the database in database faults."""
    if isinstance(exc, PipelineError):
        return exc
    fault = _database_fault(exc, database_url)
    if fault is not None:
        return fault
    if isinstance(exc, OSError) and exc.errno in _OS_FAULTS:
        return os_fault(exc)
    return None


# --- files and folders -------------------------------------------------------------------------

_ACCESS_HINT = "check its owner and mode with: ls -ld {path}; the pipeline runs as {user}"
_OS_FAULTS = {
    errno.ENOSPC: ("no space left on the disk", "free some space on that disk, then run the command again"),
    errno.EDQUOT: ("over the disk quota", "free some space or raise the quota, then run the command again"),
    errno.EROFS: (
        "the disk is read-only",
        "remount it read-write, or point pipeline.toml at a folder on a writable disk",
    ),
    errno.EACCES: ("permission denied", _ACCESS_HINT),
    errno.EPERM: ("operation not permitted", _ACCESS_HINT),
    errno.ENOENT: ("no such file or folder", "check the path; relative paths in pipeline.toml start at its folder"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("is a folder, not a file", "check the path"),
    errno.EIO: ("input/output error", "the disk may be failing: check the system log (dmesg)"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and run the command again"),
    errno.ENFILE: ("too many open files on this machine", "close other programs and run the command again"),
}


def display_path(path: str | Path) -> str:
    """A path as a message shows it: relative to the current folder when inside it."""
    text = os.fspath(path)
    cwd = os.getcwd()
    return text[len(cwd) + 1 :] if text.startswith(cwd + os.sep) else text


def _user() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def os_fault(exc: OSError, *, path: str | Path | None = None, doing: str = "", hint: str | None = None) -> FileFault:
    """``exc`` as a FileFault: ``path`` (default: the file the OS named), what went wrong
    (``doing``, e.g. "cannot write archive/x.html", then the reason) and how to fix it."""
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    shown = display_path(where) if where is not None else None
    reason, default_hint = _OS_FAULTS.get(exc.errno or 0, (exc.strerror or str(exc), ""))
    message = f"{doing}: {reason}" if doing else reason
    chosen = hint or default_hint.format(path=shown or ".", user=_user()) or None
    return FileFault(message, path=shown, hint=chosen)


# --- the database ----------------------------------------------------------------------------------

_SQLITE_FILE_PROBLEMS = (
    # (words in SQLite's message, what it means, how to fix it)
    (
        "unable to open database file",
        "cannot open the database file",
        _ACCESS_HINT + "; its folder must be writable too",
    ),
    ("readonly database", "the database file is read-only", _ACCESS_HINT + "; its folder must be writable too"),
    ("disk is full", "no space left on the disk", "free some space on that disk, then run the command again"),
    ("disk i/o error", "input/output error", "the disk may be failing: check the system log (dmesg)"),
)


def _disk_trouble(path: str) -> tuple[str, str] | None:
    """(reason, hint) when the disk holding ``path`` is read-only or full, else None."""
    try:
        disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    if disk.f_flag & os.ST_RDONLY:
        return _OS_FAULTS[errno.EROFS]
    if disk.f_bavail * disk.f_frsize < 64 * 1024:  # less than SQLite needs to grow its log
        return _OS_FAULTS[errno.ENOSPC]
    return None


def redact_url(url: str) -> str:
    """A database URL fit to print: its password replaced by ***, even when it does not parse."""
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy can read: mask what could be a password
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)


def _database_fault(exc: BaseException, url: str | None) -> PipelineError | None:
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is None or not isinstance(exc, sa.SQLAlchemyError):
        return None
    orig: Any = getattr(exc, "orig", None)
    routine = isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError)
    # sqlite3.DatabaseError itself (not a subclass such as IntegrityError): "file is not a database".
    if not routine and not (orig is not None and type(orig).__name__ == "DatabaseError"):
        return None
    lines = str(orig if orig is not None else exc).strip().splitlines()
    detail = lines[0].strip() if lines else type(exc).__name__
    where = redact_url(url) if url else None
    password = _password(url)
    if password:
        detail = detail.replace(password, "***")
    sqlite_file = _sqlite_file(url)
    lowered = detail.lower()
    if "locked" in lowered or "busy" in lowered:
        return DatabaseFault(
            "the database is locked by another process",
            path=sqlite_file or where,
            hint="another pipeline command or the scheduler is writing to it; run this again once it has finished",
        )
    if sqlite_file is not None:
        for words, meaning, hint in _SQLITE_FILE_PROBLEMS:
            if words in lowered:
                # SQLite reports a full disk as an I/O error when the WAL cannot grow, and a
                # read-only disk as a read-only file: the disk itself says which it is.
                reason, disk_hint = _disk_trouble(sqlite_file) or (meaning, hint)
                return FileFault(reason, path=sqlite_file, hint=disk_hint.format(path=sqlite_file, user=_user()))
        if "not a database" in lowered:
            return DatabaseFault(
                "the file is not a SQLite database",
                path=sqlite_file,
                hint="point [database] url in pipeline.toml at the pipeline's database",
            )
    return DatabaseFault(
        f"cannot use the database: {detail}",
        path=where,
        hint="check that the database server is running and reachable, and [database] url in pipeline.toml",
    )


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:
        return None
    return str(password) if password else None


def _sqlite_file(url: str | None) -> str | None:
    if not url or not url.startswith("sqlite"):
        return None
    try:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
    except Exception:
        return None
    return display_path(database) if database and database != ":memory:" else None

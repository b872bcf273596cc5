"""Atomic file writes: a reader never sees half a file, a crash never leaves one.

(out/ as a whole is published by ``pipeline.site.publish``: every file of a build
at once, or none.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pipeline.faults import os_fault


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``.

    The temporary name is unique per process and thread, so parallel writers never
    share one; a leftover from a crash starts with a dot and is never served. A
    failure (a full or read-only disk, a folder we may not write) is a ``FileFault``
    naming ``path``, and leaves the old file as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise os_fault(exc, path=path.parent, doing=f"cannot write {path.name}") from None


def has_bytes(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds exactly ``data`` (so it need not be written again)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def write_new(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write a file that no reader can see yet (inside a hidden staging folder),
    replacing one staged earlier in the same build.

    Plain ``os`` calls on a string path: a cold build makes five files a post, and a
    Path object and a buffered file object for each were a few percent of its time.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)

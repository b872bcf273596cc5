"""Edit one front-matter line of a post file, leaving every other byte as it was.

For ``pipeline unqueue`` (``draft: true``) and ``pipeline requeue`` (``date:``):
staff who prefer commands to editors. The file is edited as bytes, so its line
endings, comments, quoting, BOM and body survive untouched; only the value of
the one top-level key changes (a trailing ``# comment`` on that line is kept). A
missing key is added after ``date:``, with the file's line ending. The result is
parsed again before it is written (atomically), and refused if it does not say
what was asked.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.config import Settings
from pipeline.content.dates import DateProblem, localize
from pipeline.content.posts import Post, parse_post
from pipeline.errors import PipelineError
from pipeline.files import write_atomic

_BOM = b"\xef\xbb\xbf"
_LINE = re.compile(
    rb"^(?P<head>[A-Za-z_][\w-]*[ \t]*:[ \t]*)(?P<value>.*?)(?P<tail>[ \t]+#[^\r\n]*)?(?P<eol>\r\n|\n|\r)?$", re.S
)


def format_date(moment: datetime, zone: ZoneInfo) -> str:
    """The clinic's wall-clock time, as staff write it (``2026-11-03 09:00``); with the
    offset only when the wall-clock time alone would be ambiguous (DST)."""
    shown = moment.astimezone(zone).replace(microsecond=0)
    naive = shown.replace(tzinfo=None)
    text = naive.strftime("%Y-%m-%d %H:%M" + (":%S" if naive.second else ""))
    try:
        if localize(naive, zone) == shown:
            return text
    except DateProblem:
        pass
    return shown.isoformat(timespec="seconds" if naive.second else "minutes")


def _front_matter_bounds(lines: list[bytes], path: Path) -> int:
    """Index of the closing ``---`` line (front matter is lines 1 .. index-1)."""
    if not lines or lines[0].removeprefix(_BOM).strip() != b"---":
        raise PipelineError("missing front matter", path=path, line=1, field="front matter")
    for index in range(1, len(lines)):
        if lines[index].strip() in (b"---", b"..."):
            return index
    raise PipelineError("front matter is not closed", path=path, line=1, field="front matter")


def set_key(raw: bytes, key: str, value: str, *, path: Path) -> bytes:
    """``raw`` with the top-level front-matter ``key`` set to ``value`` (added after ``date:`` if missing)."""
    lines = raw.splitlines(keepends=True)
    end = _front_matter_bounds(lines, path)
    name = key.encode()
    anchor = None
    for index in range(1, end):
        match = _LINE.match(lines[index])
        if match is None:
            continue
        found = match.group("head").split(b":", 1)[0].strip()
        if found == b"date":
            anchor = index
        if found != name:
            continue
        following = lines[index + 1] if index + 1 < end else b""
        if match.group("value").strip() in (b"", b"|", b">") or following[:1] in (b" ", b"\t"):
            raise PipelineError(
                f"cannot edit {key}: its value spans several lines",
                path=path,
                line=index + 1,
                field=key,
                hint=f"edit the file by hand: write '{key}: {value}' on one line",
            )
        lines[index] = match.group("head") + value.encode() + (match.group("tail") or b"") + (match.group("eol") or b"")
        return b"".join(lines)
    where = anchor if anchor is not None else end - 1
    eol_match = re.search(rb"(\r\n|\n|\r)$", lines[where])
    eol = eol_match.group(1) if eol_match else b"\n"
    if not lines[where].endswith(eol):  # the anchor line lacked an ending (cannot happen before '---')
        lines[where] += eol
    lines.insert(where + 1, f"{key}: {value}".encode() + eol)
    return b"".join(lines)


def edit_post(settings: Settings, post: Post, changes: dict[str, str]) -> Post:
    """Apply ``changes`` (key -> YAML value text) to the post's file atomically; return the
    post as parsed from the new bytes."""
    path = Path(post.path)
    if not path.is_absolute() and not path.exists():
        path = settings.posts_dir / path.name
    original = path.read_bytes()
    edited = original
    for key, value in changes.items():
        edited = set_key(edited, key, value, path=path)
    updated = parse_post(edited, post.path, settings)
    if path.read_bytes() != original:
        raise PipelineError("the file changed while it was being edited", path=path, hint="run the command again")
    write_atomic(path, edited, mode=stat.S_IMODE(os.stat(path).st_mode))
    return updated

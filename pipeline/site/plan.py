"""What a build has to do: which post files to read again, which posts to render, which
are published now, and what the shared files (feeds, social queue, digest) are made of.

Pure decisions over the post cache, apart from listing and reading the post files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from pipeline.channels.feed import newest_first
from pipeline.config import Settings
from pipeline.content.posts import Post, posts_folder_fault
from pipeline.site.cache import CacheEntry, file_stamp

DIGEST_DAYS = 7


@dataclass(frozen=True)
class ApprovalGate:
    """With ``require_approval``: a post dated after ``since`` (the first run) is published
    only as the file that was approved, i.e. its (slug, content hash) is in ``approved``."""

    since: datetime
    approved: frozenset[tuple[str, str]]

    def allows(self, post: Post) -> bool:
        return post.date < self.since or (post.slug, post.content_hash) in self.approved


class ArchiveKeeper(Protocol):
    """The ledger's word on archive pages that must stay online: those of posts that were
    e-mailed (a link in a sent newsletter never breaks), even when the post has since
    become a draft, been renamed or deleted. Asked only when the build would remove an
    archive page, or restore pages on a cold build, so a plain rebuild never opens it."""

    def mailed(self) -> frozenset[str]:
        """Slugs of every post that was e-mailed."""

    def page(self, slug: str) -> bytes | None:
        """The archive page as it was mailed, or None when the ledger does not hold it."""


def queue_window(settings: Settings, now: datetime) -> datetime:
    """The social queue lists posts dated after this (queued ones and those released
    within the backfill window); older ones are never queued for social."""
    return now - timedelta(hours=settings.scheduler.backfill_hours)


def wants_snippets(post: Post, window: datetime) -> bool:
    """Whether the social queue may list ``post``, so its snippets are worth keeping."""
    return not post.draft and "social" in post.channels and post.date > window


def is_live(post: Post, now: datetime, gate: ApprovalGate | None) -> bool:
    """Released at ``now``: due, not a draft, and approved where approval is required."""
    return post.is_released(now) and (gate is None or gate.allows(post))


def by_date(post: Post) -> tuple[datetime, str]:
    return post.date, post.slug


# --- the post files ---------------------------------------------------------------------------


def list_post_files(posts_dir: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """(absolute path, stamp) of every post file (``*.md``, not hidden), sorted; one scandir."""
    folder = os.path.abspath(posts_dir)
    try:
        with os.scandir(folder) as found:
            files = [
                (entry.path, file_stamp(entry.stat()))
                for entry in found
                if entry.name.endswith(".md") and not entry.name.startswith(".") and entry.is_file()
            ]
    except OSError as exc:  # missing or unreadable: never taken for a folder without posts
        raise posts_folder_fault(exc, posts_dir) from None
    return sorted(files)


def stat_post_files(paths: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """(path, stamp) of each of ``paths`` that is still there."""
    found = []
    for path in paths:
        try:
            found.append((path, file_stamp(os.stat(path))))
        except FileNotFoundError:
            continue
    return found


@dataclass
class Work:
    """The entries that stand, and the files to read (and perhaps render) again."""

    entries: dict[str, CacheEntry]
    tasks: list[tuple[str, tuple[int, int, int], bytes | None]]  # (path, stamp, bytes read already)
    checked: int  # post files looked at


def look(
    previous: dict[str, CacheEntry],
    files: list[tuple[str, tuple[int, int, int]]],
    *,
    whole: bool,
    gone: Sequence[str] = (),
    needs_work: Callable[[CacheEntry], bool],
) -> Work:
    """Compare ``files`` with the cache. ``whole``: they are every post file there is (a
    cached file not among them is gone); else they are the only ones looked at, and
    ``gone`` the ones among those that are no longer there."""
    entries = {} if whole else dict(previous)
    for path in gone:
        entries.pop(path, None)
    tasks = []
    for path, stamp in files:
        cached = previous.get(path)
        raw = None
        if cached is not None and cached.stat != stamp:
            try:
                raw = Path(path).read_bytes()
            except OSError:
                cached = None  # gone or unreadable since listed: its task reports it
            else:
                # Same bytes (a save without changes, a copy): only the stamp is new.
                cached = dataclasses.replace(cached, stat=stamp) if cached.digest == _sha256(raw) else None
        if cached is None:
            entries.pop(path, None)
            tasks.append((path, stamp, raw))
            continue
        entries[path] = cached
        if needs_work(cached):
            tasks.append((path, stamp, raw))
    if not whole:  # the entries of files not looked at may need work too (a post now due)
        looked = {path for path, _ in files}
        tasks += [(path, e.stat, None) for path, e in entries.items() if path not in looked and needs_work(e)]
    return Work(entries, tasks, len(files))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the shared files -------------------------------------------------------------------------


def shared_plan(settings: Settings, released: list[Post], queued: list[Post], now: datetime) -> dict[str, list[Post]]:
    """Which posts the feeds, the social queue and the digest are made of."""
    window = queue_window(settings, now)
    return {
        "feed": newest_first([p for p in released if "feed" in p.channels], settings.feed.max_items),
        "queue": [p for p in released if p.date > window] + queued,
        "digest": [p for p in released if p.date > now - timedelta(days=DIGEST_DAYS) and "email" in p.channels],
    }


def shared_key(fingerprint: str, plan: dict[str, list[Post]], digests: dict[str, str], digest_name: str) -> str:
    """What the shared files are made of: while it is unchanged, they are not even rendered."""
    made_of = {name: [(p.path, digests[p.path]) for p in posts] for name, posts in plan.items()}
    return hashlib.sha256(repr((fingerprint, made_of, digest_name)).encode()).hexdigest()


_OUR_FOLDERS = ("newsletter/", "archive/", "social/")
_OUR_FILES = ("feed.xml", "atom.xml", "feed.json")


def is_ours(rel: str) -> bool:
    """Only files the build makes are pruned; anything else in out/ is left alone."""
    return rel.startswith(_OUR_FOLDERS) or rel in _OUR_FILES


def keep_mailed_pages(
    out_dir: Path,
    removed: list[str],
    keeper: ArchiveKeeper | None,
    outputs: set[str],
    *,
    restore: bool,
    stage: Callable[[str, bytes], None],
) -> list[str]:
    """Archive pages of e-mailed posts that this build no longer makes: kept where they
    are, or (when out/ was changed behind our back, e.g. wiped) written back from the ledger."""
    if keeper is None or not (restore or any(rel.startswith("archive/") for rel in removed)):
        return []
    kept = []
    for slug in sorted(keeper.mailed()):
        rel = f"archive/{slug}.html"
        if rel in outputs:
            continue  # still published: the build made it
        if rel in removed:
            kept.append(rel)
            continue
        if restore and not (out_dir / rel).exists():
            page = keeper.page(slug)
            if page is not None:
                stage(rel, page)
                kept.append(rel)
    return kept

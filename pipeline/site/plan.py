"""What a build has to do: which post files to read again, which posts to render, which
are published now, and what the shared files (feeds, social queue, digest) are made of.

Pure decisions over the post cache, apart from listing and reading the post files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.config import Settings
from pipeline.content.posts import Post, posts_folder_fault
from pipeline.site.cache import PostCache
from pipeline.site.entry import CacheEntry, file_stamp

if TYPE_CHECKING:
    from pipeline.site.catalog import Catalog

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


def stat_post_files(paths: Sequence[str]) -> list[tuple[str, tuple[int, int, int] | None]]:
    """(path, stamp) of each of ``paths``; the stamp is None when it is no longer there."""
    found: list[tuple[str, tuple[int, int, int] | None]] = []
    for path in paths:
        try:
            found.append((path, file_stamp(os.stat(path))))
        except FileNotFoundError:
            found.append((path, None))
    return found


@dataclass
class Look:
    """The cache compared with the post files looked at."""

    entries: dict[str, CacheEntry]  # the cached entries that stand (a new stamp where the bytes are the same)
    reread: dict[str, tuple[tuple[int, int, int], bytes | None]]  # new or changed files: (stamp, bytes read)
    gone: list[str]  # cached files that are no longer there
    looked: list[str]  # the files looked at


def look(
    previous: dict[str, CacheEntry], files: Sequence[tuple[str, tuple[int, int, int] | None]], *, whole: bool
) -> Look:
    """Compare ``files`` with the cache. ``whole``: they are every post file there is;
    else they are the only ones looked at (each as (path, stamp), or (path, None) when
    it is no longer there), and the cache stands for the others."""
    result = Look({} if whole else dict(previous), {}, [], [])
    for path, stamp in files:
        result.looked.append(path)
        cached = previous.get(path)
        if stamp is None:
            if result.entries.pop(path, None) is not None:
                result.gone.append(path)
            continue
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
            result.entries.pop(path, None)
            result.reread[path] = (stamp, raw)
        else:
            result.entries[path] = cached
    if whole:
        result.gone = [path for path in previous if path not in result.entries and path not in result.reread]
    return result


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- which keys, which tasks -------------------------------------------------------------------


def touched(
    looked: Look, catalog: Catalog, cache: PostCache, previous: Mapping[str, CacheEntry], now: datetime
) -> set[str]:
    """The keys a build of a few files looks at: those files, those a rescan changed,
    the posts that fell due or left the social queue since the last build, and every
    post sharing a slug with one of them."""
    assert cache.built_at is not None
    keys = set(looked.looked) | set(looked.reread) | cache.dirty
    earlier, later = sorted((cache.built_at, now))
    keys.update(catalog.dated(earlier - timedelta(hours=cache.settings.scheduler.backfill_hours), later))
    slugs = {catalog.slug_of(key) for key in keys} | {
        entry.post.slug for key in keys if (entry := previous.get(key)) is not None and entry.post is not None
    }
    keys |= catalog.slug_mates(slug for slug in slugs if slug is not None)
    return keys


def tasks(
    looked: Look,
    keys: Iterable[str],
    existing: set[str] | None,
    settings: Settings,
    now: datetime,
    gate: ApprovalGate | None,
) -> Iterator[tuple[str, tuple[int, int, int], bytes | None]]:
    """The files to read: new and changed ones, and posts whose files are missing or
    whose snippets the social queue needs."""
    yield from ((path, stamp, raw) for path, (stamp, raw) in looked.reread.items())
    window = queue_window(settings, now)
    for key in keys:
        entry = looked.entries.get(key)
        if entry is None or entry.post is None or key in looked.reread:
            continue
        post = entry.post
        missing = not entry.outputs or (existing is not None and not existing.issuperset(entry.outputs))
        if missing and entry.error is None and is_live(post, now, gate):
            yield key, entry.stat, None  # released, and its files are missing (or were never made)
            continue
        # Snippets are kept only for posts the social queue can still list (a post's
        # date never moves back into the window).
        if entry.snippets is None and wants_snippets(post, window):
            yield key, entry.stat, None


def maybe_stale(cache: PostCache, previous: Mapping[str, CacheEntry], keys: Iterable[str]) -> set[str]:
    """Files that may no longer be published, when out/ need not be listed: what the
    looked-at entries made before, the rescans' orphans and the shared files."""
    found = set(cache.orphans) | set(cache.shared_outputs)
    for key in keys:
        entry = previous.get(key)
        if entry is not None:
            found.update(entry.outputs)
    return found


def forget_old_snippets(entries: dict[str, CacheEntry], keys: Iterable[str], window: datetime) -> None:
    """Snippets of posts out of the social queue for good are not worth keeping."""
    for key in list(keys):
        entry = entries.get(key)
        if entry is not None and entry.snippets is not None and entry.post is not None and entry.post.date <= window:
            entries[key] = dataclasses.replace(entry, snippets=None)


# --- the shared files -------------------------------------------------------------------------

Planned = list[tuple[str, Post]]  # (cache key, post)


def shared_plan(
    settings: Settings, catalog: Catalog, entries: dict[str, CacheEntry], now: datetime, gate: ApprovalGate | None
) -> dict[str, Planned]:
    """Which posts the feeds, the social queue and the digest are made of, and the
    queued posts: found from the newest post back, as far as the oldest of them."""
    window = queue_window(settings, now)
    week = now - timedelta(days=DIGEST_DAYS)
    limit = settings.feed.max_items
    feed: Planned = []
    recent: Planned = []  # released after the queue window, and queued (newest first)
    digest: Planned = []
    queued: Planned = []
    for key, post in catalog.newest(entries):
        if post.date <= window and post.date <= week and len(feed) >= limit:
            break
        if post.draft:
            continue
        if is_live(post, now, gate):
            if len(feed) < limit and "feed" in post.channels:
                feed.append((key, post))
            if post.date > window:
                recent.append((key, post))
            if post.date > week and "email" in post.channels:
                digest.append((key, post))
        elif post.date > now and (gate is None or gate.allows(post)):
            recent.append((key, post))
            queued.append((key, post))
    return {"feed": feed, "queue": recent[::-1], "digest": digest[::-1], "queued": queued[::-1]}


def shared_key(fingerprint: str, shared: dict[str, Planned], entries: dict[str, CacheEntry], digest_name: str) -> str:
    """What the shared files are made of: while it is unchanged, they are not even rendered."""
    made_of = {name: [(p.path, entries[key].digest) for key, p in shared[name]] for name in ("feed", "queue", "digest")}
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
    published: Callable[[str], bool],
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
        if published(rel):
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

"""The posts folder as the scheduler watches it: the build's post cache, kept in memory.

A rescan lists posts/ and parses only the files that changed (inode, mtime or size),
bodies dropped to keep it small. A release then builds from this same cache, looking
at its own post's file alone (``build(cache=..., only=...)``): it neither lists nor
parses the archive, and the archive's size does not change what it costs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import Settings
from pipeline.content.posts import Post, drop_clashing
from pipeline.errors import PipelineError
from pipeline.site.cache import PostCache
from pipeline.site.catalog import Catalog
from pipeline.site.entry import CacheEntry
from pipeline.site.loading import display
from pipeline.site.plan import list_post_files
from pipeline.site.publish import build_lock
from pipeline.site.worker import load_renderers, read_entry

# A file saved less than this long ago may be half written: its error waits.
SETTLE_SECONDS = 1.0


class PostIndex:
    """The valid posts in ``posts/`` (bodies stripped), re-parsing only files that changed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = PostCache(settings)
        self.fresh: set[str | None] = set()  # paths (as in errors) of files changed within SETTLE_SECONDS
        self._files: dict[str, list[str]] = {}  # slug -> its post files
        self._ready = False
        self._generation = -1
        self._entries: list[tuple[str, CacheEntry]] = []
        self._posts: tuple[list[Post], list[PipelineError]] = ([], [])

    def scan(self) -> tuple[list[Post], list[PipelineError]]:
        files = list_post_files(self.settings.posts_dir)  # before the lock: a release need not wait for it
        cwd = os.getcwd()
        with build_lock(self.settings.state_dir):
            cache = self.cache
            cache.current()  # another process may have built meanwhile
            for path, stamp in files:
                entry = cache.entries.get(path)
                if entry is None or entry.stat != stamp:
                    self._read(cache, path, display(path, cwd), stamp, entry)
            for gone in cache.entries.keys() - {path for path, _ in files}:
                cache.orphans.update(cache.entries.pop(gone).outputs)
                cache.dirty.add(gone)
                cache.generation += 1
            if not self._ready:
                self._get_ready()
            if cache.generation != self._generation:  # else the posts are as the last scan found them
                self._generation = cache.generation
                self._entries = list(cache.entries.items())
                self._posts = self._sorted_out()
        posts, errors = self._posts
        if errors:
            recent = time.time_ns() - int(SETTLE_SECONDS * 1e9)
            self.fresh = {_path_of(e) for _, e in self._entries if e.stat[0] > recent}
        else:
            self.fresh = set()
        return list(posts), list(errors)

    def _sorted_out(self) -> tuple[list[Post], list[PipelineError]]:
        entries = self._entries
        self._files = {}
        for path, entry in entries:
            if entry.post is not None:
                self._files.setdefault(entry.post.slug, []).append(path)
        posts = [e.post for _, e in entries if e.post is not None]
        errors = [e.error for _, e in entries if e.post is None and e.error is not None]
        kept, clashes = drop_clashing(posts)
        return kept, errors + clashes

    def _get_ready(self) -> None:
        """What every release needs, made once at the start rather than by the first
        release: the entries indexed, the renderers loaded, the templates compiled."""
        cache = self.cache
        if cache.catalog is None and cache.built_at is not None:
            cache.catalog = Catalog.of(cache.entries)
        load_renderers(cache.environment())
        self._ready = True

    def _read(
        self, cache: PostCache, path: str, shown: str, stamp: tuple[int, int, int], old: CacheEntry | None
    ) -> None:
        try:
            raw: bytes | None = Path(path).read_bytes()
        except FileNotFoundError:
            return  # gone since listed: the next scan drops it
        except OSError:
            raw = None  # read_entry reports it
        if old is not None and raw is not None and hashlib.sha256(raw).hexdigest() == old.digest:
            entry = dataclasses.replace(old, stat=stamp)  # the same bytes (a save without changes)
        else:
            entry, _post = read_entry(path, shown, stamp, raw, self.settings)
            if old is not None:
                cache.orphans.update(old.outputs)  # made of other bytes: pruned or made again by the next build
        cache.entries[path] = entry
        cache.dirty.add(path)
        cache.generation += 1

    def files(self, slugs: Sequence[str]) -> list[str] | None:
        """The post files of these slugs as of the last scan, or None if one is unknown."""
        found = []
        for slug in slugs:
            if slug not in self._files:
                return None
            found += self._files[slug]
        return found


def _path_of(entry: CacheEntry) -> str | None:
    if entry.post is not None:
        return entry.post.path
    return entry.error.path if entry.error is not None else None

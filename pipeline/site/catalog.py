"""The post cache's entries indexed the ways a build asks about them: the valid posts
by slug (who keeps a slug two files claim) and by date (the newest for the feeds, the
recent for the queue and the digest), and how many entries claim each file in out/.

Kept in step with the entries key by key, so a build that changes a few entries (a
release) updates it in proportion to them, not to the archive; rebuilt whole after
the cache is read from its file.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from pipeline.content.posts import Post, check_unique_slugs
from pipeline.errors import PipelineError
from pipeline.site.entry import CacheEntry

_Dated = tuple[datetime, str, str]  # (date, slug, key)


class Catalog:
    def __init__(self) -> None:
        self.by_slug: dict[str, list[tuple[str, str]]] = {}  # slug -> sorted (post path, key) of valid posts
        self.by_date: list[_Dated] = []  # every valid post, oldest first
        self.claims: Counter[str] = Counter()  # file in out/ -> entries whose outputs name it
        self._indexed: dict[str, tuple[_Dated | None, str, tuple[str, ...]]] = {}  # key -> what was added

    @classmethod
    def of(cls, entries: Mapping[str, CacheEntry]) -> Catalog:
        catalog = cls()
        for key, entry in entries.items():
            catalog._add(key, entry, keep_order=False)
        catalog.by_date.sort()
        for paths in catalog.by_slug.values():
            paths.sort()
        return catalog

    def update(self, key: str, entry: CacheEntry | None) -> None:
        """``key``'s entry is now ``entry`` (None: gone)."""
        indexed = self._indexed.pop(key, None)
        if indexed is not None:
            dated, path, outputs = indexed
            self.claims.subtract(outputs)
            for rel in outputs:
                if self.claims[rel] <= 0:
                    del self.claims[rel]
            if dated is not None:
                del self.by_date[bisect.bisect_left(self.by_date, dated)]
                paths = self.by_slug[dated[1]]
                paths.remove((path, key))
                if not paths:
                    del self.by_slug[dated[1]]
        if entry is not None:
            self._add(key, entry, keep_order=True)

    def _add(self, key: str, entry: CacheEntry, *, keep_order: bool) -> None:
        post = entry.post
        dated = None
        if post is not None and entry.error is None:
            dated = (post.date, post.slug, key)
            paths = self.by_slug.setdefault(post.slug, [])
            if keep_order:
                bisect.insort(self.by_date, dated)
                bisect.insort(paths, (post.path, key))
            else:
                self.by_date.append(dated)
                paths.append((post.path, key))
        self.claims.update(entry.outputs)
        self._indexed[key] = (dated, post.path if post is not None else "", entry.outputs)

    # --- questions --------------------------------------------------------------------

    def keeps_slug(self, key: str, post: Post) -> bool:
        """Whether ``post`` (at ``key``) keeps its slug: of two files with one slug, the
        first by path does, and the other is refused (``clashes``)."""
        return self.by_slug[post.slug][0][1] == key

    def clashes(self, slugs: Iterable[str], entries: Mapping[str, CacheEntry]) -> list[PipelineError]:
        """The errors of the posts that lose a slug among ``slugs``."""
        errors = []
        for slug in slugs:
            paths = self.by_slug.get(slug, [])
            if len(paths) > 1:
                errors += check_unique_slugs([_post(entries[key]) for _, key in paths])
        return errors

    def slug_of(self, key: str) -> str | None:
        """The slug ``key`` is indexed under (None when it is not a valid post)."""
        indexed = self._indexed.get(key)
        return indexed[0][1] if indexed is not None and indexed[0] is not None else None

    def slug_mates(self, slugs: Iterable[str]) -> set[str]:
        """The keys of every valid post with one of ``slugs``."""
        return {key for slug in slugs for _, key in self.by_slug.get(slug, [])}

    def dated(self, after: datetime, until: datetime) -> list[str]:
        """Keys of the posts dated after ``after`` and up to ``until``."""
        start = bisect.bisect_right(self.by_date, (after, "\uffff"))
        return [key for date, _, key in self.by_date[start:] if date <= until]

    def newest(self, entries: Mapping[str, CacheEntry]) -> Iterator[tuple[str, Post]]:
        """(key, post) of every valid post that keeps its slug, newest first."""
        for _, _, key in reversed(self.by_date):
            post = _post(entries[key])
            if self.keeps_slug(key, post):
                yield key, post


def _post(entry: CacheEntry) -> Post:
    assert entry.post is not None
    return entry.post

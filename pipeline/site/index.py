"""The posts folder as the scheduler watches it: every post parsed once, again only when
its file changes (inode, mtime or size), bodies dropped to keep it small."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from pipeline.config import Settings
from pipeline.content.posts import Post, drop_clashing, parse_post, post_files
from pipeline.errors import PipelineError

# A file saved less than this long ago may be half written: its error waits.
SETTLE_SECONDS = 1.0


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class PostIndex:
    """The valid posts in ``posts/`` (bodies stripped), re-parsing only files that changed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[Path, tuple[tuple[int, int, int], Post | PipelineError]] = {}
        self.fresh: set[str | None] = set()  # paths (as in errors) of files changed within SETTLE_SECONDS

    def scan(self) -> tuple[list[Post], list[PipelineError]]:
        seen = set()
        for path in post_files(self.settings.posts_dir):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            seen.add(path)
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                continue
            try:
                post = parse_post(path.read_bytes(), _display(path), self.settings)
                parsed: Post | PipelineError = dataclasses.replace(post, body_markdown="", body_html="", body_text="")
            except PipelineError as error:
                parsed = error
            except FileNotFoundError:
                continue
            self._cache[path] = (stamp, parsed)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        recent = time.time_ns() - int(SETTLE_SECONDS * 1e9)
        self.fresh = {str(e.path) for (_ino, mtime, _size), e in self._cache.values() if mtime > recent}
        posts = [p for _, p in self._cache.values() if isinstance(p, Post)]
        errors = [e for _, e in self._cache.values() if isinstance(e, PipelineError)]
        kept, clashes = drop_clashing(posts)
        return kept, errors + clashes

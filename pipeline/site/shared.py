"""The files every post shares: the feeds, the social queue and the latest digest.

Rendered only when what they are made of changed (``plan.shared_key``), and written
only where their bytes changed. The feeds carry each post's whole article, so the
posts in the feeds keep their HTML body in the cache: a release renders the feeds
from the cache and the post it released, without reading the other posts again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.content.posts import Post, parse_post
from pipeline.errors import PipelineError
from pipeline.files import has_bytes
from pipeline.site.entry import CacheEntry, light
from pipeline.site.plan import Planned

if TYPE_CHECKING:
    import jinja2


@dataclass
class Shared:
    outputs: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    error: PipelineError | None = None
    feed_keys: frozenset[str] = frozenset()


def make_shared(
    settings: Settings,
    env: Callable[[], jinja2.Environment],
    shared_plan: dict[str, Planned],
    entries: dict[str, CacheEntry],
    fulls: Mapping[str, Post],
    feed_keys: frozenset[str],
    now: datetime,
    stage: Callable[[str, bytes], None],
) -> Shared:
    """Render the shared files of ``shared_plan`` and stage those whose bytes changed.

    ``fulls``: whole posts this build has at hand, by key; ``feed_keys``: the entries
    that kept their body for the feeds so far. Updates ``entries`` so that exactly the
    feeds' posts keep it.
    """
    from pipeline.site.outputs import shared_outputs

    feed = _feed_posts(settings, shared_plan["feed"], entries, fulls)
    kept = frozenset(key for key, _ in shared_plan["feed"])
    for key in feed_keys - kept:  # out of the feeds: its body goes
        entry = entries.get(key)
        if entry is not None and entry.post is not None and entry.post.body_html:
            entries[key] = dataclasses.replace(entry, post=light(entry.post))
    queue = []
    for key, post in shared_plan["queue"]:
        snippets = entries[key].snippets
        if snippets is not None:
            queue.append((post, snippets))
    digest = [post for _, post in shared_plan["digest"]]
    made, error = shared_outputs(settings, env(), feed, queue, digest, now)
    shared = Shared(error=error, feed_keys=kept)
    for rel, data in made.items():
        if not has_bytes(settings.out_dir / rel, data):  # unchanged files keep their mtime
            stage(rel, data)
            shared.written.append(rel)
        shared.outputs.append(rel)
    return shared


def _feed_posts(
    settings: Settings, planned: Planned, entries: dict[str, CacheEntry], fulls: Mapping[str, Post]
) -> list[Post]:
    """The feeds' posts with their HTML body: from the cache, from this build, or read again."""
    feed = []
    for key, post in planned:
        entry = entries[key]
        if post.body_html:
            feed.append(post)
            continue
        full = fulls.get(key)
        if full is None or full.content_hash != entry.digest:
            full = parse_post(Path(key).read_bytes(), post.path, settings)
        entries[key] = dataclasses.replace(entry, post=light(full, keep_html=True))
        feed.append(full)
    return feed

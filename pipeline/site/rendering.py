"""Running a build's per-post tasks (``pipeline.site.worker``) and keeping what the
build's own process still needs of them: the newest whole posts (the feeds carry their
article) and the newsletters a release asked for (its campaign sends exactly them)."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.site.catalog import Catalog
from pipeline.site.entry import CacheEntry
from pipeline.site.loading import display, full_posts
from pipeline.site.plan import ApprovalGate, by_date, is_live
from pipeline.site.publish import Staging
from pipeline.site.worker import Made, Run, Task, run_tasks

if TYPE_CHECKING:
    import jinja2

    from pipeline.channels.newsletter import Newsletter


@dataclass
class Rendered:
    paths: set[str] = field(default_factory=set)  # the files read (and rendered where released)
    newest: dict[str, Post] = field(default_factory=dict)  # whole posts that may be in the feeds, by key
    newsletters: dict[str, Newsletter] = field(default_factory=dict)  # by slug


def render_tasks(
    settings: Settings,
    now: datetime,
    gate: ApprovalGate | None,
    staging: Staging,
    environment: Callable[[], jinja2.Environment],
    entries: dict[str, CacheEntry],
    tasks: list[tuple[str, tuple[int, int, int], bytes | None]],
    jobs: int | None,
    on_progress: Callable[[int, int], None] | None,
    want: Collection[str],
) -> Rendered:
    """Run the tasks ((path, stamp, bytes read already)); each one's entry goes into ``entries``."""
    rendered = Rendered()
    if not tasks:
        return rendered
    cwd = os.getcwd()
    todo = [Task(path, display(path, cwd), stamp, raw) for path, stamp, raw in tasks]
    run = Run(settings, now, gate, str(staging.root))
    for done, made in enumerate(run_tasks(todo, run, environment(), jobs), start=1):
        entries[made.path] = made.entry
        rendered.paths.add(made.path)
        _keep(rendered, made, settings.feed.max_items, now, gate, want)
        if on_progress:
            on_progress(done, len(todo))
    return rendered


def _keep(
    rendered: Rendered, made: Made, limit: int, now: datetime, gate: ApprovalGate | None, want: Collection[str]
) -> None:
    post = made.post
    if post is None:
        return
    if made.newsletter is not None and post.slug in want:
        rendered.newsletters[post.slug] = made.newsletter
    if "feed" in post.channels and is_live(post, now, gate):
        # The feeds hold the newest posts: only the newest rendered here can be among them.
        rendered.newest[made.path] = post
        if len(rendered.newest) > 2 * limit:
            newest = sorted(rendered.newest.items(), key=lambda item: by_date(item[1]), reverse=True)[:limit]
            rendered.newest = dict(newest)


def render_clash_keepers(
    settings: Settings,
    entries: dict[str, CacheEntry],
    catalog: Catalog,
    rendered: Collection[str],
    environment: Callable[[], jinja2.Environment],
    stage: Callable[[str, bytes], None],
    now: datetime,
    gate: ApprovalGate | None,
) -> None:
    """A post rendered in this run that lost its slug to another file may have written
    over the files of the post that keeps it: render the keeper again."""
    keepers = []
    for key in rendered:
        post = entries[key].post
        if post is None or entries[key].error is not None or catalog.keeps_slug(key, post):
            continue
        keeper = entries[catalog.by_slug[post.slug][0][1]]
        if keeper.post is not None and is_live(keeper.post, now, gate) and keeper.post not in keepers:
            keepers.append(keeper.post)
    if not keepers:
        return
    from pipeline.site.outputs import post_outputs

    for post in full_posts(settings, keepers):
        for rel, data in post_outputs(post, settings, environment()).items():
            stage(rel, data)

"""load -> select -> render -> write, and nothing else.

Renders are cached by content (``pipeline.site.cache``): a post whose file, templates
and settings are unchanged is not parsed or rendered again and its files are not
rewritten (a file whose size, mtime and inode are unchanged is not even read). The
feeds, the social queue and the digest are rendered when what they are made of
changed, and written only where their bytes changed. A large build renders on every
core (``pipeline.site.worker``).

A build normally lists every post file. Given the scheduler's cache and ``only`` (the
files of the posts it releases), it looks at those files alone and trusts the cache,
which the scheduler's rescans keep fresh, for the rest: a release then costs the same
whatever the archive holds.

Every file is written into a staging folder and published with the others once all
are made (``pipeline.site.publish``): a build that fails leaves out/ as it was.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import jinja2

from pipeline.channels.templating import templates_fingerprint
from pipeline.config import Settings
from pipeline.content.posts import Post, drop_clashing
from pipeline.errors import PipelineError
from pipeline.site import plan
from pipeline.site.cache import CacheEntry, PostCache, existing_outputs, tree_stamp
from pipeline.site.loading import display, find_post, full_posts, load_posts
from pipeline.site.plan import ApprovalGate, ArchiveKeeper, by_date, is_live
from pipeline.site.publish import Staging, build_lock, recover, stage_fault
from pipeline.site.worker import Made, Run, Task, run_tasks

if TYPE_CHECKING:
    from pipeline.channels.newsletter import Newsletter

__all__ = ["ApprovalGate", "ArchiveKeeper", "BuildResult", "build", "find_post", "full_posts", "load_posts"]


@dataclass
class BuildResult:
    posts: list[Post]  # every valid post, bodies stripped
    released: list[Post]
    queued: list[Post]
    errors: list[PipelineError]
    withheld: list[Post] = field(default_factory=list)  # due, but not approved
    rendered: int = 0
    reused: int = 0
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # archive pages of mailed posts that are no longer published
    checked: int = 0  # post files looked at (listed and compared with the cache)
    # The newsletters of the posts named in ``build(newsletters=...)`` that this build
    # rendered in its own process, from exactly the bytes its ``posts`` were parsed from.
    newsletters: dict[str, Newsletter] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def warnings(self) -> list[PipelineError]:
        """What was fixed in valid posts (e.g. markup removed from a title), by file."""
        return [w for p in sorted(self.posts, key=lambda p: p.path) for w in p.warnings]


def build(
    settings: Settings,
    now: datetime,
    *,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    gate: ApprovalGate | None = None,
    keeper: ArchiveKeeper | None = None,
    cache: PostCache | None = None,
    only: Sequence[str] | None = None,
    newsletters: Collection[str] = (),
) -> BuildResult:
    """Render every post released at ``now`` into out/, and publish it whole.

    ``cache``: a post cache kept in memory (the scheduler's), else the one in state/ is
    read. ``only``: look at these post files alone and trust ``cache`` for the others.
    Raises a ``PipelineError`` (a ``FileFault`` for a full or read-only disk) when the
    build cannot finish; out/ is then exactly as it was.
    """
    with build_lock(settings.state_dir):
        recover(settings.out_dir)
        if cache is None or cache.settings != settings:
            cache, only = PostCache(settings), None
        cache.current()
        staging = Staging(settings.out_dir)
        try:
            return _build(settings, now, staging, cache, only, jobs, on_progress, gate, keeper, newsletters)
        except BaseException:
            staging.discard()
            raise


@dataclass
class _Rendered:
    """What the build's own process keeps of the posts it rendered."""

    paths: set[str] = field(default_factory=set)
    newest: dict[str, Post] = field(default_factory=dict)  # whole posts that may be in the feeds
    newsletters: dict[str, Newsletter] = field(default_factory=dict)


def _build(
    settings: Settings,
    now: datetime,
    staging: Staging,
    cache: PostCache,
    only: Sequence[str] | None,
    jobs: int | None,
    on_progress: Callable[[int, int], None] | None,
    gate: ApprovalGate | None,
    keeper: ArchiveKeeper | None,
    want: Collection[str],
) -> BuildResult:
    out_dir = settings.out_dir
    fingerprint = templates_fingerprint(settings)
    cache.use_templates(fingerprint)
    previous = cache.entries
    tree = tree_stamp(out_dir)
    listed = not (tree and tree == cache.tree)  # out/ changed (or is new) since the last build
    existing = existing_outputs(out_dir) if listed else cache.claimed()
    work = _look(settings, cache, only, existing, now, gate)
    entries = work.entries

    made = _render(settings, now, gate, staging, cache.environment, entries, work.tasks, jobs, on_progress, want)
    staged = {rel for key in made.paths for rel in entries[key].outputs}  # before the outputs of clashes are dropped

    def stage(rel: str, data: bytes) -> None:
        try:
            staging.write(rel, data)
        except OSError as exc:
            raise stage_fault(exc, out_dir, rel) from None
        staged.add(rel)

    valid, clashes = drop_clashing([e.post for e in entries.values() if e.post is not None and e.error is None])
    clashing = {str(e.path) for e in clashes}
    errors = [e.error for e in entries.values() if e.error is not None] + clashes
    valid.sort(key=by_date)
    released = [p for p in valid if is_live(p, now, gate)]
    withheld = [p for p in valid if p.is_released(now) and not is_live(p, now, gate)]
    queued = [p for p in valid if not p.draft and p.date > now and (gate is None or gate.allows(p))]

    outputs, written = _published(entries, clashing, made.paths, now, gate)
    _render_clash_keepers(settings, entries, made.paths, clashing, released, cache.environment, stage)

    keys = {e.post.path: key for key, e in entries.items() if e.post is not None}
    shared_plan = plan.shared_plan(settings, released, queued, now)
    digests = {e.post.path: e.digest for e in entries.values() if e.post is not None}
    shared_key = plan.shared_key(fingerprint, shared_plan, digests, _digest_name(shared_plan, now, settings))
    feed_keys = cache.feed_keys
    if shared_key == cache.shared_key and existing.issuperset(cache.shared_outputs):
        shared = list(cache.shared_outputs)  # nothing they depend on changed: not even rendered
    else:
        from pipeline.site.shared import make_shared

        made_shared = make_shared(
            settings, cache.environment, shared_plan, entries, keys, made.newest, feed_keys, now, stage
        )
        if made_shared.error is not None:
            errors.append(made_shared.error)
        shared, feed_keys = made_shared.outputs, made_shared.feed_keys
        written += made_shared.written
    outputs.update(shared)

    removed = sorted(rel for rel in existing - outputs if plan.is_ours(rel))
    kept = plan.keep_mailed_pages(out_dir, removed, keeper, outputs, restore=listed, stage=stage)
    removed = [rel for rel in removed if rel not in kept]
    outputs.update(kept)
    _forget_old_snippets(entries, plan.queue_window(settings, now))

    publishing = bool(staged or removed)
    changed = (
        cache.dirty
        or entries.keys() != previous.keys()
        or any(previous.get(key) is not entry for key, entry in entries.items())
    )
    pending = None
    if publishing or changed or shared_key != cache.shared_key or tree != cache.tree:
        # Written before publishing, so a full state disk fails the build while out/ is untouched.
        pending = cache.save(entries, shared_key, tuple(shared), feed_keys, whole=only is None)
    try:
        staging.publish(drop=staged - outputs, remove=removed)
    except BaseException:
        if pending is not None:
            pending.discard()
        raise
    tree = tree_stamp(out_dir) if publishing else tree
    if pending is not None:
        pending.commit(tree)
    cache.adopt(entries, shared_key, tuple(shared), feed_keys, tree)
    return BuildResult(
        posts=valid,
        released=released,
        queued=queued,
        withheld=withheld,
        errors=sorted(errors, key=lambda e: (e.path or "", e.line or 0)),
        rendered=len(made.paths),
        reused=len(entries) - len(made.paths),
        written=sorted(set(written)),
        removed=removed,
        kept=kept,
        checked=work.checked,
        newsletters=made.newsletters,
    )


def _look(
    settings: Settings,
    cache: PostCache,
    only: Sequence[str] | None,
    existing: set[str],
    now: datetime,
    gate: ApprovalGate | None,
) -> plan.Work:
    """The post files to read again and the posts to render: every file, or ``only``."""
    window = plan.queue_window(settings, now)

    def needs_work(entry: CacheEntry) -> bool:
        post = entry.post
        if post is None:
            return False
        if (
            entry.error is None
            and is_live(post, now, gate)
            and not (entry.outputs and existing.issuperset(entry.outputs))
        ):
            return True  # released, and its files are missing (or were never made)
        # Snippets are kept only for posts the social queue can still list (a post's
        # date never moves back into the window).
        return entry.snippets is None and plan.wants_snippets(post, window)

    if only is None:
        return plan.look(cache.entries, plan.list_post_files(settings.posts_dir), whole=True, needs_work=needs_work)
    files = plan.stat_post_files(only)
    found = {path for path, _ in files}
    gone = [path for path in only if path not in found]
    return plan.look(cache.entries, files, whole=False, gone=gone, needs_work=needs_work)


def _render(
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
) -> _Rendered:
    """Run the tasks; their entries go into ``entries``."""
    rendered = _Rendered()
    if not tasks:
        return rendered
    cwd = os.getcwd()
    todo = [Task(path, display(path, cwd), stamp, raw) for path, stamp, raw in tasks]
    run = Run(settings, now, gate, str(staging.root))
    limit = settings.feed.max_items
    for done, result in enumerate(run_tasks(todo, run, environment(), jobs), start=1):
        entries[result.path] = result.entry
        rendered.paths.add(result.path)
        _keep_whole(rendered, result, limit, now, gate, want)
        if on_progress:
            on_progress(done, len(todo))
    return rendered


def _keep_whole(
    rendered: _Rendered, result: Made, limit: int, now: datetime, gate: ApprovalGate | None, want: Collection[str]
) -> None:
    post = result.post
    if post is None:
        return
    if result.newsletter is not None and post.slug in want:
        rendered.newsletters[post.slug] = result.newsletter
    if "feed" in post.channels and is_live(post, now, gate):
        # The feeds hold the newest posts: only the newest rendered here can be among them.
        rendered.newest[result.path] = post
        if len(rendered.newest) > 2 * limit:
            newest = sorted(rendered.newest.items(), key=lambda item: by_date(item[1]), reverse=True)[:limit]
            rendered.newest = dict(newest)


def _published(
    entries: dict[str, CacheEntry], clashing: set[str], rendered: set[str], now: datetime, gate: ApprovalGate | None
) -> tuple[set[str], list[str]]:
    """The files of posts published now, and those this build made; the entries of
    posts not published now forget their files (pruned below; made again once they are)."""
    outputs: set[str] = set()
    written: list[str] = []
    for key, entry in entries.items():
        post = entry.post
        if post is None or entry.error is not None or post.path in clashing or not is_live(post, now, gate):
            if entry.outputs:
                entries[key] = dataclasses.replace(entry, outputs=())
            continue
        outputs.update(entry.outputs)
        if key in rendered:
            written.extend(entry.outputs)
    return outputs, written


def _render_clash_keepers(
    settings: Settings,
    entries: dict[str, CacheEntry],
    rendered: set[str],
    clashing: set[str],
    released: list[Post],
    environment: Callable[[], jinja2.Environment],
    stage: Callable[[str, bytes], None],
) -> None:
    """A clashing post rendered in this run may have written over the files of the post
    that keeps the slug: render the keeper again."""
    overwritten = {
        e.post.slug for k, e in entries.items() if k in rendered and e.post is not None and e.post.path in clashing
    }
    keepers = [p for p in released if p.slug in overwritten]
    if not keepers:
        return
    from pipeline.site.outputs import post_outputs

    for post in full_posts(settings, keepers):
        for rel, data in post_outputs(post, settings, environment()).items():
            stage(rel, data)


def _forget_old_snippets(entries: dict[str, CacheEntry], window: datetime) -> None:
    for key, entry in entries.items():
        if entry.snippets is not None and entry.post is not None and entry.post.date <= window:
            entries[key] = dataclasses.replace(entry, snippets=None)  # out of the queue for good


def _digest_name(shared_plan: dict[str, list[Post]], now: datetime, settings: Settings) -> str:
    """The digest's name, which changes with the clinic's date (there is none without posts)."""
    if not shared_plan["digest"]:
        return ""
    from pipeline.channels.newsletter import digest_key  # with MJML: only when a digest is made

    return digest_key(now, settings)

"""load -> select -> render -> write, and nothing else.

Renders are cached by content (``pipeline.site.cache``): a post whose file, templates
and settings are unchanged is not parsed or rendered again and its files are not
rewritten (a file whose size, mtime and inode are unchanged is not even read). The
feeds, the social queue and the digest are rendered when what they are made of
changed, and written only where their bytes changed. A large build renders on every
core (``pipeline.site.worker``).

A build lists every post file and looks at every entry of the cache. Given the
scheduler's cache and ``only`` (the files of the posts it releases), it looks at those
files alone and at the entries they and the clock touch: posts that fell due or left
the social queue since the last build, those that share a slug with them, those a
rescan changed. The cache, which the scheduler's rescans keep fresh, stands for the
rest, so a release costs the same whatever the archive holds.

Every file is written into a staging folder and published with the others once all
are made (``pipeline.site.publish``): a build that fails leaves out/ as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.errors import PipelineError
from pipeline.site import plan
from pipeline.site.cache import PostCache, templates_fingerprint
from pipeline.site.catalog import Catalog
from pipeline.site.entry import CacheEntry
from pipeline.site.loading import find_post, full_posts, load_posts
from pipeline.site.plan import ApprovalGate, ArchiveKeeper, is_live
from pipeline.site.publish import Staging, build_lock, existing_outputs, recover, stage_fault, tree_stamp
from pipeline.site.rendering import Rendered, render_clash_keepers, render_tasks
from pipeline.site.shared import Shared
from pipeline.urls import digest_key

if TYPE_CHECKING:
    from pipeline.channels.newsletter import Newsletter

__all__ = ["ApprovalGate", "ArchiveKeeper", "BuildResult", "build", "find_post", "full_posts", "load_posts"]


@dataclass
class BuildResult:
    """What a build did. A build of ``only`` some files reports on their posts alone in
    ``posts``, ``released``, ``queued``, ``withheld`` and ``errors``."""

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
    checked: int = 0  # post files looked at (compared with the cache)
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
    ``newsletters``: slugs whose newsletters to hand back (``BuildResult.newsletters``).
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
            return _Build(settings, now, staging, cache, gate, keeper).run(only, jobs, on_progress, newsletters)
        except BaseException:
            staging.discard()
            cache.catalog = None  # it may have been updated for entries the cache never adopted
            raise


class _Build:
    """One build's steps, over the cache keys it looks at: every key, or those ``only`` touches."""

    def __init__(
        self,
        settings: Settings,
        now: datetime,
        staging: Staging,
        cache: PostCache,
        gate: ApprovalGate | None,
        keeper: ArchiveKeeper | None,
    ) -> None:
        self.settings, self.now, self.staging, self.cache, self.gate, self.keeper = (
            settings, now, staging, cache, gate, keeper,
        )  # fmt: skip
        self.fingerprint = templates_fingerprint(settings)
        cache.use_templates(self.fingerprint)
        self.previous = cache.entries
        self.tree = tree_stamp(settings.out_dir)
        self.listed = not (self.tree and self.tree == cache.tree)  # out/ changed (or is new) since the last build
        self.staged: set[str] = set()

    def stage(self, rel: str, data: bytes) -> None:
        try:
            self.staging.write(rel, data)
        except OSError as exc:
            raise stage_fault(exc, self.settings.out_dir, rel) from None
        self.staged.add(rel)

    def run(
        self,
        only: Sequence[str] | None,
        jobs: int | None,
        on_progress: Callable[[int, int], None] | None,
        want: Collection[str],
    ) -> BuildResult:
        settings, cache, now = self.settings, self.cache, self.now
        whole = only is None or self.listed or cache.built_at is None
        # What out/ holds: listed when it changed behind our back, else what the cache says.
        existing = existing_outputs(settings.out_dir) if self.listed else cache.claimed() if whole else None
        files = plan.list_post_files(settings.posts_dir) if only is None else plan.stat_post_files(only)
        looked = plan.look(self.previous, files, whole=only is None)
        entries = looked.entries
        catalog = None if whole else cache.catalog or Catalog.of(self.previous)
        keys = (
            set(entries) | set(looked.reread) | set(looked.gone)
            if catalog is None
            else plan.touched(looked, catalog, cache, self.previous, now)
        )

        tasks = list(plan.tasks(looked, keys, existing, settings, now, self.gate))
        made = render_tasks(
            settings, now, self.gate, self.staging, cache.environment, entries, tasks, jobs, on_progress, want
        )
        self.staged = {rel for key in made.paths for rel in entries[key].outputs}
        if catalog is None:
            catalog = Catalog.of(entries)
        else:
            for key in keys:
                catalog.update(key, entries.get(key))
        written = self._decide(entries, catalog, keys, made)
        render_clash_keepers(settings, entries, catalog, made.paths, cache.environment, self.stage, now, self.gate)
        shared, shared_key = self._shared(entries, catalog, made, existing)
        written += shared.written
        shared_set = set(shared.outputs)

        def published(rel: str) -> bool:
            return catalog.claims[rel] > 0 or rel in shared_set

        candidates = existing if existing is not None else plan.maybe_stale(cache, self.previous, keys)
        removed = sorted(rel for rel in candidates if plan.is_ours(rel) and not published(rel))
        kept = plan.keep_mailed_pages(
            settings.out_dir, removed, self.keeper, published, restore=self.listed, stage=self.stage
        )
        removed = [rel for rel in removed if rel not in kept]
        plan.forget_old_snippets(entries, entries.keys() if whole else keys, plan.queue_window(settings, now))
        self._finish(entries, catalog, keys, whole, shared, shared_key, published, removed, kept)
        errors = [shared.error] if shared.error is not None else []
        result = _result(entries, catalog, None if only is None else looked.looked, errors, now, self.gate)
        result.rendered, result.reused = len(made.paths), len(entries) - len(made.paths)
        result.written, result.removed, result.kept = sorted(set(written)), removed, kept
        result.checked, result.newsletters = len(files), made.newsletters
        return result

    # --- what is published --------------------------------------------------------------

    def _decide(self, entries: dict[str, CacheEntry], catalog: Catalog, keys: set[str], made: Rendered) -> list[str]:
        """Which posts are published now: the entries of the others forget their files
        (pruned below; made again once they are). Returns the files this build made."""
        slugs = {entry.post.slug for key in keys if (entry := entries.get(key)) is not None and entry.post is not None}
        keys |= catalog.slug_mates(slugs)  # a post that now shares a slug with a new file may lose it
        written: list[str] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                continue
            post = entry.post
            if (
                post is None
                or entry.error is not None
                or not catalog.keeps_slug(key, post)
                or not is_live(post, self.now, self.gate)
            ):
                if entry.outputs:
                    entries[key] = dataclasses.replace(entry, outputs=())
                    catalog.update(key, entries[key])
            elif key in made.paths:
                written += entry.outputs
        return written

    def _shared(
        self, entries: dict[str, CacheEntry], catalog: Catalog, made: Rendered, existing: set[str] | None
    ) -> tuple[Shared, str]:
        cache = self.cache
        shared_plan = plan.shared_plan(self.settings, catalog, entries, self.now, self.gate)
        key = plan.shared_key(self.fingerprint, shared_plan, entries, self._digest_name(shared_plan))
        if key == cache.shared_key and (existing is None or existing.issuperset(cache.shared_outputs)):
            return Shared(list(cache.shared_outputs), feed_keys=cache.feed_keys), key  # not even rendered
        from pipeline.site.shared import make_shared

        return make_shared(
            self.settings, cache.environment, shared_plan, entries, made.newest, cache.feed_keys, self.now, self.stage
        ), key

    def _digest_name(self, shared_plan: dict[str, plan.Planned]) -> str:
        """The digest's name, which changes with the clinic's date (there is none without posts)."""
        if not shared_plan["digest"]:
            return ""
        return digest_key(self.now, self.settings)

    # --- publishing ---------------------------------------------------------------------

    def _finish(
        self,
        entries: dict[str, CacheEntry],
        catalog: Catalog,
        keys: set[str],
        whole: bool,
        shared: Shared,
        shared_key: str,
        published: Callable[[str], bool],
        removed: list[str],
        kept: list[str],
    ) -> None:
        """Save the cache, publish out/, then mark the cache as describing it."""
        cache, previous = self.cache, self.previous
        if whole:
            changed = entries.keys() != previous.keys() or any(previous.get(k) is not e for k, e in entries.items())
        else:
            changed = any(previous.get(key) is not entries.get(key) for key in keys)
        pending = None
        shared_outputs = tuple(shared.outputs)
        if (
            self.staged
            or removed
            or changed
            or cache.dirty
            or shared_key != cache.shared_key
            or self.tree != cache.tree
        ):
            # Written before publishing, so a full state disk fails the build while out/ is untouched.
            pending = cache.save(
                entries, shared_key, shared_outputs, shared.feed_keys, self.now, changed=None if whole else keys
            )
        try:
            drop = {rel for rel in self.staged if not published(rel) and rel not in kept}
            self.staging.publish(drop=drop, remove=removed)
        except BaseException:
            if pending is not None:
                pending.discard()
            raise
        tree = tree_stamp(self.settings.out_dir) if self.staged or removed else self.tree
        if pending is not None:
            pending.commit(tree)
        cache.adopt(entries, shared_key, shared_outputs, shared.feed_keys, tree, catalog, self.now)


def _result(
    entries: dict[str, CacheEntry],
    catalog: Catalog,
    looked: list[str] | None,
    errors: list[PipelineError],
    now: datetime,
    gate: ApprovalGate | None,
) -> BuildResult:
    """What the build says about every post, or (a build of ``only``) about the files it looked at."""
    keys = entries.keys() if looked is None else [key for key in looked if key in entries]
    valid, slugs = [], set()
    for key in keys:
        entry = entries[key]
        if entry.error is not None:
            errors.append(entry.error)
        elif entry.post is not None:
            slugs.add(entry.post.slug)
            if catalog.keeps_slug(key, entry.post):
                valid.append(entry.post)
    errors += catalog.clashes(slugs, entries)
    valid.sort(key=plan.by_date)
    released = [p for p in valid if is_live(p, now, gate)]
    withheld = [p for p in valid if p.is_released(now) and not is_live(p, now, gate)]
    queued = [p for p in valid if not p.draft and p.date > now and (gate is None or gate.allows(p))]
    return BuildResult(
        posts=valid,
        released=released,
        queued=queued,
        withheld=withheld,
        errors=sorted(errors, key=lambda e: (e.path or "", e.line or 0)),
    )

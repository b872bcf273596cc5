"""load -> select -> render -> write, and nothing else.

Renders are cached by content: a post whose file, templates and settings are
unchanged is not parsed or rendered again and its outputs are not rewritten
(a file whose size and mtime are unchanged is not even read). Feeds, the social
queue and the digest are cheap and are rebuilt every time, but written only when
their bytes change. Per-post work runs on every core.

Every file is written into a staging folder and published with the others once
all are made (``pipeline.site.publish``): a build that fails leaves out/ as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gc
import hashlib
import os
import pickle
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jinja2

from pipeline.channels.feed import newest_first
from pipeline.channels.templating import make_environment, templates_fingerprint
from pipeline.config import Settings
from pipeline.content.posts import (
    Post,
    drop_clashing,
    errors_for_slug,
    parse_post,
    post_files,
    posts_folder_fault,
)
from pipeline.errors import PipelineError
from pipeline.faults import os_fault
from pipeline.files import has_bytes, write_new
from pipeline.site.publish import Staging, build_lock, recover, stage_fault

CACHE_VERSION = 6  # 5: Post.warnings; 6: publishing through out/.staging
PARALLEL_THRESHOLD = 64  # below this many posts to render, a process pool costs more than it saves
DIGEST_DAYS = 7


@dataclass
class CacheEntry:
    stat: tuple[int, int]  # (mtime_ns, size) of the file when it was read
    digest: str  # sha256 of its bytes
    post: Post | None  # without bodies (they are large; re-read when needed)
    error: PipelineError | None
    outputs: tuple[str, ...] = ()  # the files it wrote, relative to out/
    snippets: dict[str, Mapping[str, Any]] | None = None  # for the social queue


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

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def warnings(self) -> list[PipelineError]:
        """What was fixed in valid posts (e.g. markup removed from a title), by file."""
        return [w for p in sorted(self.posts, key=lambda p: p.path) for w in p.warnings]


def _light(post: Post) -> Post:
    return dataclasses.replace(post, body_markdown="", body_html="", body_text="")


# --- per-post work (runs in worker processes) ---------------------------------


@dataclass(frozen=True)
class _Run:
    """What every task of one build shares: sent to each worker once, not with each task."""

    settings: Settings
    now: datetime
    gate: ApprovalGate | None
    staging: str  # every file goes into this folder first (see pipeline.site.publish)


_worker: tuple[_Run, jinja2.Environment] | None = None


def _init_worker(run: _Run) -> None:
    global _worker
    env = make_environment(run.settings)
    env.auto_reload = False  # templates do not change during a build
    _worker = (run, env)


@dataclass(frozen=True)
class _Task:
    path: str
    display: str  # the path as messages show it
    stat: tuple[int, int]
    raw: bytes | None  # the file's bytes when the build has read them already, else read by the worker


def _by_date(post: Post) -> tuple[datetime, str]:
    return post.date, post.slug


def _queue_window(settings: Settings, now: datetime) -> datetime:
    """The social queue lists posts dated after this (queued ones and those released
    within the backfill window); older ones are never queued for social."""
    return now - timedelta(hours=settings.scheduler.backfill_hours)


def _wants_snippets(post: Post, window: datetime) -> bool:
    """Whether the social queue may list ``post``, so its snippets are worth keeping."""
    return not post.draft and "social" in post.channels and post.date > window


def _live(post: Post, now: datetime, gate: ApprovalGate | None) -> bool:
    """Released at ``now``: due, not a draft, and approved where approval is required."""
    return post.is_released(now) and (gate is None or gate.allows(post))


def _unreadable(display: str, exc: OSError) -> PipelineError:
    return PipelineError(
        f"could not be read: {exc.strerror or exc}", path=display, hint="check the file and build again"
    )


def _process(task: _Task) -> CacheEntry:
    """Parse one file; when it is released, render and write its outputs."""
    assert _worker is not None
    run, env = _worker
    settings = run.settings
    try:
        raw = task.raw if task.raw is not None else Path(task.path).read_bytes()
    except OSError as exc:  # deleted or made unreadable since the folder was listed
        return CacheEntry((0, 0), "", post=None, error=_unreadable(task.display, exc))  # a stat no file has: read again
    try:
        post = parse_post(raw, task.display, settings)
    except PipelineError as error:
        return CacheEntry(task.stat, hashlib.sha256(raw).hexdigest(), post=None, error=error)
    entry = CacheEntry(task.stat, post.content_hash, post=_light(post), error=None)
    # The renderers (MJML, twitter-text, the e-mail package) load only in a build that
    # renders something: a rebuild with nothing to do is mostly start-up time.
    from pipeline.site.outputs import post_outputs, post_snippets

    try:
        snippets = None
        if not post.draft and "social" in post.channels:
            snippets = post_snippets(post, settings, env)
            if _wants_snippets(post, _queue_window(settings, run.now)):
                entry.snippets = snippets
        if not _live(post, run.now, run.gate):
            return entry
        outputs = post_outputs(post, settings, env, snippets)
    except PipelineError as error:  # this post's own mistake: reported, the others go on
        entry.error = error
        return entry
    for rel, data in outputs.items():
        try:
            write_new(f"{run.staging}/{rel}", data)
        except OSError as exc:  # a full or read-only disk: the whole build stops, out/ untouched
            raise stage_fault(exc, settings.out_dir, rel) from None
    entry.outputs = tuple(outputs)
    return entry


# --- the cache ------------------------------------------------------------------


def _cache_path(settings: Settings) -> Path:
    return settings.state_dir / "build-cache.pickle"


@dataclass
class Cache:
    entries: dict[str, CacheEntry] = field(default_factory=dict)  # by absolute post path
    shared_key: str = ""  # what the feeds, queue and digest were last built from
    shared_outputs: tuple[str, ...] = ()
    # mtimes of out/ and its per-post folders after the build: while they are unchanged,
    # no file was added or removed there, and out/ need not be listed again.
    tree: tuple[int, ...] = ()


@contextlib.contextmanager
def _long_lived_objects() -> Iterator[None]:
    """For creating many objects that live as long as the build and hold no reference cycles.

    A large archive's cache is some 200,000 objects. The cycle collector would walk them
    all as they are made and again at each of its later passes, a third of a no-op build:
    it is paused while they are made, and they are then put out of its sight
    (gc.freeze). They are still freed as usual once nothing refers to them.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if collecting:
            gc.enable()


# The cache file starts with out/'s tree stamp, of fixed size, then the pickled cache:
# the cache is written before publishing (a full state disk fails the build while
# out/ is untouched), and the stamp, known only after publishing, is filled in then.
_TREE = struct.Struct("<B4q")  # how many stamps, then up to four


def _load_cache(settings: Settings, fingerprint: str) -> Cache:
    try:
        with _cache_path(settings).open("rb") as handle, _long_lived_objects():
            count, *stamps = _TREE.unpack(handle.read(_TREE.size))
            version, stored_fingerprint, out_dir, cache = pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, struct.error):
        return Cache()  # no cache, or one from another version: build from scratch
    if version != CACHE_VERSION or stored_fingerprint != fingerprint or out_dir != str(settings.out_dir.resolve()):
        return Cache()
    cache.tree = tuple(stamps[:count])
    return cache  # type: ignore[no-any-return]


class _PendingCache:
    """The new cache, written to a temporary file; ``commit`` stamps and renames it."""

    def __init__(self, settings: Settings, fingerprint: str, cache: Cache) -> None:
        self.path = _cache_path(settings)
        # One name, not one per process: builds take turns (build_lock), and a file left by
        # a crash is simply written over by the next build.
        self.tmp = f"{self.path.parent}/.{self.path.name}.tmp"
        state = (CACHE_VERSION, fingerprint, str(settings.out_dir.resolve()), dataclasses.replace(cache, tree=()))
        try:
            write_new(self.tmp, _TREE.pack(0, 0, 0, 0, 0) + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            self.discard()
            raise os_fault(exc, path=self.path.parent, doing=f"cannot write {self.path.name}") from None

    def commit(self, tree: tuple[int, ...]) -> None:
        try:
            fd = os.open(self.tmp, os.O_WRONLY)
            try:
                os.pwrite(fd, _TREE.pack(len(tree), *tree, *(0,) * (4 - len(tree))), 0)  # overwrites: no new space
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise os_fault(
                exc, path=self.path.parent, doing=f"out/ is published, but cannot save {self.path.name}"
            ) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _post_files(posts_dir: Path) -> list[tuple[str, os.stat_result]]:
    """(absolute path, stat) of every post file, sorted; one scandir, no per-file Path objects."""
    folder = os.path.abspath(posts_dir)
    try:
        with os.scandir(folder) as found:
            files = [(entry.path, entry.stat()) for entry in found if entry.name.endswith(".md") and entry.is_file()]
    except OSError as exc:  # missing or unreadable: never taken for a folder without posts
        raise posts_folder_fault(exc, posts_dir) from None
    return sorted(files)


_PER_POST_FOLDERS = ("newsletter", "archive", "social")


def _tree_stamp(out_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(os.stat(out_dir / name).st_mtime_ns for name in ("", *_PER_POST_FOLDERS))
    except FileNotFoundError:
        return ()


def _existing_outputs(out_dir: Path) -> set[str]:
    found: set[str] = set()

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, f"{prefix}{entry.name}/")
                else:
                    found.add(prefix + entry.name)

    if out_dir.is_dir():
        walk(str(out_dir), "")
    return found


# --- loading ------------------------------------------------------------------------


def _display(path: Path, cwd: str) -> str:
    text = str(path)
    return text[len(cwd) + 1 :] if text.startswith(cwd + os.sep) else text


def load_posts(settings: Settings, *, posts_dir: Path | None = None) -> tuple[list[Post], list[PipelineError]]:
    """Every valid post (full, with bodies) and every error; slugs checked for clashes."""
    cwd = os.getcwd()
    posts, errors = [], []
    for path in post_files(posts_dir or settings.posts_dir):
        display = _display(path.absolute(), cwd)
        try:
            posts.append(parse_post(path.read_bytes(), display, settings))
        except PipelineError as error:
            errors.append(error)
        except OSError as exc:  # one unreadable post never hides the others' problems
            errors.append(_unreadable(display, exc))
    kept, clashes = drop_clashing(posts)
    return kept, sorted(errors + clashes, key=lambda e: (e.path or "", e.line or 0))


def find_post(settings: Settings, slug: str) -> Post:
    """The post with this slug (drafts and future posts included), or one error saying why not:
    the post's own error if its file is broken, else the closest slug there is."""
    posts, errors = load_posts(settings)
    post = next((p for p in posts if p.slug == slug), None)
    if post is not None:
        return post
    broken = errors_for_slug(errors, slug)
    if broken:
        raise broken[0]
    close = difflib.get_close_matches(slug, [p.slug for p in posts], n=1)
    raise PipelineError(
        f"no post with slug {slug!r}",
        field="slug",
        hint=f"did you mean {close[0]!r}?" if close else "`pipeline queue` lists the queued posts",
    )


def full_posts(settings: Settings, light_posts: Iterable[Post]) -> list[Post]:
    """Re-read the bodies of a few posts (feeds, digests) from their files."""
    return [parse_post(Path(light.path).read_bytes(), light.path, settings) for light in light_posts]


# --- the build --------------------------------------------------------------------


def build(
    settings: Settings,
    now: datetime,
    *,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    gate: ApprovalGate | None = None,
    keeper: ArchiveKeeper | None = None,
) -> BuildResult:
    """Render every post released at ``now`` into out/, and publish it whole.

    Raises a ``PipelineError`` (a ``FileFault`` for a full or read-only disk) when the
    build cannot finish; out/ is then exactly as it was.
    """
    try:
        with build_lock(settings.state_dir):
            recover(settings.out_dir)
            staging = Staging(settings.out_dir)
            try:
                return _build(settings, now, staging, jobs=jobs, on_progress=on_progress, gate=gate, keeper=keeper)
            except BaseException:
                staging.discard()
                raise
    finally:
        # The collector sees the cache again once it is no longer needed: in a process
        # that goes on (the scheduler) nothing stays out of its sight for good.
        gc.unfreeze()


def _build(
    settings: Settings,
    now: datetime,
    staging: Staging,
    *,
    jobs: int | None,
    on_progress: Callable[[int, int], None] | None,
    gate: ApprovalGate | None,
    keeper: ArchiveKeeper | None,
) -> BuildResult:
    out_dir = settings.out_dir
    fingerprint = templates_fingerprint(settings)
    cache = _load_cache(settings, fingerprint)
    previous = cache.entries
    tree = _tree_stamp(out_dir)
    listed = not (tree and tree == cache.tree)  # out/ changed (or is new) since the last build
    if listed:
        existing = _existing_outputs(out_dir)
    else:
        existing = {rel for e in previous.values() for rel in e.outputs} | set(cache.shared_outputs)
    cwd = os.getcwd()

    entries: dict[str, CacheEntry] = {}
    tasks: list[_Task] = []
    changed = False  # anything to write back to the cache?
    # Snippets are kept only for posts the social queue can still list (a post's date
    # never moves back into the window).
    window = _queue_window(settings, now)
    for key, info in _post_files(settings.posts_dir):
        stat = (info.st_mtime_ns, info.st_size)
        cached = previous.get(key)
        raw = b""
        if cached is not None and cached.stat != stat:
            changed = True
            try:
                raw = Path(key).read_bytes()
            except OSError:
                cached = None  # gone or unreadable since listed: the worker reports it
            else:
                digest = hashlib.sha256(raw).hexdigest()
                cached = dataclasses.replace(cached, stat=stat) if cached.digest == digest else None
        if cached is not None:
            post = cached.post
            live = post is not None and cached.error is None and _live(post, now, gate)
            needs_snippets = post is not None and _wants_snippets(post, window)
            if (not live or (cached.outputs and existing.issuperset(cached.outputs))) and (
                cached.snippets is not None or not needs_snippets
            ):
                entries[key] = cached
                continue
        # A file not read yet is read (and hashed) by the worker that parses it.
        tasks.append(_Task(key, _display(Path(key), cwd), stat, raw or None))

    rendered = {task.path for task in tasks}
    for done, (key, entry) in enumerate(_run(tasks, _Run(settings, now, gate, str(staging.root)), jobs), start=1):
        entries[key] = entry
        if on_progress:
            on_progress(done, len(tasks))
    staged = {rel for key in rendered for rel in entries[key].outputs}  # before the outputs of clashes are dropped

    def stage(rel: str, data: bytes) -> None:
        try:
            staging.write(rel, data)
        except OSError as exc:
            raise stage_fault(exc, out_dir, rel) from None
        staged.add(rel)

    valid, clashes = drop_clashing([e.post for e in entries.values() if e.post is not None and e.error is None])
    clashing = {e.path for e in clashes}
    errors = [e.error for e in entries.values() if e.error is not None] + clashes
    valid.sort(key=_by_date)
    released = [p for p in valid if _live(p, now, gate)]
    withheld = [p for p in valid if p.is_released(now) and not _live(p, now, gate)]
    queued = [p for p in valid if not p.draft and p.date > now and (gate is None or gate.allows(p))]

    # Outputs of posts that are live now; anything else in our folders is stale.
    outputs: set[str] = set()
    written: list[str] = []
    for key, entry in entries.items():
        if (
            entry.post is None
            or entry.error is not None
            or entry.post.path in clashing
            or not _live(entry.post, now, gate)
        ):
            # Not published now: its files are pruned below, and it renders afresh once it is.
            entry.outputs = ()
            continue
        outputs.update(entry.outputs)
        if key in rendered:
            written.extend(entry.outputs)

    made: list[jinja2.Environment] = []

    def env_or_new() -> jinja2.Environment:
        if not made:
            made.append(make_environment(settings))
        return made[0]

    # A clashing post rendered in this run may have written over the files of the post
    # that keeps the slug: render the keeper again.
    overwritten = {
        e.post.slug for k, e in entries.items() if k in rendered and e.post is not None and e.post.path in clashing
    }
    for post in full_posts(settings, [p for p in released if p.slug in overwritten]):
        from pipeline.site.outputs import post_outputs  # loaded only if there is such a post

        for rel, data in post_outputs(post, settings, env_or_new()).items():
            stage(rel, data)

    snippets = {e.post.path: e.snippets for e in entries.values() if e.post is not None and e.snippets is not None}
    digests = {e.post.path: e.digest for e in entries.values() if e.post is not None}
    plan = _plan_shared(settings, released, queued, now)
    shared_key = hashlib.sha256(
        repr(
            (
                fingerprint,
                {name: [(p.path, digests[p.path]) for p in posts] for name, posts in plan.items()},
                _digest_key(now, settings),
            )
        ).encode()
    ).hexdigest()
    if shared_key == cache.shared_key and existing.issuperset(cache.shared_outputs):
        shared = list(cache.shared_outputs)  # nothing they depend on changed: not even rendered
    else:
        shared = []
        from pipeline.site.outputs import shared_outputs

        queue = [(p, snippets[p.path]) for p in plan["queue"] if p.path in snippets]
        made_shared, digest_error = shared_outputs(
            settings, env_or_new(), full_posts(settings, plan["feed"]), queue, plan["digest"], now
        )
        if digest_error is not None:
            errors.append(digest_error)
        for rel, data in made_shared.items():
            if not has_bytes(out_dir / rel, data):  # unchanged files keep their mtime
                stage(rel, data)
                written.append(rel)
            shared.append(rel)
    outputs.update(shared)

    removed = sorted(rel for rel in existing - outputs if _is_ours(rel))
    kept = _keep_mailed_pages(out_dir, removed, keeper, outputs, restore=listed, stage=stage)
    removed = [rel for rel in removed if rel not in kept]
    outputs.update(kept)

    for entry in entries.values():
        if entry.snippets is not None and entry.post is not None and entry.post.date <= window:
            entry.snippets = None  # out of the queue for good: not worth keeping
            changed = True
    publishing = bool(staged or removed)
    pending = None
    if (
        publishing
        or changed
        or tasks
        or shared_key != cache.shared_key
        or entries.keys() != previous.keys()
        or tree != cache.tree
    ):
        # Written before publishing, so a full state disk fails the build while out/ is untouched.
        pending = _PendingCache(settings, fingerprint, Cache(entries, shared_key, tuple(shared)))
    try:
        staging.publish(drop=staged - outputs, remove=removed)
    except BaseException:
        if pending is not None:
            pending.discard()
        raise
    if pending is not None:
        pending.commit(_tree_stamp(out_dir) if publishing else tree)
    return BuildResult(
        posts=valid,
        released=released,
        queued=queued,
        withheld=withheld,
        errors=sorted(errors, key=lambda e: (e.path or "", e.line or 0)),
        rendered=len(rendered),
        reused=len(entries) - len(rendered),
        written=sorted(set(written)),
        removed=removed,
        kept=kept,
    )


def _keep_mailed_pages(
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


def _run(tasks: list[_Task], run: _Run, jobs: int | None) -> Iterable[tuple[str, CacheEntry]]:
    workers = jobs or os.cpu_count() or 1
    if len(tasks) < PARALLEL_THRESHOLD or workers == 1:
        _init_worker(run)
        for task in tasks:
            yield task.path, _process(task)
        return
    from concurrent.futures import ProcessPoolExecutor

    with (
        ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(run,)) as pool,
        _long_lived_objects(),  # the cache entries the workers send back
    ):
        chunk = max(1, min(32, len(tasks) // (workers * 8)))
        results = pool.map(_process, tasks, chunksize=chunk)
        yield from zip((task.path for task in tasks), results, strict=True)


_OUR_FOLDERS = ("newsletter/", "archive/", "social/")
_OUR_FILES = ("feed.xml", "atom.xml", "feed.json")


def _is_ours(rel: str) -> bool:
    """Only files this build makes are pruned; anything else in out/ is left alone."""
    return rel.startswith(_OUR_FOLDERS) or rel in _OUR_FILES


def _digest_key(now: datetime, settings: Settings) -> str:
    return now.astimezone(settings.clinic.zone).strftime("%Y-%m-%d")


def _plan_shared(settings: Settings, released: list[Post], queued: list[Post], now: datetime) -> dict[str, list[Post]]:
    """Which posts the feeds, the social queue and the digest are made of."""
    window = _queue_window(settings, now)
    return {
        "feed": newest_first([p for p in released if "feed" in p.channels], settings.feed.max_items),
        "queue": [p for p in released if p.date > window] + queued,
        "digest": [p for p in released if p.date > now - timedelta(days=DIGEST_DAYS) and "email" in p.channels],
    }

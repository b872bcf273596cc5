"""load -> select -> render -> write, and nothing else.

Renders are cached by content: a post whose file bytes, templates and settings
are unchanged is not parsed or rendered again, and its outputs are not
rewritten. Feeds, the social queue and the digest are cheap and are rebuilt
every time. Per-post work runs on every core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import jinja2

from pipeline.channels.feed import render_feeds
from pipeline.channels.newsletter import Newsletter, render_digest, render_post_newsletter
from pipeline.channels.social import queue_csv, render_snippets, snippets_json
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.message import MessageTemplate
from pipeline.posts import Post, check_unique_slugs, parse_post, post_files
from pipeline.render import make_environment, templates_fingerprint
from pipeline.writer import write_atomic, write_if_changed

CACHE_VERSION = 1
PARALLEL_THRESHOLD = 64  # below this, a process pool costs more than it saves
DIGEST_DAYS = 7


@dataclass
class CacheEntry:
    post: Post | None  # without bodies (they are large; re-parse when needed)
    error: PipelineError | None
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 of bytes


@dataclass
class BuildResult:
    posts: list[Post]  # every valid post, with bodies stripped
    released: list[Post]
    queued: list[Post]
    errors: list[PipelineError]
    rendered: int = 0
    reused: int = 0
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _light(post: Post) -> Post:
    return dataclasses.replace(post, body_markdown="", body_html="", body_text="")


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- per-post work (runs in worker processes) ---------------------------------

_worker_settings: Settings | None = None
_worker_env: jinja2.Environment | None = None


def _init_worker(settings: Settings) -> None:
    global _worker_settings, _worker_env
    _worker_settings = settings
    _worker_env = make_environment(settings)


def post_outputs(post: Post, settings: Settings, env: jinja2.Environment) -> dict[str, bytes]:
    """Every file one released post contributes to ``out/`` (pure)."""
    outputs: dict[str, bytes] = {}
    if "email" in post.channels:
        newsletter = render_post_newsletter(post, settings, env)
        outputs.update(newsletter_outputs(newsletter, settings))
    else:
        outputs[f"archive/{post.slug}.html"] = render_post_newsletter(post, settings, env).web_html.encode()
    if "social" in post.channels:
        outputs[f"social/{post.slug}.json"] = snippets_json(post, render_snippets(post, settings, env), settings)
    return outputs


def newsletter_outputs(newsletter: Newsletter, settings: Settings, *, folder: str = "newsletter") -> dict[str, bytes]:
    return {
        f"{folder}/{newsletter.key}.html": newsletter.html.encode(),
        f"{folder}/{newsletter.key}.txt": newsletter.text.encode(),
        f"{folder}/{newsletter.key}.eml": MessageTemplate(newsletter, settings).preview(),
        f"archive/{newsletter.key}.html": newsletter.web_html.encode(),
    }


def _process(task: tuple[str, str, bytes, bool, datetime]) -> tuple[str, CacheEntry]:
    """Parse one file and, when it is released, render and write its outputs."""
    display, file_path, raw, render, now = task
    assert _worker_settings is not None and _worker_env is not None
    settings, env = _worker_settings, _worker_env
    try:
        post = parse_post(raw, display, settings)
    except PipelineError as error:
        return file_path, CacheEntry(post=None, error=error)
    entry = CacheEntry(post=_light(post), error=None)
    if render and post.is_released(now):
        try:
            outputs = post_outputs(post, settings, env)
        except PipelineError as error:
            return file_path, CacheEntry(post=_light(post), error=error)
        out_dir = settings.out_dir
        for rel, data in outputs.items():
            write_atomic(out_dir / rel, data)
            entry.outputs[rel] = hashlib.sha256(data).hexdigest()
    return file_path, entry


# --- the cache ------------------------------------------------------------------


def _cache_path(settings: Settings) -> Path:
    return settings.state_dir / "build-cache.pickle"


def _load_cache(settings: Settings, fingerprint: str) -> dict[tuple[str, str], CacheEntry]:
    try:
        with _cache_path(settings).open("rb") as handle:
            version, stored_fingerprint, out_dir, entries = pickle.load(handle)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        return {}
    if version != CACHE_VERSION or stored_fingerprint != fingerprint or out_dir != str(settings.out_dir.resolve()):
        return {}
    return entries  # type: ignore[no-any-return]


def _save_cache(settings: Settings, fingerprint: str, entries: dict[tuple[str, str], CacheEntry]) -> None:
    data = pickle.dumps(
        (CACHE_VERSION, fingerprint, str(settings.out_dir.resolve()), entries), protocol=pickle.HIGHEST_PROTOCOL
    )
    write_atomic(_cache_path(settings), data)


def _existing_outputs(out_dir: Path) -> set[str]:
    found = set()
    for root, _dirs, files in os.walk(out_dir):
        for name in files:
            if not name.startswith("."):
                found.add(os.path.relpath(os.path.join(root, name), out_dir))
    return found


# --- the build --------------------------------------------------------------------


def load_posts(settings: Settings, *, posts_dir: Path | None = None) -> tuple[list[Post], list[PipelineError]]:
    """Every valid post (full, with bodies) and every error; slugs checked for clashes."""
    posts, errors = [], []
    for path in post_files(posts_dir or settings.posts_dir):
        try:
            posts.append(parse_post(path.read_bytes(), _display_path(path), settings))
        except PipelineError as error:
            errors.append(error)
    clashes = check_unique_slugs(posts)
    clashing = {e.path for e in clashes}
    return [p for p in posts if p.path not in clashing], sorted(
        errors + clashes, key=lambda e: (e.path or "", e.line or 0)
    )


def full_posts(settings: Settings, light_posts: Iterable[Post]) -> list[Post]:
    """Re-read the bodies of a few posts (feeds, digests) from their files."""
    return [parse_post(Path(light.path).read_bytes(), light.path, settings) for light in light_posts]


def build(
    settings: Settings,
    now: datetime,
    *,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    out_dir = settings.out_dir
    fingerprint = templates_fingerprint(settings)
    cache = _load_cache(settings, fingerprint)
    existing = _existing_outputs(out_dir) if out_dir.exists() else set()

    files = post_files(settings.posts_dir)
    entries: dict[tuple[str, str], CacheEntry] = {}
    tasks = []
    for path in files:
        raw = path.read_bytes()
        display = _display_path(path)
        key = (str(path), hashlib.sha256(raw).hexdigest())
        cached = cache.get(key)
        is_live = cached is not None and cached.post is not None and cached.post.is_released(now)
        if cached is not None and (not is_live or (cached.outputs and set(cached.outputs) <= existing)):
            entries[key] = cached
            continue
        tasks.append((key, (display, str(path), raw, True, now)))

    rendered_keys = set()
    if tasks:
        workers = jobs or os.cpu_count() or 1
        if len(tasks) < PARALLEL_THRESHOLD or workers == 1:
            _init_worker(settings)
            results = map(_process, (task for _, task in tasks))
            for done, (key, _) in enumerate(tasks, start=1):
                entries[key] = next(results)[1]
                rendered_keys.add(key)
                if on_progress:
                    on_progress(done, len(tasks))
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings,)) as pool:
                chunk = max(1, min(64, len(tasks) // (workers * 8)))
                for done, ((key, _), (_path, entry)) in enumerate(
                    zip(tasks, pool.map(_process, [t for _, t in tasks], chunksize=chunk), strict=True), start=1
                ):
                    entries[key] = entry
                    rendered_keys.add(key)
                    if on_progress:
                        on_progress(done, len(tasks))

    errors = [e.error for e in entries.values() if e.error is not None]
    valid = [e.post for e in entries.values() if e.post is not None and e.error is None]
    clashes = check_unique_slugs(valid)
    clashing = {e.path for e in clashes}
    errors.extend(clashes)
    valid = [p for p in valid if p.path not in clashing]
    released = [p for p in valid if p.is_released(now)]
    queued = sorted((p for p in valid if not p.draft and p.date > now), key=lambda p: (p.date, p.slug))

    outputs: dict[str, str] = {}
    keep_from_cache = {
        rel
        for key, entry in entries.items()
        if entry.error is None
        and entry.post is not None
        and entry.post.path not in clashing
        and entry.post.is_released(now)
        for rel in entry.outputs
    }
    for entry in entries.values():
        if entry.post is not None and entry.post.path in clashing:
            continue
        for rel in entry.outputs:
            if rel in keep_from_cache:
                outputs[rel] = entry.outputs[rel]

    env = make_environment(settings)
    written = [rel for key in rendered_keys for rel in entries[key].outputs if rel in keep_from_cache]
    # A clashing post rendered in this run may have written over the files of the
    # post that keeps the slug: render the keeper again.
    overwritten = {
        e.post.slug for k, e in entries.items() if k in rendered_keys and e.post is not None and e.post.path in clashing
    }
    for post in full_posts(settings, [p for p in released if p.slug in overwritten]):
        for rel, data in post_outputs(post, settings, env).items():
            write_atomic(out_dir / rel, data)

    shared = _shared_outputs(settings, env, released, queued, now, errors)
    for rel, data in shared.items():
        if write_if_changed(out_dir / rel, data):
            written.append(rel)
        outputs[rel] = hashlib.sha256(data).hexdigest()

    removed = sorted(rel for rel in existing - set(outputs) if _is_ours(rel))
    for rel in removed:
        (out_dir / rel).unlink(missing_ok=True)

    for entry in entries.values():
        if entry.post is not None and not entry.post.is_released(now):
            entry.outputs = {}
    _save_cache(settings, fingerprint, entries)
    return BuildResult(
        posts=sorted(valid, key=lambda p: (p.date, p.slug)),
        released=sorted(released, key=lambda p: (p.date, p.slug)),
        queued=queued,
        errors=sorted(errors, key=lambda e: (e.path or "", e.line or 0)),
        rendered=len(rendered_keys),
        reused=len(entries) - len(rendered_keys),
        written=sorted(written),
        removed=removed,
    )


_OUR_FOLDERS = ("newsletter/", "archive/", "social/")
_OUR_FILES = ("feed.xml", "atom.xml", "feed.json")


def _is_ours(rel: str) -> bool:
    """Only files this build makes are pruned; anything else in out/ is left alone."""
    return rel.startswith(_OUR_FOLDERS) or rel in _OUR_FILES


def _shared_outputs(
    settings: Settings,
    env: jinja2.Environment,
    released: list[Post],
    queued: list[Post],
    now: datetime,
    errors: list[PipelineError],
) -> dict[str, bytes]:
    from pipeline.channels.feed import newest_first

    outputs: dict[str, bytes] = {}
    feed_posts = full_posts(
        settings, newest_first([p for p in released if "feed" in p.channels], settings.feed.max_items)
    )
    feeds = render_feeds(feed_posts, settings, env)
    outputs["feed.xml"] = feeds.rss
    outputs["atom.xml"] = feeds.atom
    outputs["feed.json"] = feeds.json

    # The social queue: what is still to go out, plus what went out within the
    # backfill window (older posts are never queued for social automatically).
    window = now - timedelta(hours=settings.scheduler.backfill_hours)
    queue_posts = [p for p in released if p.date > window] + queued
    rows = [(p, render_snippets(p, settings, env)) for p in queue_posts if "social" in p.channels]
    outputs["social/queue.csv"] = queue_csv(rows, settings)

    recent = [p for p in released if p.date > now - timedelta(days=DIGEST_DAYS) and "email" in p.channels]
    if recent:
        try:
            digest = render_digest(recent, settings, env, now=now)
        except PipelineError as error:
            errors.append(error)
        else:
            for rel, data in newsletter_outputs(digest, settings).items():
                # The latest digest keeps one stable name; its web page keeps its dated one.
                outputs[rel if rel.startswith("archive/") else rel.replace(digest.key, "digest")] = data
    return outputs

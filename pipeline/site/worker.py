"""The per-post work of a build: parse one file and, when its post is released, render
its files into the staging folder.

A large build runs it in worker processes forked from the build's own process after
that process has loaded the renderers and compiled the templates, so each worker
starts with them instead of loading them again. Only the cache entry (no bodies, no
rendered pages) goes back to the build. A small build (a release) runs it in the
build's own process, which then also keeps the post and its newsletter: the feeds
and the release's campaign use them instead of parsing and rendering again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.content.posts import Post, parse_post
from pipeline.errors import PipelineError
from pipeline.files import write_new
from pipeline.site.cache import long_lived_objects
from pipeline.site.entry import CacheEntry, light
from pipeline.site.loading import unreadable
from pipeline.site.plan import ApprovalGate, is_live, queue_window, wants_snippets
from pipeline.site.publish import stage_fault

if TYPE_CHECKING:
    import jinja2

    from pipeline.channels.newsletter import Newsletter

PARALLEL_THRESHOLD = 64  # below this many posts to render, a process pool costs more than it saves


@dataclass(frozen=True)
class Run:
    """What every task of one build shares."""

    settings: Settings
    now: datetime
    gate: ApprovalGate | None
    staging: str  # every file goes into this folder first (see pipeline.site.publish)


@dataclass(frozen=True)
class Task:
    path: str
    display: str  # the path as messages show it
    stat: tuple[int, int, int]
    raw: bytes | None  # the file's bytes when the build has read them already, else read here


@dataclass(frozen=True)
class Made:
    """One task's result in the build's own process."""

    path: str
    entry: CacheEntry
    post: Post | None = None  # with its bodies, when made in this process
    newsletter: Newsletter | None = None  # likewise, when the post was released


_worker: tuple[Run, jinja2.Environment] | None = None


def read_entry(
    path: str, display: str, stat: tuple[int, int, int], raw: bytes | None, settings: Settings
) -> tuple[CacheEntry, Post | None]:
    """Read and parse one post file: its entry (nothing made yet) and the whole post."""
    try:
        data = raw if raw is not None else Path(path).read_bytes()
    except OSError as exc:  # deleted or made unreadable since the folder was listed
        return CacheEntry((0, 0, 0), "", post=None, error=unreadable(display, exc)), None  # a stat no file has
    try:
        post = parse_post(data, display, settings)
    except PipelineError as error:
        return CacheEntry(stat, hashlib.sha256(data).hexdigest(), post=None, error=error), None
    return CacheEntry(stat, post.content_hash, post=light(post), error=None), post


def make(task: Task) -> Made:
    """Parse one file; when its post is released, render and stage its files."""
    assert _worker is not None
    run, env = _worker
    settings = run.settings
    entry, post = read_entry(task.path, task.display, task.stat, task.raw, settings)
    if post is None:
        return Made(task.path, entry)
    # The renderers (MJML, twitter-text) load only in a build that renders something:
    # a rebuild with nothing to do is mostly start-up time.
    from pipeline.channels.newsletter import render_post_newsletter
    from pipeline.site.outputs import post_outputs, post_snippets

    try:
        snippets = None
        if not post.draft and "social" in post.channels:
            snippets = post_snippets(post, settings, env)
            if wants_snippets(post, queue_window(settings, run.now)):
                entry = CacheEntry(entry.stat, entry.digest, entry.post, None, snippets=snippets)
        if not is_live(post, run.now, run.gate):
            return Made(task.path, entry, post)
        newsletter = render_post_newsletter(post, settings, env)
        outputs = post_outputs(post, settings, env, snippets, newsletter=newsletter)
    except PipelineError as error:  # this post's own mistake: reported, the others go on
        return Made(task.path, CacheEntry(entry.stat, entry.digest, entry.post, error, snippets=entry.snippets))
    for rel, data in outputs.items():
        try:
            write_new(f"{run.staging}/{rel}", data)
        except OSError as exc:  # a full or read-only disk: the whole build stops, out/ untouched
            raise stage_fault(exc, settings.out_dir, rel) from None
    made = CacheEntry(entry.stat, entry.digest, entry.post, None, tuple(outputs), entry.snippets)
    return Made(task.path, made, post, newsletter)


def _in_worker(task: Task) -> CacheEntry:
    """A worker process's task: only the entry goes back (pickled)."""
    return make(task).entry


def run_tasks(tasks: list[Task], run: Run, env: jinja2.Environment, jobs: int | None) -> Iterator[Made]:
    global _worker
    _worker = (run, env)
    workers = jobs or os.cpu_count() or 1
    if len(tasks) < PARALLEL_THRESHOLD or workers == 1:
        for task in tasks:
            yield make(task)
        return
    load_renderers(env)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Forked, so each worker starts with this process's renderers, templates and _worker.
    context = multiprocessing.get_context("fork")
    with (
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        long_lived_objects(),  # the cache entries the workers send back
    ):
        chunk = max(1, min(32, len(tasks) // (workers * 8)))
        results = pool.map(_in_worker, tasks, chunksize=chunk)
        for task, entry in zip(tasks, results, strict=True):
            yield Made(task.path, entry)


# twitter-text alone takes some 0.3 s to import.
_RENDERERS = ("pipeline.channels.newsletter", "pipeline.site.outputs")  # outputs: the snippets, with twitter-text


def load_renderers(env: jinja2.Environment) -> None:
    """Import the renderers and compile the templates once, before the workers fork."""
    import jinja2

    for module in _RENDERERS:
        importlib.import_module(module)
    for name in env.list_templates():
        with contextlib.suppress(jinja2.TemplateError):  # a broken template is reported by the post that uses it
            env.get_template(name)

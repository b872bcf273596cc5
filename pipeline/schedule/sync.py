"""Keeping the release jobs in line with posts/ and the ledger, and saying so in words."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Mapping
from datetime import datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger

from pipeline.content.posts import Post, errors_for_slug
from pipeline.errors import PipelineError, each_problem
from pipeline.schedule import release
from pipeline.schedule.gate import approval_problem, backfill_reason
from pipeline.schedule.jobs import JOB_DEFAULTS, RELEASE_PREFIX, Runtime, ref, release_job
from pipeline.schedule.when import local, relative

log = logging.getLogger("pipeline.scheduler")

HELD_REMINDER_SECONDS = 3600.0
_JOB_ID_MAX = 100  # the job store's id column is VARCHAR(191); keep well inside it


def release_job_id(slug: str) -> str:
    """``release:SLUG``, shortened with a hash where it would not fit APScheduler's id column."""
    job_id = f"{RELEASE_PREFIX}{slug}"
    if len(job_id) <= _JOB_ID_MAX:
        return job_id
    digest = hashlib.sha256(slug.encode()).hexdigest()[:16]
    return f"{job_id[: _JOB_ID_MAX - 17]}~{digest}"


def sync(rt: Runtime, now: datetime, *, startup: bool = False) -> None:
    """Add, move and remove release jobs to match ``posts/`` and the ledger; release
    backfill in one batch; log each change in words."""
    with rt.sync_lock:
        _sync(rt, now, startup=startup)


def _sync(rt: Runtime, now: datetime, *, startup: bool) -> None:
    settings, store, scheduler = rt.settings, rt.store, rt.scheduler
    assert scheduler is not None and rt.index is not None
    posts, errors = rt.index.scan()
    # A file saved a moment ago may be half written: report its error once it settles.
    settled = each_problem(e for e in errors if e.path not in rt.index.fresh)  # one log line per problem
    for error in settled:
        text = str(error)
        if text not in rt.reported:
            log.error("%s (not scheduled until fixed)", text)
    rt.reported = {str(e) for e in settled}

    # The jobs first, the ledger after: a job that finishes in between is then either
    # still "active" here or has its records read below, never neither (which would
    # queue it a second time).
    active = set(rt.active)
    jobs = {job.id: job for job in scheduler.get_jobs() if job.id.startswith(RELEASE_PREFIX)}
    released = store.released_slugs()
    held = store.list_holds()
    first_run = store.first_run_at(now)
    wanted: dict[str, Post] = {}
    approved: dict[str, str] = {}
    backfill: list[Post] = []
    for post in posts:
        if post.draft or post.slug in released:
            continue
        if post.slug in held:
            approval = store.get_approval(post.slug)
            problem = approval_problem(post, approval, settings)
            if problem is not None:
                _remind(rt, post, problem, startup)
                continue
            approved[post.slug] = approval.by if approval else "?"
        elif post.date <= now and backfill_reason(post, now, first_run, settings):
            backfill.append(post)
            continue
        wanted[post.slug] = post

    if backfill:
        log.info("catching up: %d post(s) whose time passed long ago (backfill)", len(backfill))
        release.release_posts(
            settings, [p.slug for p in backfill], now, store=store, transport=rt.transport,
            jobs=None if startup else 1, index=rt.index,
        )  # fmt: skip

    for slug, post in sorted(wanted.items(), key=lambda item: item[1].date):
        job_id = release_job_id(slug)
        if job_id in active:
            continue
        job = jobs.pop(job_id, None)
        when = f"{local(post.date, settings)} ({relative(post.date, now)})"
        if job is None:
            scheduler.add_job(
                ref(release_job),
                DateTrigger(run_date=post.date, timezone=settings.clinic.zone),
                args=[rt.config_path, slug],
                id=job_id,
                name=f"release {slug}",
                replace_existing=True,
                **JOB_DEFAULTS,
            )
            verb = "due now, releasing" if post.date <= now else "queued"
            if slug in approved:
                verb = f"approved by {approved[slug]}: releasing"
            log.info("%s %s (%r) for %s: %s", verb, slug, post.title, when, ", ".join(sorted(post.channels)) or "-")
        elif job.trigger.run_date != post.date:
            before = job.trigger.run_date
            try:
                scheduler.reschedule_job(job_id, trigger=DateTrigger(run_date=post.date, timezone=settings.clinic.zone))
            except JobLookupError:
                continue  # it fired meanwhile: the release finds the new date, and the next rescan queues it
            log.info("moved %s from %s to %s", slug, local(before, settings), when)
        elif startup:
            late = " (overdue: it runs now)" if post.date <= now else ""
            log.info("queued %s (%r) for %s%s", slug, post.title, when, late)
    for job_id, job in jobs.items():
        slug = job.args[1] if len(job.args) > 1 else job_id[len(RELEASE_PREFIX) :]
        if job_id in active:
            continue
        try:
            scheduler.remove_job(job_id)
        except JobLookupError:
            continue  # it fired meanwhile
        log.info("unqueued %s: %s", slug, _why_gone(slug, posts, errors, released, held))
    # For a reader (or a test) who needs to know a pass happened that changed nothing.
    log.debug("rescan done: %d post(s), %d waiting to be released", len(posts), len(wanted))


def _why_gone(
    slug: str,
    posts: list[Post],
    errors: list[PipelineError],
    released: Collection[str],
    held: Mapping[str, object],
) -> str:
    post = next((p for p in posts if p.slug == slug), None)
    if post is not None and post.draft:
        return f"{post.path} is now a draft"
    if slug in released:
        return "already released"
    if slug in held:
        return "held for approval"
    broken = errors_for_slug(errors, slug)
    if broken:
        return f"the post has an error: {broken[0]}"
    return "no post with this slug any more (file deleted or renamed, or slug changed)"


def _remind(rt: Runtime, post: Post, problem: str, startup: bool) -> None:
    # release_post said it loudly when the post was held; remind at start-up and hourly.
    last = rt.reminded.setdefault(post.slug, time.monotonic())
    if not startup and time.monotonic() - last < HELD_REMINDER_SECONDS:
        return
    rt.reminded[post.slug] = time.monotonic()
    log.warning(
        "HELD: %s (%r), due %s, is still not released: %s. Run `pipeline approve %s --by NAME`",
        post.slug,
        post.title,
        local(post.date, rt.settings),
        problem,
        post.slug,
    )

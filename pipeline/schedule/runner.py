"""The scheduler: APScheduler wiring only, through its public API. It decides WHEN;
``pipeline.schedule.release`` and the ledger decide WHETHER, so a job that fires
twice, or one lost while the process stops, changes nothing: the next pass (or the
next start) finds what the ledger says.

Jobs live in a SQLAlchemy job store (table ``apscheduler_jobs``) on the ledger's
database, so they survive restarts. Each job references its function by import
path (``pipeline.schedule.jobs:release_job``) with only picklable arguments (the
absolute config path and a slug):

- ``release:<slug>``: a date trigger at the post's time, one per queued post;
- ``rescan``: every ``scheduler.rescan_seconds``, brings the release jobs in line
  with ``posts/`` (new, moved, drafted, deleted, approved) and says so in the log;
- ``delivery``: every ``scheduler.delivery_seconds``, resumes unfinished campaigns
  and retries deferred deliveries;
- ``social``: with ``[social.post.*]`` on, every ``scheduler.delivery_seconds`` and
  right after each release, posts what releases owe to Mastodon and Bluesky;
- ``digest``: optional, ``scheduler.digest_cron`` in the clinic's zone.

Every job has ``misfire_grace_time=None`` and ``coalesce=True``: APScheduler's
default grace of 1 s would silently drop a release whose time passed while the
process was down; with these, it runs once at start-up instead.

One scheduler per database: a lock row in the ledger with a heartbeat
(``pipeline.schedule.singleton``), so two machines or two state folders on one
database never both release. A second one exits 1 naming the holder's host and PID.

And one per state folder (its build cache, its outbox): ``state/scheduler.lock`` is locked with
``fcntl.lockf``. The kernel drops the lock when the process dies, however it
dies, so a crash never leaves it stuck; unlike ``flock``, a POSIX lock is not
inherited by the worker processes a large build forks.

SIGTERM and SIGINT let the job in progress finish, then exit 0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ledger.engine import make_engine
from pipeline.ledger.store import Store
from pipeline.mail.transports import Transport, transport_from_spec
from pipeline.schedule import jobs
from pipeline.schedule.jobs import (
    DELIVERY_EXECUTOR,
    JOB_DEFAULTS,
    RELEASE_PREFIX,
    Runtime,
    bounces_job,
    campaign_job,
    delivery_job,
    digest_job,
    guard,
    ref,
    rescan_job,
    social_job,
)
from pipeline.schedule.logs import configure_logging
from pipeline.schedule.singleton import SchedulerLease, lock_for
from pipeline.schedule.sync import sync
from pipeline.schedule.when import local
from pipeline.site.index import PostIndex

log = logging.getLogger("pipeline.scheduler")

JOBSTORE_TABLE = "apscheduler_jobs"


def digest_trigger(settings: Settings) -> CronTrigger | None:
    expression = settings.scheduler.digest_cron
    if not expression:
        return None
    try:
        return CronTrigger.from_crontab(expression, timezone=settings.clinic.zone)
    except ValueError as exc:
        raise ConfigError(
            f"invalid cron expression {expression!r}: {exc}",
            field="scheduler.digest_cron",
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * mon' for Mondays 09:00",
        ) from None


def _track(rt: Runtime, event: JobEvent) -> None:
    # APScheduler dispatches a pass's "submitted" events after the pass's job-store
    # writes, so a quick job's "executed" can arrive first (often on PostgreSQL, where
    # those writes take longer). A count ends at zero whatever the order; a set would
    # keep the job "active" for ever, and a rescan would never add it again.
    with rt.runs_lock:
        rt.runs[event.job_id] += 1 if event.code == EVENT_JOB_SUBMITTED else -1
        if rt.runs[event.job_id] > 0:
            rt.active.add(event.job_id)
        else:
            rt.active.discard(event.job_id)
            if rt.runs[event.job_id] == 0:
                del rt.runs[event.job_id]


def make_scheduler(settings: Settings) -> BackgroundScheduler:
    engine = make_engine(settings.database_url, busy_timeout=settings.database.busy_timeout_seconds)
    jobstore = SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)
    return BackgroundScheduler(
        jobstores={"default": jobstore},
        executors={"default": ThreadPoolExecutor(4), DELIVERY_EXECUTOR: ThreadPoolExecutor(2)},
        job_defaults=JOB_DEFAULTS,
        timezone=settings.clinic.zone,
    )


def _housekeeping(rt: Runtime, trigger: CronTrigger | None, now: datetime) -> None:
    scheduler, settings = rt.scheduler, rt.settings
    assert scheduler is not None
    common: dict[str, Any] = {"args": [rt.config_path], "replace_existing": True, **JOB_DEFAULTS}
    scheduler.add_job(
        ref(rescan_job), IntervalTrigger(seconds=settings.scheduler.rescan_seconds), id="rescan", name="rescan posts/",
        **common,
    )  # fmt: skip
    scheduler.add_job(
        ref(delivery_job), IntervalTrigger(seconds=settings.scheduler.delivery_seconds), id="delivery",
        name="resume and retry deliveries", next_run_time=now, executor=DELIVERY_EXECUTOR, **common,
    )  # fmt: skip
    if settings.bounces.poll_seconds is not None:
        scheduler.add_job(
            ref(bounces_job), IntervalTrigger(seconds=settings.bounces.poll_seconds), id="bounces",
            name="read the bounce mailbox", next_run_time=now, **common,
        )  # fmt: skip
    elif scheduler.get_job("bounces") is not None:
        scheduler.remove_job("bounces")
        log.info("bounces: no longer read (no bounces.poll_seconds)")
    if settings.social.post.platforms():
        scheduler.add_job(
            ref(social_job), IntervalTrigger(seconds=settings.scheduler.delivery_seconds), id="social",
            name="post to social platforms", next_run_time=now, executor=DELIVERY_EXECUTOR, **common,
        )  # fmt: skip
    elif scheduler.get_job("social") is not None:
        scheduler.remove_job("social")
    existing = scheduler.get_job("digest")
    if trigger is None:
        if existing is not None:
            scheduler.remove_job("digest")
            log.info("digest: turned off (no scheduler.digest_cron)")
        return
    if existing is None or repr(existing.trigger) != repr(trigger):
        # A stored digest job with the same schedule is kept, so a digest missed
        # while the scheduler was down still goes out (once) at start-up.
        scheduler.add_job(ref(digest_job), trigger, id="digest", name="digest", **common)
    job = scheduler.get_job("digest")
    if job is not None and job.next_run_time is not None:
        log.info("digest: %r, next at %s", settings.scheduler.digest_cron, local(job.next_run_time, settings))


def run(settings: Settings, config_path: Path, *, transport_spec: str | None = None, verbose: bool = False) -> int:
    """Run the scheduler until SIGTERM or SIGINT; returns the exit status (0; 1 if it lost
    the database's scheduler lock)."""
    configure_logging(settings, verbose=verbose)
    transport = transport_from_spec(transport_spec or settings.delivery.transport, settings)
    trigger = digest_trigger(settings)
    with contextlib.ExitStack() as held:
        store = Store.open(settings)
        held.callback(store.close)
        lease = SchedulerLease(store, settings)  # one per database: the lock that matters
        lease.acquire()
        held.callback(lease.release)
        lock = lock_for(settings)  # and one per state folder (its build cache, its outbox)
        lock.acquire()
        held.callback(lock.release)
        try:
            return _run(settings, str(config_path.resolve()), store, transport, trigger, lease)
        finally:
            jobs.set_runtime(None)


def _lost_lock(rt: Runtime, why: str) -> None:
    # Called from the heartbeat thread: no scheduler calls here, only flags the main loop reads.
    log.error("%s: stopping", why)
    rt.exit_status = 1
    rt.stopping = True


def _run(
    settings: Settings,
    config_path: str,
    store: Store,
    transport: Transport,
    trigger: CronTrigger | None,
    lease: SchedulerLease,
) -> int:
    scheduler = make_scheduler(settings)
    rt = Runtime(config_path, settings, store, transport, scheduler=scheduler, index=PostIndex(settings))
    lease.on_lost = functools.partial(_lost_lock, rt)

    def on_signal(number: int, _frame: FrameType | None) -> None:
        # No logging here: a handler that takes a lock the interrupted code holds deadlocks.
        if rt.stopping:
            os.write(2, b"still finishing the job in progress (SIGKILL stops at once)\n")
        rt.signal_name = signal.Signals(number).name
        rt.stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    jobs.set_runtime(rt)
    scheduler.add_listener(
        functools.partial(_track, rt), EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
    )
    try:
        now = datetime.now(UTC)
        if store.recorded_first_run() is None:
            store.first_run_at(now)
            log.info("first run: posts dated before %s are backfill (feed only, never e-mailed)", local(now, settings))
        scheduler.start(paused=True)  # the job store is readable, nothing runs yet
        try:
            _housekeeping(rt, trigger, now)
            if not rt.stopping:
                sync(rt, now, startup=True)
            if not rt.stopping:
                scheduler.resume()
                _say_running(rt)
            while not rt.stopping:
                try:
                    request = rt.requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                _serve(rt, request)
            log.info("%s received: finishing the job in progress, then stopping", rt.signal_name or "stop")
        finally:
            leftovers = _shutdown(scheduler)
        # Releases that finished while we stopped may have left their newsletter to us.
        while True:
            try:
                kind, campaign_id, slug = rt.requests.get_nowait()
            except queue.Empty:
                break
            if kind == "deliver":
                leftovers.append((campaign_id, slug))
        for campaign_id, slug in dict.fromkeys(leftovers):
            campaign_job(config_path, campaign_id, slug)
        log.info("scheduler stopped")
        return rt.exit_status
    finally:
        jobs.set_runtime(None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(rt: Runtime, request: tuple[str, int, str]) -> None:
    """Carry out a job's request, in the main thread."""
    kind, campaign_id, slug = request
    assert rt.scheduler is not None
    with guard(kind):
        if kind == "sync":
            sync(rt, datetime.now(UTC))
        elif kind == "social" and rt.scheduler.get_job("social") is not None:
            rt.scheduler.modify_job("social", next_run_time=datetime.now(UTC))  # right after the release
        elif kind == "deliver":
            rt.scheduler.add_job(
                ref(campaign_job), args=[rt.config_path, campaign_id, slug], id=f"deliver:{campaign_id}",
                name=f"deliver {slug}", executor=DELIVERY_EXECUTOR, replace_existing=True, **JOB_DEFAULTS,
            )  # fmt: skip


def _say_running(rt: Runtime) -> None:
    assert rt.scheduler is not None
    queued = [j for j in rt.scheduler.get_jobs() if j.id.startswith(RELEASE_PREFIX)]
    upcoming = min((j.next_run_time for j in queued if j.next_run_time), default=None)
    log.info(
        "scheduler running (PID %d, %s): %d release(s) queued%s; rescanning %s every %g s",
        os.getpid(),
        rt.transport.description,
        len(queued),
        f", next at {local(upcoming, rt.settings)}" if upcoming else "",
        rt.settings.posts_dir,
        rt.settings.scheduler.rescan_seconds,
    )


def _shutdown(scheduler: BackgroundScheduler) -> list[tuple[int, str]]:
    """Stop starting jobs, let the ones in progress finish, then stop. Returns the
    newsletters of releases that finished but whose delivery job had not started
    (``(campaign id, slug)``); the caller sends them, so a release is never left half done.

    A job that APScheduler took from its store in the very pass that pause() interrupts
    may never run; nothing is lost by it: the ledger says what was released, and the
    next start queues every due post that was not.
    """
    scheduler.pause()
    leftovers = []
    for job in scheduler.get_jobs():
        if job.id.startswith("deliver:"):
            leftovers.append((int(job.args[1]), str(job.args[2])))
            scheduler.remove_job(job.id)  # if we die before sending, the delivery job resumes it at start
    scheduler.shutdown(wait=True)
    return leftovers

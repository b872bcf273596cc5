"""The scheduler: APScheduler wiring only. It decides WHEN; ``pipeline.schedule.release`` and
the ledger decide WHETHER.

Jobs live in a SQLAlchemy job store (table ``apscheduler_jobs``) on the ledger's
database, so they survive restarts. Each job references its function by import
path (``pipeline.schedule.runner:release_job``) with only picklable arguments (the
absolute config path and a slug):

- ``release:<slug>``: a date trigger at the post's time, one per queued post;
- ``rescan``: every ``scheduler.rescan_seconds``, brings the release jobs in line
  with ``posts/`` (new, moved, drafted, deleted, approved) and says so in the log;
- ``delivery``: every ``scheduler.delivery_seconds``, resumes unfinished campaigns
  and retries deferred deliveries;
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
import dataclasses
import errno
import fcntl
import functools
import hashlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pipeline.config import Settings, load_settings
from pipeline.content.posts import Post, drop_clashing, errors_for_slug, parse_post, post_files
from pipeline.errors import ConfigError, PipelineError, each_problem
from pipeline.faults import as_pipeline_error, debug_from_env
from pipeline.ledger.engine import make_engine
from pipeline.ledger.store import Store
from pipeline.mail.transports import Transport, transport_from_spec
from pipeline.schedule import release
from pipeline.schedule.digest import send_digest
from pipeline.schedule.gate import approval_problem, backfill_reason
from pipeline.schedule.singleton import AlreadyRunning, SchedulerLease
from pipeline.schedule.when import local, relative

log = logging.getLogger("pipeline.scheduler")

JOBSTORE_TABLE = "apscheduler_jobs"
RELEASE_PREFIX = "release:"
DELIVERY_EXECUTOR = "delivery"
JOB_DEFAULTS: dict[str, Any] = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
HELD_REMINDER_SECONDS = 3600.0
SETTLE_SECONDS = 1.0
LOCK_NAME = "scheduler.lock"
_JOB_ID_MAX = 100  # the job store's id column is VARCHAR(191); keep well inside it


# --- logging ------------------------------------------------------------------------------


class ZonedFormatter(logging.Formatter):
    """Timestamps in the clinic's zone, with the offset: ``2026-11-03 09:00:00.012-05:00``."""

    def __init__(self, zone: Any) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, self.zone).isoformat(sep=" ", timespec="milliseconds")


def configure_logging(settings: Settings, *, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZonedFormatter(settings.clinic.zone))
    for name, level in (("pipeline", logging.DEBUG if verbose else logging.INFO), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


# --- the single-instance lock ------------------------------------------------------------


class InstanceLock:
    """An exclusive ``lockf`` lock on ``state/scheduler.lock`` holding the owner's PID.

    Never call ``holder()`` from the process that holds the lock: closing any
    descriptor of the file releases a process's POSIX locks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            pid = self._read_pid()
            who = f"PID {pid}" if pid else "another process"
            raise AlreadyRunning(
                f"another scheduler is already running ({who}) on {self.path.parent}",
                hint=f"stop it first (kill {pid or 'PID'} or `systemctl stop jameson-scheduler`); "
                "the lock frees itself when that process exits, even if it crashed",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the stale PID inside is harmless
            self._fd = None

    def _read_pid(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def holder(self) -> int | None:
        """The PID of the running scheduler (0 if unknown), or None when none runs."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return self._read_pid() or 0
        finally:
            os.close(fd)
        return None


def lock_for(settings: Settings) -> InstanceLock:
    return InstanceLock(settings.state_dir / LOCK_NAME)


# --- the posts folder, parsed incrementally ---------------------------------------------------


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


# --- the running process ---------------------------------------------------------------------


@dataclass
class Runtime:
    config_path: str
    settings: Settings
    store: Store
    transport: Transport
    scheduler: BackgroundScheduler | None = None
    index: PostIndex | None = None
    # Ids of jobs submitted to an executor and not finished: gone from the job store,
    # but not to be added again by a rescan (kept by _track).
    active: set[str] = field(default_factory=set)
    # Submissions minus completions per job id, behind ``active`` (see _track).
    runs: Counter[str] = field(default_factory=Counter)
    runs_lock: threading.Lock = field(default_factory=threading.Lock)
    reported: set[str] = field(default_factory=set)  # errors already logged
    reminded: dict[str, float] = field(default_factory=dict)  # held slug -> monotonic time of last reminder
    sync_lock: threading.Lock = field(default_factory=threading.Lock)
    # Only the main thread calls the scheduler's methods: APScheduler 3.11's shutdown()
    # holds the job-store lock while it waits for running jobs, so a job that added or
    # removed a job itself would deadlock a SIGTERM. Jobs put requests here instead.
    requests: queue.SimpleQueue[tuple[str, int, str]] = field(default_factory=queue.SimpleQueue)
    stopping: bool = False  # set by the signal handler (which takes no lock)
    exit_status: int = 0  # 1 once the database's scheduler lock is lost
    signal_name: str = ""


_runtime: Runtime | None = None


@contextmanager
def _job_runtime(config_path: str) -> Iterator[Runtime]:
    """The scheduler's runtime, or (a job run outside the scheduler) a fresh one."""
    current = _runtime
    if current is not None and current.config_path == config_path:
        yield current
        return
    settings = load_settings(config_path)
    store = Store.open(settings)
    try:
        yield Runtime(config_path, settings, store, transport_from_spec(settings.delivery.transport, settings))
    finally:
        store.close()


@contextmanager
def _guard(what: str) -> Iterator[None]:
    """Jobs are an edge: a user's mistake is one log line, a bug a traceback; neither stops the scheduler."""
    try:
        yield
    except Exception as exc:
        # A routine fault (the database locked, a full disk) is one line too.
        error = as_pipeline_error(exc, database_url=_runtime.settings.database_url if _runtime else None)
        if error is None:
            log.exception("%s failed (a bug: please report it with this traceback)", what)
        else:
            log.error("%s: %s", what, error, exc_info=debug_from_env())


# --- jobs (referenced by import path; arguments are plain strings) ---------------------------------


def release_job(config_path: str, slug: str) -> None:
    with _guard(f"release {slug}"), _job_runtime(config_path) as rt:
        # Inside the scheduler the newsletter goes out in its own job, so a long send
        # never keeps the next release waiting for a thread.
        handed_off = rt.scheduler is not None
        outcome = release.release_post(
            rt.settings, slug, datetime.now(UTC), store=rt.store, transport=rt.transport, jobs=1,
            deliver_now=not handed_off,
        )  # fmt: skip
        if handed_off and outcome.campaign_id is not None:
            rt.requests.put(("deliver", outcome.campaign_id, slug))


def campaign_job(config_path: str, campaign_id: int, what: str) -> None:
    """Deliver one campaign (started by a release); stored, so a crash leaves it to the next start."""
    with _guard(f"deliver {what}"), _job_runtime(config_path) as rt:
        release.deliver_and_log(
            rt.store, rt.settings, rt.transport, campaign_id, what,
            stopped_prefix=f"{what}: ", stopped_tail="; the delivery job resumes it",
        )  # fmt: skip


def rescan_job(config_path: str) -> None:
    """Ask the main thread to bring the release jobs in line with posts/."""
    current = _runtime
    if current is None or current.config_path != config_path or current.scheduler is None:
        log.debug("rescan: not inside a running scheduler; nothing to do")
        return
    current.requests.put(("sync", 0, ""))


def delivery_job(config_path: str) -> None:
    with _guard("delivery"), _job_runtime(config_path) as rt:
        release.complete_owed(rt.settings, rt.store, datetime.now(UTC))
        release.deliver_and_log(
            rt.store, rt.settings, rt.transport, None, "delivery",
            stopped_prefix="", stopped_tail=f"; retrying in {rt.settings.scheduler.delivery_seconds:g} s",
        )  # fmt: skip


def digest_job(config_path: str) -> None:
    with _guard("digest"), _job_runtime(config_path) as rt:
        send_digest(rt.settings, datetime.now(UTC), store=rt.store, transport=rt.transport)


def _ref(function: Any) -> str:
    return f"{__name__}:{function.__name__}"


def release_job_id(slug: str) -> str:
    """``release:SLUG``, shortened with a hash where it would not fit APScheduler's id column."""
    job_id = f"{RELEASE_PREFIX}{slug}"
    if len(job_id) <= _JOB_ID_MAX:
        return job_id
    digest = hashlib.sha256(slug.encode()).hexdigest()[:16]
    return f"{job_id[: _JOB_ID_MAX - 17]}~{digest}"


# --- keeping the release jobs in line with posts/ -----------------------------------------------


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
    released = store.list_releases()
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
            jobs=None if startup else 1,
        )  # fmt: skip

    for slug, post in sorted(wanted.items(), key=lambda item: item[1].date):
        job_id = release_job_id(slug)
        if job_id in active:
            continue
        job = jobs.pop(job_id, None)
        when = f"{local(post.date, settings)} ({relative(post.date, now)})"
        if job is None:
            scheduler.add_job(
                _ref(release_job),
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


def _why_gone(
    slug: str,
    posts: list[Post],
    errors: list[PipelineError],
    released: Mapping[str, object],
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


# --- start-up and shutdown ----------------------------------------------------------------------------


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


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler 3 ships no types
    """APScheduler checks "paused" before it takes the job-store lock, so a pass that
    began just before ``pause()`` can still submit a job after shutdown (and a date
    job is then deleted unrun). Checking under the lock closes that window."""

    def _process_jobs(self) -> float | None:
        # Holding the (re-entrant) lock across the whole pass also dispatches its
        # "submitted" events before a rescan can look at the job store.
        with self._jobstores_lock:
            if self.state != STATE_RUNNING:  # paused, or stopped while we waited for the lock
                return None
            result: float | None = super()._process_jobs()  # type: ignore[no-untyped-call]
            return result


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
    return _Scheduler(
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
        _ref(rescan_job), IntervalTrigger(seconds=settings.scheduler.rescan_seconds), id="rescan", name="rescan posts/",
        **common,
    )  # fmt: skip
    scheduler.add_job(
        _ref(delivery_job), IntervalTrigger(seconds=settings.scheduler.delivery_seconds), id="delivery",
        name="resume and retry deliveries", next_run_time=now, executor=DELIVERY_EXECUTOR, **common,
    )  # fmt: skip
    existing = scheduler.get_job("digest")
    if trigger is None:
        if existing is not None:
            scheduler.remove_job("digest")
            log.info("digest: turned off (no scheduler.digest_cron)")
        return
    if existing is None or repr(existing.trigger) != repr(trigger):
        # A stored digest job with the same schedule is kept, so a digest missed
        # while the scheduler was down still goes out (once) at start-up.
        scheduler.add_job(_ref(digest_job), trigger, id="digest", name="digest", **common)
    job = scheduler.get_job("digest")
    if job is not None and job.next_run_time is not None:
        log.info("digest: %r, next at %s", settings.scheduler.digest_cron, local(job.next_run_time, settings))


def run(settings: Settings, config_path: Path, *, transport_spec: str | None = None, verbose: bool = False) -> int:
    """Run the scheduler until SIGTERM or SIGINT; returns the exit status (0; 1 if it lost
    the database's scheduler lock)."""
    global _runtime
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
            _runtime = None


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
    global _runtime
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
    _runtime = rt
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
        _runtime = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(rt: Runtime, request: tuple[str, int, str]) -> None:
    """Carry out a job's request, in the main thread."""
    kind, campaign_id, slug = request
    assert rt.scheduler is not None
    with _guard(kind):
        if kind == "sync":
            sync(rt, datetime.now(UTC))
        elif kind == "deliver":
            rt.scheduler.add_job(
                _ref(campaign_job), args=[rt.config_path, campaign_id, slug], id=f"deliver:{campaign_id}",
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

    Pausing first, and waiting for the scheduler thread's current pass over the job
    store, closes APScheduler's shutdown race (see ``_Scheduler``).
    """
    scheduler.pause()
    with scheduler._jobstores_lock:  # wait for a pass in progress (see _Scheduler)
        pass
    leftovers = []
    for job in scheduler.get_jobs():
        if job.id.startswith("deliver:"):
            leftovers.append((int(job.args[1]), str(job.args[2])))
            scheduler.remove_job(job.id)  # if we die before sending, the delivery job resumes it at start
    scheduler.shutdown(wait=True)
    return leftovers


__all__ = [
    "JOBSTORE_TABLE",
    "InstanceLock",
    "PostIndex",
    "campaign_job",
    "configure_logging",
    "delivery_job",
    "digest_job",
    "lock_for",
    "release_job",
    "rescan_job",
    "run",
    "sync",
]

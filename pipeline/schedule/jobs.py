"""The scheduler's jobs and the state they share.

Each job is referenced by import path (``pipeline.schedule.jobs:release_job``) with
only picklable arguments (the absolute config path and a slug or campaign id), so
the SQLAlchemy job store keeps them across restarts. Jobs never call the
scheduler's methods: they put requests on ``Runtime.requests`` for the main thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from pipeline.config import Settings, load_settings
from pipeline.faults import as_pipeline_error, debug_from_env
from pipeline.ledger.store import Store
from pipeline.mail.transports import Transport, transport_from_spec
from pipeline.schedule import release, sending
from pipeline.schedule.digest import send_digest
from pipeline.site.index import PostIndex

log = logging.getLogger("pipeline.scheduler")

RELEASE_PREFIX = "release:"
DELIVERY_EXECUTOR = "delivery"
# misfire_grace_time=None and coalesce=True: APScheduler's default grace of 1 s would
# silently drop a release whose time passed while the process was down; with these it
# runs once at start-up instead.
JOB_DEFAULTS: dict[str, Any] = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


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


# The running scheduler's state, set by runner.run: jobs run in its threads find it here.
_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


@contextmanager
def job_runtime(config_path: str) -> Iterator[Runtime]:
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
def guard(what: str) -> Iterator[None]:
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


def release_job(config_path: str, slug: str) -> None:
    with guard(f"release {slug}"), job_runtime(config_path) as rt:
        # Inside the scheduler the newsletter goes out in its own job, so a long send
        # never keeps the next release waiting for a thread.
        handed_off = rt.scheduler is not None
        outcome = release.release_post(
            rt.settings, slug, datetime.now(UTC), store=rt.store, transport=rt.transport, jobs=1,
            deliver_now=not handed_off, index=rt.index,
        )  # fmt: skip
        if handed_off and outcome.campaign_id is not None:
            rt.requests.put(("deliver", outcome.campaign_id, slug))
        if outcome.status in ("released", "backfill") and "feed" in outcome.channels:
            from pipeline.posting.websub import ping_hub

            ping_hub(rt.settings)  # after the release is recorded and its newsletter started
        if handed_off and "social" in outcome.channels and rt.settings.social.post.platforms():
            rt.requests.put(("social", 0, slug))  # post now, in the social job's thread


def campaign_job(config_path: str, campaign_id: int, what: str) -> None:
    """Deliver one campaign (started by a release); stored, so a crash leaves it to the next start."""
    with guard(f"deliver {what}"), job_runtime(config_path) as rt:
        sending.deliver_and_log(
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
    with guard("delivery"), job_runtime(config_path) as rt:
        release.complete_owed(rt.settings, rt.store, datetime.now(UTC))
        sending.deliver_and_log(
            rt.store, rt.settings, rt.transport, None, "delivery",
            stopped_prefix="", stopped_tail=f"; retrying in {rt.settings.scheduler.delivery_seconds:g} s",
        )  # fmt: skip


def bounces_job(config_path: str) -> None:
    """Read the bounce mailbox (``[bounces] poll_seconds``): the same as ``pipeline bounces process``."""
    from pipeline.ledger.tokens import load_secret
    from pipeline.mail.bounce_mailbox import open_mailbox, process_mailbox

    with guard("bounces"), job_runtime(config_path) as rt:
        result = process_mailbox(rt.store, rt.settings, open_mailbox(rt.settings), secret=load_secret(rt.settings))
        if result.read:
            log.info("bounces: %s", result.summary())
        # Kept messages stay unread and are read again each time: say so when their number changes.
        kept = f"bounces-kept:{len(result.kept)}"
        if result.kept and kept not in rt.reported:
            rt.reported.add(kept)
            log.warning(
                "bounces: %d message(s) in %s are not reports about our deliveries and stay unread; "
                "pipeline bounces process lists them",
                len(result.kept),
                result.mailbox,
            )


def social_job(config_path: str) -> None:
    """Post released posts to the platforms with direct posting on (pipeline.posting)."""
    from pipeline.posting.owed import owe_recent
    from pipeline.posting.run import post_due

    with guard("social"), job_runtime(config_path) as rt:
        now = datetime.now(UTC)
        owe_recent(rt.settings, rt.store, now)
        post_due(rt.settings, rt.store, now)


def digest_job(config_path: str) -> None:
    with guard("digest"), job_runtime(config_path) as rt:
        send_digest(rt.settings, datetime.now(UTC), store=rt.store, transport=rt.transport)


def _ref(function: Any) -> str:
    return f"{__name__}:{function.__name__}"


def ref(function: Any) -> str:
    """The import path APScheduler stores for a job function."""
    return f"{__name__}:{function.__name__}"

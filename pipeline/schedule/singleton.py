"""One scheduler per database: the ledger's scheduler lock, held while the scheduler runs.

Two schedulers on one database (two machines, or two ``state/`` folders) would both
release posts, each through its own transport. The lock lives in the database
(``pipeline.ledger.locks``), so it holds across hosts and state folders; a thread
renews it every quarter of ``scheduler.lock_seconds``. If the lock is lost (another
scheduler took it over after this one's heartbeat stopped, or the database could
not be reached for ``lock_seconds``), ``on_lost`` is called and the scheduler stops:
it never runs on without knowing that it is the only one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pipeline.config import Settings
from pipeline.content.dates import local_time
from pipeline.errors import PipelineError
from pipeline.ledger.engine import utcnow
from pipeline.ledger.locks import DatabaseLock, LockHolder
from pipeline.ledger.store import Store

log = logging.getLogger("pipeline.scheduler")

_TIME = "%Y-%m-%d %H:%M:%S %Z"


class AlreadyRunning(PipelineError):
    pass


def _ago(moment: datetime) -> str:
    return f"{max((utcnow() - moment).total_seconds(), 0):.0f} s ago"


def describe(holder: LockHolder) -> str:
    return f"host {holder.host}, PID {holder.pid}"


def refusal(holder: LockHolder, settings: Settings) -> AlreadyRunning:
    where = f"{describe(holder)}, last heartbeat {_ago(holder.heartbeat_at)}"
    if holder.on_this_host:
        hint = (
            f"stop it first (kill {holder.pid} or `systemctl stop jameson-scheduler`); "
            "the lock frees itself when that process exits, even if it crashed"
        )
    else:
        hint = (
            f"stop it on {holder.host} first; if that machine is down, its lock lapses at "
            f"{local_time(holder.expires_at, settings, _TIME)} (scheduler.lock_seconds after its last heartbeat)"
        )
    return AlreadyRunning(f"another scheduler is already running on this database ({where})", hint=hint)


class SchedulerLease:
    """The database's scheduler lock for this process, with its heartbeat thread."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.settings = settings
        self.seconds = settings.scheduler.lock_seconds
        self.lock = DatabaseLock(store, seconds=self.seconds)
        self.on_lost: Callable[[str], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock and start the heartbeat, or raise ``AlreadyRunning`` naming the holder."""
        holder = self.lock.acquire()
        if holder is not None:
            raise refusal(holder, self.settings)
        stale = self.lock.replaced
        if stale is not None:
            why = "that process is gone" if stale.on_this_host else f"its heartbeat stopped {_ago(stale.heartbeat_at)}"
            log.warning("took over the scheduler lock of a scheduler that stopped (%s): %s", describe(stale), why)
        self._thread = threading.Thread(target=self._beat, name="scheduler-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.lock.release()
        except Exception as error:  # the database is gone: the lock lapses by itself
            log.warning("could not release the scheduler lock (%s); it lapses by itself", _one_line(error))

    def _beat(self) -> None:
        interval = self.seconds / 4
        renewed = time.monotonic()
        while not self._stop.wait(interval):
            try:
                if self.lock.renew():
                    renewed = time.monotonic()
                    continue
                holder = self.lock.holder()
                by = describe(holder) if holder is not None else "nobody now"
                self._lose(
                    f"lost the scheduler lock on this database (held by {by}): this scheduler's heartbeat was late"
                )
                return
            except Exception as error:  # never end silently: either renewed, or stopped with a reason
                late = time.monotonic() - renewed
                if late >= self.seconds:
                    self._lose(
                        f"could not renew the scheduler lock for {late:.0f} s ({_one_line(error)}); "
                        "another scheduler may take over now"
                    )
                    return
                log.warning("could not renew the scheduler lock (retrying): %s", _one_line(error))

    def _lose(self, why: str) -> None:
        if self._stop.is_set():
            return  # stopping anyway
        if self.on_lost is not None:
            self.on_lost(why)
        else:
            log.error("%s", why)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


# --- and one per state folder ---------------------------------------------------------

LOCK_NAME = "scheduler.lock"


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

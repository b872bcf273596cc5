"""Locks held in the ledger itself: one scheduler per database, whatever its host.

A row of ``scheduler_lock`` names its holder (host, PID and a nonce) and when the
hold expires; the holder renews it (a heartbeat) well before then. A row rather
than PostgreSQL's advisory locks: it works the same on SQLite and PostgreSQL, it
says who holds it (host and PID, for the refusal and for ``pipeline queue``), and
it does not hang on one database session staying open for weeks: an advisory lock
vanishes with its connection (a restarted server, a pooler, a network blip) and its
holder would not notice.

The lock is free, or stale and taken over, when:

- nobody holds it (released at a clean exit);
- its holder was a process on this host that no longer runs (killed, crashed): at once;
- its holder is on another host and its heartbeat expired (that machine crashed or
  lost the database): after the holder's ``seconds``.

A live holder on this host is never displaced, even with an expired heartbeat: it is
stuck, and the refusal names its PID. Every change is one conditional UPDATE naming
the holder it read (compare and swap), so two processes starting at once cannot both
take it, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.campaign_leases import owner_alive
from pipeline.ledger.engine import utcnow
from pipeline.ledger.schema import scheduler_lock
from pipeline.ledger.store import Store

SCHEDULER = "scheduler"


@dataclass(frozen=True)
class LockHolder:
    owner: str  # host:pid:nonce
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self, now: datetime) -> bool:
        """Whether it still holds the lock: a process on this host that runs, or a heartbeat
        elsewhere that has not expired."""
        return owner_alive(self.owner) if self.on_this_host else self.expires_at > now


def _holder(row: Any) -> LockHolder | None:
    if row is None or row.holder is None:
        return None
    return LockHolder(row.holder, row.host, row.pid, row.acquired_at, row.heartbeat_at, row.expires_at)


class DatabaseLock:
    """The lock ``name`` for ``owner`` (default: this process, with a fresh nonce)."""

    def __init__(self, store: Store, *, seconds: float, name: str = SCHEDULER, owner: str | None = None) -> None:
        self.store = store
        self.name = name
        self.seconds = seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        host, _, rest = self.owner.partition(":")
        self.host, self.pid = host, int(rest.partition(":")[0])
        self.replaced: LockHolder | None = None  # the stale holder the last acquire() took over from

    def acquire(self, *, now: datetime | None = None) -> LockHolder | None:
        """Take the lock. None when taken; otherwise the live holder that keeps it."""
        now = now or utcnow()
        self.replaced = None
        for _attempt in range(5):  # lost a race with another taker: look again
            row = self._row()
            if row is None:
                self._create_row()
                continue
            current = _holder(row)
            if current is None or current.owner == self.owner:
                condition = scheduler_lock.c.holder.is_not_distinct_from(row.holder)
            elif not current.alive(now):
                # Naming what we judged stale: a holder that renewed meanwhile keeps it.
                condition = and_(
                    scheduler_lock.c.holder == current.owner,
                    scheduler_lock.c.expires_at.is_not_distinct_from(row.expires_at),
                )
            else:
                return current
            if self._take(condition, now):
                self.replaced = current if current is not None and current.owner != self.owner else None
                return None
        return self.holder(now=now)

    def renew(self, *, now: datetime | None = None) -> bool:
        """The heartbeat. False when the lock is no longer ours (taken over as stale)."""
        now = now or utcnow()
        with self.store.engine.begin() as conn:
            renewed = conn.execute(
                update(scheduler_lock)
                .where(scheduler_lock.c.name == self.name, scheduler_lock.c.holder == self.owner)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.seconds))
            ).rowcount
        return bool(renewed == 1)

    def release(self) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(
                update(scheduler_lock)
                .where(scheduler_lock.c.name == self.name, scheduler_lock.c.holder == self.owner)
                .values(holder=None, host=None, pid=None, acquired_at=None, heartbeat_at=None, expires_at=None)
            )

    def holder(self, *, now: datetime | None = None) -> LockHolder | None:
        """Who holds the lock now (a stale holder does not count), or None."""
        current = _holder(self._row())
        return current if current is not None and current.alive(now or utcnow()) else None

    def _row(self) -> Any:
        with self.store.engine.connect() as conn:
            conn.execution_options(write=False)
            with conn.begin():
                return conn.execute(select(scheduler_lock).where(scheduler_lock.c.name == self.name)).first()

    def _create_row(self) -> None:
        try:
            with self.store.engine.begin() as conn:
                conn.execute(insert(scheduler_lock).values(name=self.name))
        except IntegrityError:
            pass  # another process created it first

    def _take(self, condition: Any, now: datetime) -> bool:
        with self.store.engine.begin() as conn:
            taken = conn.execute(
                update(scheduler_lock)
                .where(scheduler_lock.c.name == self.name, condition)
                .values(
                    holder=self.owner,
                    host=self.host,
                    pid=self.pid,
                    acquired_at=now,
                    heartbeat_at=now,
                    expires_at=now + timedelta(seconds=self.seconds),
                )
            ).rowcount
        return bool(taken == 1)

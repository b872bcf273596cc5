"""Subscribers as rows: who is on the list and in which state (the list's rules are in subscribers.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.errors import PipelineError
from pipeline.ledger import columns
from pipeline.ledger.engine import LedgerPart, chunks, utcnow
from pipeline.ledger.schema import frequency_changes, subscribers


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    status: str
    source: str
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    updated_at: datetime
    # Why and when the status last became bounced or complained (None for the others).
    status_reason: str | None = None
    status_changed_at: datetime | None = None
    frequency: str = "each"  # "each": an e-mail per article; "digest": the weekly digest only

    @property
    def is_active(self) -> bool:
        return self.status == "active"


class SubscriberExists(PipelineError):
    def __init__(self, existing: Subscriber) -> None:
        super().__init__(f"{existing.email} is already a subscriber ({existing.status})", field="email")
        self.existing = existing


def email_key(email: str) -> str:
    """The unique form of an address: the whole address, case-folded.

    RFC 5321 lets a server treat the local part as case-sensitive; in practice none
    does, and two rows for Ann@ and ann@ would mean two copies of every newsletter.
    """
    return email.strip().lower()


def _subscriber_row(
    email: str, name: str | None, status: str, source: str, now: datetime, frequency: str = "each"
) -> dict[str, Any]:
    """The values of a new subscribers row."""
    if frequency not in columns.FREQUENCIES:
        raise ValueError(f"unknown frequency {frequency!r}")
    return {
        "frequency": frequency,
        "email": email,
        "email_key": email_key(email),
        "name": name or None,
        "status": status,
        "source": source,
        "created_at": now,
        "confirmed_at": now if status == "active" else None,
        "unsubscribed_at": now if status == "unsubscribed" else None,
        "updated_at": now,
    }


def _existing_row(conn: Connection, subscriber_id: int) -> Row[Any]:
    """The subscriber's row, or the error that there is none (a change of an unknown subscriber)."""
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    if row is None:
        raise PipelineError(f"no subscriber with id {subscriber_id}", field="subscriber")
    return row


def _subscriber(row: Row[Any]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        status=row.status,
        source=row.source,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        unsubscribed_at=row.unsubscribed_at,
        updated_at=row.updated_at,
        status_reason=row.status_reason,
        status_changed_at=row.status_changed_at,
        frequency=row.frequency,
    )


class SubscriberRows(LedgerPart):
    """Subscribers (mixed into ``Store``)."""

    def add_subscriber(
        self,
        email: str,
        name: str | None = None,
        status: str = "active",
        source: str = "cli",
        *,
        frequency: str = "each",
        now: datetime | None = None,
    ) -> Subscriber:
        """Insert one subscriber. ``email`` should already be normalised
        (``pipeline.ledger.subscribers.normalise_address``). Raises ``SubscriberExists``."""
        if status not in columns.SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown subscriber status {status!r}")
        values = _subscriber_row(email.strip(), name, status, source, now or utcnow(), frequency)
        try:
            with self._write() as conn:
                new_id = conn.execute(insert(subscribers).values(**values)).inserted_primary_key
                assert new_id is not None
                row = conn.execute(select(subscribers).where(subscribers.c.id == new_id[0])).one()
                return _subscriber(row)
        except IntegrityError:
            existing = self.get_subscriber_by_email(email)
            if existing is None:  # lost a race with a delete; should not happen twice
                raise
            raise SubscriberExists(existing) from None

    def add_subscribers_bulk(self, rows: Sequence[dict[str, Any]], *, now: datetime | None = None) -> int:
        """Insert many new subscribers in one transaction (import). Each row has
        email, name, status, source (and frequency); every email must be new. Returns the count."""
        now = now or utcnow()
        values = [
            _subscriber_row(r["email"], r.get("name"), r["status"], r["source"], now, r.get("frequency", "each"))
            for r in rows
        ]
        with self._write() as conn:
            for chunk in chunks(values, 5000):
                conn.execute(insert(subscribers), list(chunk))
        return len(values)

    def get_subscriber(self, subscriber_id: int) -> Subscriber | None:
        with self._read() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
            return _subscriber(row) if row else None

    def get_subscriber_by_email(self, email: str) -> Subscriber | None:
        with self._read() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.email_key == email_key(email))).first()
            return _subscriber(row) if row else None

    def get_subscribers_by_email(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        """Existing subscribers among ``emails``, keyed by ``email_key``."""
        keys = sorted({email_key(e) for e in emails})
        found: dict[str, Subscriber] = {}
        with self._read() as conn:
            for chunk in chunks(keys):
                for row in conn.execute(select(subscribers).where(subscribers.c.email_key.in_(chunk))):
                    found[row.email_key] = _subscriber(row)
        return found

    def set_subscriber_status(
        self, subscriber_id: int, status: str, *, now: datetime | None = None, reason: str | None = None
    ) -> Subscriber:
        """Change a subscriber's status, stamping confirmed_at / unsubscribed_at.

        Used by confirm (pending -> active), one-click unsubscribe, bounces and
        complaints. Setting the status it already has changes nothing.
        """
        if status not in columns.SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown subscriber status {status!r}")
        now = now or utcnow()
        with self._write() as conn:
            row = _existing_row(conn, subscriber_id)
            if row.status == status:
                return _subscriber(row)
            changes: dict[str, Any] = {"status": status, "updated_at": now}
            # The reason belongs to a bounce or a complaint; any other status clears it.
            changes["status_reason"] = reason if status in ("bounced", "complained") else None
            changes["status_changed_at"] = now if status in ("bounced", "complained") else None
            if status == "active":
                changes["confirmed_at"] = now
                changes["unsubscribed_at"] = None
            elif status == "unsubscribed":
                changes["unsubscribed_at"] = now
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(**changes))
            return _subscriber(conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).one())

    def set_subscriber_frequency(
        self, subscriber_id: int, frequency: str, *, via: str, now: datetime | None = None
    ) -> Subscriber:
        """Change how often a subscriber is mailed, and log the change (when, from what,
        through what: ``via``). Setting the frequency it already has changes nothing.

        Articles already owed to their digest stay owed (see ``digest_items``): an
        article released while they were on the digest reaches them in the next one."""
        if frequency not in columns.FREQUENCIES:
            raise ValueError(f"unknown frequency {frequency!r}")
        now = now or utcnow()
        with self._write() as conn:
            row = _existing_row(conn, subscriber_id)
            if row.frequency == frequency:
                return _subscriber(row)
            conn.execute(
                update(subscribers).where(subscribers.c.id == subscriber_id).values(frequency=frequency, updated_at=now)
            )
            conn.execute(
                insert(frequency_changes).values(
                    subscriber_id=subscriber_id, at=now, old=row.frequency, new=frequency, via=via
                )
            )
            return _subscriber(conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).one())

    def frequency_history(self, subscriber_id: int) -> list[tuple[datetime, str, str, str]]:
        """(when, old, new, via) of every change of the subscriber's frequency, oldest first."""
        query = (
            select(frequency_changes.c.at, frequency_changes.c.old, frequency_changes.c.new, frequency_changes.c.via)
            .where(frequency_changes.c.subscriber_id == subscriber_id)
            .order_by(frequency_changes.c.id)
        )
        with self._read() as conn:
            return [(r.at, r.old, r.new, r.via) for r in conn.execute(query)]

    def count_frequencies(self) -> dict[str, int]:
        """Active subscribers per frequency; every frequency present, zero when none."""
        counts = dict.fromkeys(columns.FREQUENCIES, 0)
        with self._read() as conn:
            for frequency, count in conn.execute(
                select(subscribers.c.frequency, func.count())
                .where(subscribers.c.status == "active")
                .group_by(subscribers.c.frequency)
            ):
                counts[frequency] = count
        return counts

    def set_subscriber_name(self, subscriber_id: int, name: str | None, *, now: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(name=name or None, updated_at=now or utcnow())
            )

    def delete_subscriber(self, subscriber_id: int) -> bool:
        """Forget a subscriber entirely (and their delivery history). Prefer unsubscribing:
        a deleted address can be imported again, an unsubscribed one cannot."""
        with self._write() as conn:
            return conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id)).rowcount > 0

    def iter_subscribers(self, status: str | None = None, *, page: int = 1000) -> Iterator[Subscriber]:
        """Every subscriber in id order, read a page at a time (never all in memory)."""
        last_id = 0
        while True:
            query = select(subscribers).where(subscribers.c.id > last_id).order_by(subscribers.c.id).limit(page)
            if status is not None:
                query = query.where(subscribers.c.status == status)
            with self._read() as conn:
                rows = [_subscriber(r) for r in conn.execute(query)]
            yield from rows
            if len(rows) < page:
                return
            last_id = rows[-1].id

    def count_subscribers(self) -> dict[str, int]:
        """Subscribers per status; every status present, zero when none."""
        counts = dict.fromkeys(columns.SUBSCRIBER_STATUSES, 0)
        with self._read() as conn:
            for status, count in conn.execute(
                select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
            ):
                counts[status] = count
        return counts

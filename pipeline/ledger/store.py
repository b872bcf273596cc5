"""The ledger: subscribers, publications, campaigns and deliveries, in one database.

``Store.open(settings)`` connects (SQLite by default, any SQLAlchemy URL works)
and applies pending migrations. Every method is one transaction: a write is
committed when the method returns, so the ledger is the truth even when the
process is killed a moment later.

SQLite specifics live in ``make_engine`` only: WAL (readers never block the
writer), a busy timeout (several processes share the file: CLI, scheduler,
web app), foreign keys on, and ``BEGIN IMMEDIATE`` for writes so a transaction
that reads then writes waits for the lock instead of failing half-way.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import ConfigError, PipelineError
from pipeline.faults import redact_url
from pipeline.ledger import deliveries as delivery_rows
from pipeline.ledger import schema
from pipeline.ledger.audit import AuditLog
from pipeline.ledger.deliveries import Claim as Claim  # the send loop's rows, defined there
from pipeline.ledger.deliveries import DeliverySession
from pipeline.ledger.deliveries import Outcome as Outcome
from pipeline.ledger.releases import ReleaseRecords
from pipeline.ledger.schema import campaigns, deliveries, meta, publications, subscribers
from pipeline.ledger.staff import StaffRecords

BUSY_TIMEOUT_SECONDS = 30.0
LEASE_SECONDS = 60.0
# Deliveries that keep a campaign open (a held one waits for a person).
_OPEN = ("pending", "sending", "held")
HELD_REPLY = (
    "held: it was in flight when a sender stopped without recording it, twice, so it may "
    "have arrived already; send it anyway with pipeline send --resume --force"
)
_CHUNK = 500  # rows per IN (...) list: far below every database's parameter limit


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys.

    A URL that cannot work (not a URL, an unknown or missing driver) is a
    ``ConfigError`` naming ``database.url``, its password hidden.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _create_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = _create_engine(parsed, connect_args={"check_same_thread": False, "timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the sqlite3 module's legacy mode
        # skips BEGIN before SELECT and DDL); _on_begin emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # In WAL mode NORMAL survives a killed process; only a power cut may lose
        # the last commits. FULL would fsync every delivery.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("write", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


_URL_HINT = "write it like sqlite:///state/pipeline.db or postgresql+psycopg://user@host/dbname"


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError(f"{redact_url(url)!r} is not a database URL", field="database.url", hint=_URL_HINT) from None


def _create_engine(url: URL, **options: Any) -> Engine:
    shown = url.render_as_string(hide_password=True)
    try:
        return create_engine(url, **options)
    except NoSuchModuleError:
        raise ConfigError(f"unknown database driver in {shown}", field="database.url", hint=_URL_HINT) from None
    except ImportError as exc:
        raise ConfigError(
            f"the database driver for {shown} is not installed: {exc}",
            field="database.url",
            hint="install it; for PostgreSQL: pip install -e '.[postgres]'",
        ) from None
    except ArgumentError as exc:
        raise ConfigError(f"cannot use {shown}: {exc}", field="database.url", hint=_URL_HINT) from None


# --- rows ---------------------------------------------------------------------------


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

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Publication:
    slug: str
    channel: str
    released_at: datetime
    content_hash: str
    recorded_at: datetime


@dataclass(frozen=True)
class Campaign:
    id: int
    key: str
    kind: str
    subject: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    pause_reason: str | None = None  # set while status is 'paused'

    @property
    def issued_at(self) -> int:
        """Unsubscribe tokens of this campaign carry its creation time (whole seconds)."""
        return int(self.created_at.timestamp())


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


def _subscriber_row(email: str, name: str | None, status: str, source: str, now: datetime) -> dict[str, Any]:
    """The values of a new subscribers row."""
    return {
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
    )


def _campaign(row: Row[Any]) -> Campaign:
    return Campaign(
        id=row.id,
        key=row.key,
        kind=row.kind,
        subject=row.subject,
        status=row.status,
        created_at=row.created_at,
        finished_at=row.finished_at,
        pause_reason=row.pause_reason,
    )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def newsletter_to_json(newsletter: Newsletter) -> str:
    return json.dumps(
        {
            "key": newsletter.key,
            "subject": newsletter.subject,
            "preheader": newsletter.preheader,
            "html": newsletter.html,
            "text": newsletter.text,
            "web_url": newsletter.web_url,
            "web_html": newsletter.web_html,  # the archive page, restored from here if out/ loses it
            "date": newsletter.date.isoformat(),
            "slugs": list(newsletter.slugs),
        }
    )


def newsletter_from_json(content: str) -> Newsletter:
    data = json.loads(content)
    return Newsletter(
        key=data["key"],
        subject=data["subject"],
        preheader=data["preheader"],
        html=data["html"],
        text=data["text"],
        web_html=data.get("web_html", ""),  # campaigns made before 0002 did not keep it
        web_url=data["web_url"],
        date=datetime.fromisoformat(data["date"]),
        slugs=tuple(data["slugs"]),
    )


class Store(ReleaseRecords, StaffRecords, AuditLog):
    """The ledger. Open with ``Store.open(settings)``; use as a context manager or call ``close()``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls.open_url(settings.database_url, busy_timeout=settings.database.busy_timeout_seconds)

    @classmethod
    def open_url(cls, url: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Store:
        engine = make_engine(url, busy_timeout=busy_timeout)
        schema.migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(write=False)
            with conn.begin():
                yield conn

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            value: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == key))
            return value

    def set_meta(self, key: str, value: str) -> None:
        try:
            with self._write() as conn:
                if conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount == 0:
                    conn.execute(insert(meta).values(key=key, value=value))
        except IntegrityError:
            # Another process inserted the key after our update found nothing (PostgreSQL's
            # reads do not wait for writers; SQLite's BEGIN IMMEDIATE does): now it exists.
            with self._write() as conn:
                conn.execute(update(meta).where(meta.c.key == key).values(value=value))

    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless the key already has one; return what is stored (e.g. first_run_at)."""
        try:
            with self._write() as conn:
                current: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == key))
                if current is not None:
                    return current
                conn.execute(insert(meta).values(key=key, value=value))
                return value
        except IntegrityError:  # another process stored one first (see set_meta): theirs stands
            stored = self.get_meta(key)
            if stored is None:
                raise
            return stored

    def delete_meta(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(delete(meta).where(meta.c.key == key))

    def meta_values(self, prefix: str) -> list[str]:
        """The values of every key starting with ``prefix`` (taken literally: ``%`` and ``_`` too)."""
        with self._read() as conn:
            return list(conn.scalars(select(meta.c.value).where(meta.c.key.startswith(prefix, autoescape=True))))

    # --- subscribers --------------------------------------------------------------

    def add_subscriber(
        self,
        email: str,
        name: str | None = None,
        status: str = "active",
        source: str = "cli",
        *,
        now: datetime | None = None,
    ) -> Subscriber:
        """Insert one subscriber. ``email`` should already be normalised
        (``pipeline.ledger.subscribers.normalise_address``). Raises ``SubscriberExists``."""
        if status not in schema.SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown subscriber status {status!r}")
        values = _subscriber_row(email.strip(), name, status, source, now or utcnow())
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
        email, name, status, source; every email must be new. Returns the count."""
        now = now or utcnow()
        values = [_subscriber_row(r["email"], r.get("name"), r["status"], r["source"], now) for r in rows]
        with self._write() as conn:
            for chunk in _chunks(values, 5000):
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
            for chunk in _chunks(keys):
                for row in conn.execute(select(subscribers).where(subscribers.c.email_key.in_(chunk))):
                    found[row.email_key] = _subscriber(row)
        return found

    def set_subscriber_status(self, subscriber_id: int, status: str, *, now: datetime | None = None) -> Subscriber:
        """Change a subscriber's status, stamping confirmed_at / unsubscribed_at.

        Used by confirm (pending -> active), one-click unsubscribe, bounces and
        complaints. Setting the status it already has changes nothing.
        """
        if status not in schema.SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown subscriber status {status!r}")
        now = now or utcnow()
        with self._write() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
            if row is None:
                raise PipelineError(f"no subscriber with id {subscriber_id}", field="subscriber")
            if row.status == status:
                return _subscriber(row)
            changes: dict[str, Any] = {"status": status, "updated_at": now}
            if status == "active":
                changes["confirmed_at"] = now
                changes["unsubscribed_at"] = None
            elif status == "unsubscribed":
                changes["unsubscribed_at"] = now
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(**changes))
            return _subscriber(conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).one())

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
        counts = dict.fromkeys(schema.SUBSCRIBER_STATUSES, 0)
        with self._read() as conn:
            for status, count in conn.execute(
                select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
            ):
                counts[status] = count
        return counts

    # --- publications -------------------------------------------------------------

    def record_publication(
        self, slug: str, channel: str, released_at: datetime, content_hash: str, *, now: datetime | None = None
    ) -> bool:
        """Record that ``slug`` went out on ``channel``. True if newly recorded, False if
        it already was (the first record stands: a post is released once per channel)."""
        try:
            with self._write() as conn:
                if conn.scalar(
                    select(publications.c.id).where(publications.c.slug == slug, publications.c.channel == channel)
                ):
                    return False
                conn.execute(
                    insert(publications).values(
                        slug=slug,
                        channel=channel,
                        released_at=released_at,
                        content_hash=content_hash,
                        recorded_at=now or utcnow(),
                    )
                )
                return True
        except IntegrityError:  # another process recorded it between our check and insert
            return False

    def is_published(self, slug: str, channel: str) -> bool:
        return self.get_publication(slug, channel) is not None

    def get_publication(self, slug: str, channel: str) -> Publication | None:
        with self._read() as conn:
            row = conn.execute(
                select(publications).where(publications.c.slug == slug, publications.c.channel == channel)
            ).first()
        return self._publication(row) if row else None

    def list_publications(self, channel: str | None = None) -> list[Publication]:
        query = select(publications).order_by(publications.c.released_at, publications.c.slug)
        if channel is not None:
            query = query.where(publications.c.channel == channel)
        with self._read() as conn:
            return [self._publication(r) for r in conn.execute(query)]

    @staticmethod
    def _publication(row: Row[Any]) -> Publication:
        return Publication(
            slug=row.slug,
            channel=row.channel,
            released_at=row.released_at,
            content_hash=row.content_hash,
            recorded_at=row.recorded_at,
        )

    # --- campaigns ----------------------------------------------------------------

    def create_campaign(
        self, newsletter: Newsletter, kind: str, *, now: datetime | None = None
    ) -> tuple[Campaign, bool]:
        """The campaign for ``newsletter.key`` and one pending delivery per active
        subscriber, all in one transaction. Idempotent: if a campaign with this key
        exists it is returned unchanged (and ``False``), with no new deliveries."""
        if kind not in schema.CAMPAIGN_KINDS:
            raise ValueError(f"unknown campaign kind {kind!r}")
        now = now or utcnow()
        existing = self.get_campaign_by_key(newsletter.key)
        if existing is not None:
            return existing, False
        try:
            with self._write() as conn:
                result = conn.execute(
                    insert(campaigns).values(
                        key=newsletter.key,
                        kind=kind,
                        subject=newsletter.subject,
                        content=newsletter_to_json(newsletter),
                        status="sending",
                        created_at=now,
                    )
                )
                assert result.inserted_primary_key is not None
                campaign_id = result.inserted_primary_key[0]
                # INSERT ... SELECT: the database copies the active list itself, so a
                # campaign to 100,000 subscribers never holds them in Python memory.
                audience = select(
                    literal(campaign_id),
                    subscribers.c.id,
                    literal("pending"),
                    literal(0),
                    literal(now, schema.UTCDateTime()),
                ).where(subscribers.c.status == "active")
                conn.execute(
                    insert(deliveries).from_select(
                        ["campaign_id", "subscriber_id", "status", "attempts", "updated_at"], audience
                    )
                )
                row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).one()
                return _campaign(row), True
        except IntegrityError:  # another process created it first: theirs stands
            raced = self.get_campaign_by_key(newsletter.key)
            if raced is None:
                raise
            return raced, False

    def get_campaign(self, campaign_id: int) -> Campaign | None:
        with self._read() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
            return _campaign(row) if row else None

    def get_campaign_by_key(self, key: str) -> Campaign | None:
        with self._read() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.key == key)).first()
            return _campaign(row) if row else None

    def campaign_newsletter(self, campaign_id: int) -> Newsletter:
        with self._read() as conn:
            content = conn.scalar(select(campaigns.c.content).where(campaigns.c.id == campaign_id))
        if content is None:
            raise PipelineError(f"no campaign with id {campaign_id}", field="campaign")
        return newsletter_from_json(content)

    def list_campaigns(self, *, unfinished: bool = False) -> list[Campaign]:
        query = select(campaigns).order_by(campaigns.c.id)
        if unfinished:
            query = query.where(campaigns.c.status != "finished")
        with self._read() as conn:
            return [_campaign(r) for r in conn.execute(query)]

    def finish_campaign(self, campaign_id: int, *, now: datetime | None = None) -> bool:
        """Mark finished if no delivery is pending or sending. True if it is finished now."""
        with self._write() as conn:
            open_rows = conn.scalar(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status.in_(_OPEN))
            )
            if open_rows:
                return False
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.status != "finished")
                .values(
                    status="finished",
                    finished_at=now or utcnow(),
                    pause_reason=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            return True

    def pause_campaign(self, campaign_id: int, reason: str) -> None:
        """Stop the campaign until ``resume_campaign``: the scheduler leaves it alone.
        Call only while holding the campaign's lease."""
        with self._write() as conn:
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.status == "sending")
                .values(status="paused", pause_reason=reason)
            )

    def resume_campaign(self, campaign_id: int) -> bool:
        """A paused campaign is sending again; True if it was paused."""
        with self._write() as conn:
            return (
                conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id, campaigns.c.status == "paused")
                    .values(status="sending", pause_reason=None)
                ).rowcount
                == 1
            )

    # --- leases: one sender per campaign --------------------------------------------

    @staticmethod
    def new_lease_owner() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def acquire_lease(self, campaign_id: int, owner: str, *, now: datetime | None = None) -> str | None:
        """Take the campaign for ``owner``. Returns None on success, else the current holder.

        A lease held by a dead process on this machine (killed, crashed) is taken over
        at once; one held elsewhere is respected until it expires.

        Each step is one conditional UPDATE, so of two senders asking at once exactly one
        gets the lease on every database (a read, then a write, let both through on
        PostgreSQL, whose reads do not wait for a writer). A dead holder is replaced by an
        UPDATE that names it: of two senders taking over, the second finds a live holder.
        """
        now = now or utcnow()
        free = or_(
            campaigns.c.lease_owner.is_(None),
            campaigns.c.lease_owner == owner,
            campaigns.c.lease_expires_at.is_(None),
            campaigns.c.lease_expires_at <= now,
        )
        holder: str | None = None
        for _attempt in range(3):  # a holder that lets go between two steps: ask again
            if self._take_lease(campaign_id, free, owner, now):
                return None
            holder = self._lease_holder(campaign_id)
            if holder is None:
                continue
            if owner_alive(holder):
                return holder
            if self._take_lease(campaign_id, campaigns.c.lease_owner == holder, owner, now):
                return None
        return holder or self._lease_holder(campaign_id) or "another sender"

    def _take_lease(self, campaign_id: int, condition: Any, owner: str, now: datetime) -> bool:
        with self._write() as conn:
            taken = conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, condition)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            ).rowcount
        return bool(taken == 1)

    def _lease_holder(self, campaign_id: int) -> str | None:
        with self._read() as conn:
            holder: str | None = conn.scalar(select(campaigns.c.lease_owner).where(campaigns.c.id == campaign_id))
        return holder

    def renew_lease(self, campaign_id: int, owner: str, *, now: datetime | None = None) -> bool:
        now = now or utcnow()
        with self._write() as conn:
            return (
                conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                    .values(lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
                ).rowcount
                == 1
            )

    def release_lease(self, campaign_id: int, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    # --- deliveries ---------------------------------------------------------------

    def requeue_in_flight(self, campaign_id: int, *, now: datetime | None = None) -> tuple[int, int]:
        """Deliveries left 'sending' by a sender that died: back to pending, to be sent
        again (some may have reached the server already: the in-flight window), except
        those this happens to for the second time: they are 'held' until
        ``release_held``, so no crash loop sends anyone a third copy.
        Returns (requeued, held). Call only while holding the campaign's lease."""
        now = now or utcnow()
        in_flight = and_(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "sending")
        with self._write() as conn:
            held = conn.execute(
                update(deliveries)
                .where(in_flight, deliveries.c.interrupted >= 1)
                .values(
                    status="held",
                    interrupted=deliveries.c.interrupted + 1,
                    last_reply=HELD_REPLY,
                    updated_at=now,
                )
            ).rowcount
            requeued = conn.execute(
                update(deliveries)
                .where(in_flight)
                .values(status="pending", interrupted=deliveries.c.interrupted + 1, updated_at=now)
            ).rowcount
        return requeued, held

    def release_held(self, campaign_id: int, *, now: datetime | None = None) -> int:
        """Held deliveries back to pending (``send --resume --force``); returns how many."""
        with self._write() as conn:
            return conn.execute(
                update(deliveries)
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "held")
                .values(status="pending", updated_at=now or utcnow())
            ).rowcount

    def held_deliveries(self, campaign_id: int, *, limit: int = 100) -> list[tuple[str, str]]:
        """(address, why) of the campaign's held deliveries, oldest first."""
        query = (
            select(subscribers.c.email, deliveries.c.last_reply)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status == "held")
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [(r.email, r.last_reply or HELD_REPLY) for r in conn.execute(query)]

    def claim_deliveries(self, campaign_id: int, limit: int, *, now: datetime | None = None) -> tuple[list[Claim], int]:
        """Mark up to ``limit`` due deliveries 'sending' and return them, oldest first,
        with the number skipped.

        Deliveries whose subscriber is no longer active are marked 'skipped' here, in
        the same transaction: the status is checked at the moment of sending.
        """
        return self.record_and_claim(campaign_id, (), limit, now=now)

    def record_outcomes(self, outcomes: Sequence[Outcome], *, now: datetime | None = None) -> None:
        """Write what happened to claimed deliveries, all in one transaction."""
        if outcomes:
            with self._write() as conn:
                delivery_rows.record(delivery_rows.ConnectionExecutor(conn), outcomes, now or utcnow())

    def record_and_claim(
        self, campaign_id: int, outcomes: Sequence[Outcome], limit: int, *, now: datetime | None = None
    ) -> tuple[list[Claim], int]:
        """``record_outcomes`` then ``claim_deliveries``, in one transaction: the send
        loop's one visit to the ledger per round."""
        now = now or utcnow()
        with self._write() as conn:
            executor = delivery_rows.ConnectionExecutor(conn)
            if outcomes:
                delivery_rows.record(executor, outcomes, now)
            return delivery_rows.claim(executor, campaign_id, limit, now)

    @contextmanager
    def delivery_session(self) -> Iterator[DeliverySession]:
        """A connection of its own for a send loop (see ``DeliverySession``). Call its
        ``record_and_claim`` only while holding the campaign's lease."""
        session = DeliverySession(self.engine)
        try:
            yield session
        finally:
            session.close()

    def next_retry_at(self, campaign_id: int) -> datetime | None:
        """When the earliest deferred (4xx) delivery of the campaign becomes due."""
        with self._read() as conn:
            value: datetime | None = conn.scalar(
                select(func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.campaign_id == campaign_id, deliveries.c.status == "pending"
                )
            )
        return value

    def delivery_counts(self, campaign_id: int) -> dict[str, int]:
        """Deliveries per status (every status present)."""
        counts = dict.fromkeys(schema.DELIVERY_STATUSES, 0)
        with self._read() as conn:
            for status, count in conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.campaign_id == campaign_id)
                .group_by(deliveries.c.status)
            ):
                counts[status] = count
        return counts

    def problem_deliveries(self, campaign_id: int, *, limit: int = 100) -> list[tuple[str, str, str]]:
        """(address, status, last reply) of failed and bounced deliveries."""
        query = (
            select(subscribers.c.email, deliveries.c.status, deliveries.c.last_reply)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(and_(deliveries.c.campaign_id == campaign_id, deliveries.c.status.in_(("failed", "bounced"))))
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [(r.email, r.status, r.last_reply or "") for r in conn.execute(query)]

    def subscriber_deliveries(self, subscriber_id: int) -> list[tuple[str, str, int]]:
        """(campaign key, status, attempts) for one subscriber, oldest first."""
        query = (
            select(campaigns.c.key, deliveries.c.status, deliveries.c.attempts)
            .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
            .where(deliveries.c.subscriber_id == subscriber_id)
            .order_by(deliveries.c.id)
        )
        with self._read() as conn:
            return [(r.key, r.status, r.attempts) for r in conn.execute(query)]


def owner_alive(owner: str) -> bool:
    """Whether the process named in a lease still runs. Only answerable on this host:
    elsewhere we assume it does (the lease then lapses by time)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

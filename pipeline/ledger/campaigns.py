"""Campaigns: one newsletter frozen for sending, and its deliveries created at once.
The lease that lets one sender at a time work on a campaign is in campaign_leases.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.errors import PipelineError
from pipeline.ledger import columns
from pipeline.ledger.engine import LedgerPart, utcnow
from pipeline.ledger.schema import campaigns, deliveries, digest_items, subscribers

# Deliveries that keep a campaign open (a held one waits for a person).
OPEN_DELIVERIES = ("pending", "sending", "held")


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
    # Which group it went to: "each" (an e-mail per article), "digest", or "all" (the
    # digest was off, or it was made before subscribers chose: None).
    audience: str | None = None

    @property
    def issued_at(self) -> int:
        """Unsubscribe tokens of this campaign carry its creation time (whole seconds)."""
        return int(self.created_at.timestamp())


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
        audience=row.audience,
    )


def insert_campaign(
    conn: Connection, *, key: str, kind: str, subject: str, content: str, audience: str, now: datetime
) -> int:
    """A new campaign row, sending from ``now``: its id."""
    result = conn.execute(
        insert(campaigns).values(
            key=key,
            kind=kind,
            subject=subject,
            content=content,
            status="sending",
            created_at=now,
            audience=audience,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def add_pending_deliveries(conn: Connection, campaign_id: int, now: datetime, *where: ColumnElement[bool]) -> None:
    """A pending delivery of ``campaign_id`` for each active subscriber matching ``where``.
    INSERT ... SELECT: the database copies the list itself, so a campaign to 100,000
    subscribers never holds them in Python memory."""
    recipients = select(
        literal(campaign_id),
        subscribers.c.id,
        literal("pending"),
        literal(0),
        literal(now, columns.UTCDateTime()),
    ).where(subscribers.c.status == "active", *where)
    conn.execute(
        insert(deliveries).from_select(["campaign_id", "subscriber_id", "status", "attempts", "updated_at"], recipients)
    )


class CampaignRows(LedgerPart):
    """Campaigns (mixed into ``Store``)."""

    def create_campaign(
        self,
        key: str,
        kind: str,
        subject: str,
        content: str,
        *,
        audience: str = "all",
        owed_slug: str | None = None,
        now: datetime | None = None,
    ) -> tuple[Campaign, bool]:
        """The campaign ``key`` with its frozen ``content`` (the newsletter as the mail
        layer stores it; the ledger keeps it as text) and one pending delivery per active
        subscriber of ``audience`` ("all", or only those whose frequency is "each"), all in
        one transaction. With ``owed_slug`` (an article's campaign to the "each" group),
        the same transaction records the article as owed to the next digest of every active
        "digest" subscriber: at every moment each active subscriber is in exactly one of
        the two. Idempotent: if a campaign with this key exists it is returned unchanged
        (and ``False``), with no new deliveries."""
        if kind not in columns.CAMPAIGN_KINDS:
            raise ValueError(f"unknown campaign kind {kind!r}")
        if audience not in ("all", "each"):
            raise ValueError(f"a campaign made here goes to 'all' or 'each', not {audience!r}")
        now = now or utcnow()
        existing = self.get_campaign_by_key(key)
        if existing is not None:
            return existing, False
        try:
            with self._write() as conn:
                campaign_id = insert_campaign(
                    conn, key=key, kind=kind, subject=subject, content=content, audience=audience, now=now
                )
                only_each = [subscribers.c.frequency == "each"] if audience == "each" else []
                add_pending_deliveries(conn, campaign_id, now, *only_each)
                if audience == "each" and owed_slug is not None:
                    # Every active subscriber the campaign left out, rather than "frequency is
                    # digest" read again: on PostgreSQL each statement reads its own snapshot,
                    # and a switch between the two must not leave anyone out of both.
                    mailed = select(deliveries.c.subscriber_id).where(deliveries.c.campaign_id == campaign_id)
                    already = select(digest_items.c.subscriber_id).where(digest_items.c.slug == owed_slug)
                    owed = select(
                        subscribers.c.id,
                        literal(owed_slug),
                        literal(campaign_id),
                        literal(now, columns.UTCDateTime()),
                    ).where(
                        subscribers.c.status == "active",
                        subscribers.c.id.not_in(mailed),
                        subscribers.c.id.not_in(already),
                    )
                    conn.execute(
                        insert(digest_items).from_select(
                            ["subscriber_id", "slug", "post_campaign_id", "owed_since"], owed
                        )
                    )
                row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).one()
                return _campaign(row), True
        except IntegrityError:  # another process created it first: theirs stands
            raced = self.get_campaign_by_key(key)
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

    def campaign_content(self, campaign_id: int) -> str:
        """What ``create_campaign`` froze: a resumed campaign sends exactly what it first did."""
        with self._read() as conn:
            content: str | None = conn.scalar(select(campaigns.c.content).where(campaigns.c.id == campaign_id))
        if content is None:
            raise PipelineError(f"no campaign with id {campaign_id}", field="campaign")
        return content

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
                .where(deliveries.c.campaign_id == campaign_id, deliveries.c.status.in_(OPEN_DELIVERIES))
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

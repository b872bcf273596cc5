"""Bounces and complaints that came back after the send: one row per report, and what
each does to its delivery and its subscriber.

- permanent, about the address (5.1.1 no such user, ...): the delivery and the
  subscriber become 'bounced', with the reason and the date;
- permanent, about something else (5.7.1 policy, a full mailbox): the delivery
  'failed', the subscriber untouched (DESIGN.md invariant 9);
- temporary (4.x.x, "delayed"): counted; ``temporary_limit`` of them within
  ``temporary_days`` bounce the address;
- complaint (an ARF report): the subscriber 'complained', never mailed again.

Each report is recorded once (``report_key``), so reading a mailbox twice changes
nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.engine import LedgerPart, utcnow
from pipeline.ledger.schema import bounce_events, deliveries, subscribers

BOUNCE_KINDS = ("permanent", "temporary", "complaint", "failed")
# What a subscriber's status can be moved from by a report that came back.
_BOUNCEABLE = ("active", "pending")
_COMPLAINABLE = ("active", "pending", "unsubscribed", "bounced")


@dataclass(frozen=True)
class BounceEvent:
    """One report about one subscriber, as read from the bounce mailbox."""

    report_key: str
    subscriber_id: int
    campaign_id: int | None
    kind: str  # one of BOUNCE_KINDS
    status: str | None  # 5.1.1, 4.2.2, or the feedback type (abuse)
    reason: str  # in words, for the desk and the CLI
    reported_at: datetime


# Above these, Gmail, Yahoo and Outlook.com start to send the clinic's mail to spam or
# refuse it (their bulk-sender rules hold complaints under 0.3%, and aim at 0.1%).
BOUNCE_WARNING = 0.02
COMPLAINT_WARNING = 0.001


@dataclass(frozen=True)
class CampaignRates:
    """Of one campaign: attempts that reached a server's verdict, and how many of them
    bounced (at once or later) or drew a complaint."""

    attempted: int  # sent + failed + bounced
    bounced: int
    complained: int

    @property
    def bounce_rate(self) -> float:
        return self.bounced / self.attempted if self.attempted else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complained / self.attempted if self.attempted else 0.0

    def describe(self) -> str:
        return (
            f"bounce rate {self.bounce_rate:.1%} ({self.bounced:,} of {self.attempted:,}), "
            f"complaint rate {self.complaint_rate:.2%} ({self.complained:,})"
        )

    def warnings(self) -> list[str]:
        """What a person should know about these rates, in words; empty when they are fine."""
        found = []
        if self.bounce_rate > BOUNCE_WARNING:
            found.append(
                f"{self.bounce_rate:.1%} of this campaign's messages bounced, over {BOUNCE_WARNING:.0%}: the list holds "
                "old or mistyped addresses; mailbox providers read a high bounce rate as a spammer's list. Bounced "
                "addresses are never mailed again; check how addresses get onto the list"
            )
        if self.complaint_rate > COMPLAINT_WARNING:
            found.append(
                f"{self.complaint_rate:.2%} of this campaign's readers marked it as spam, over {COMPLAINT_WARNING:.1%}: "
                "Gmail and Yahoo filter or refuse senders above 0.3%. Make sure everyone on the list asked for the "
                "articles, and that the unsubscribe link is easy to find"
            )
        return found


class BounceRecords(LedgerPart):
    """Bounce and complaint reports (mixed into ``Store``)."""

    def record_bounce(
        self, event: BounceEvent, *, temporary_limit: int, temporary_days: float, now: datetime | None = None
    ) -> str:
        """Record one report and act on it, in one transaction. Returns what happened:
        'duplicate' (seen before), 'bounced', 'complained', 'failed' (that delivery only),
        'counted' (a temporary failure below the limit) or 'unknown' (no such subscriber)."""
        if event.kind not in BOUNCE_KINDS:
            raise ValueError(f"unknown bounce kind {event.kind!r}")
        now = now or utcnow()
        try:
            with self._write() as conn:
                if conn.scalar(select(bounce_events.c.id).where(bounce_events.c.report_key == event.report_key)):
                    return "duplicate"
                if conn.scalar(select(subscribers.c.id).where(subscribers.c.id == event.subscriber_id)) is None:
                    return "unknown"
                campaign_id = event.campaign_id if _delivery_exists(conn, event) else None
                conn.execute(
                    insert(bounce_events).values(
                        report_key=event.report_key,
                        subscriber_id=event.subscriber_id,
                        campaign_id=campaign_id,
                        kind=event.kind,
                        status=event.status,
                        reason=event.reason,
                        reported_at=event.reported_at,
                        recorded_at=now,
                    )
                )
                return _act(conn, event, campaign_id, temporary_limit, timedelta(days=temporary_days), now)
        except IntegrityError:  # another reader recorded the same report a moment ago
            return "duplicate"

    def campaign_rates(self, campaign_id: int) -> CampaignRates:
        with self._read() as conn:
            counts: dict[str, int] = dict(
                conn.execute(  # type: ignore[arg-type]
                    select(deliveries.c.status, func.count())
                    .where(deliveries.c.campaign_id == campaign_id)
                    .group_by(deliveries.c.status)
                ).all()
            )
            complained = conn.scalar(
                select(func.count(func.distinct(bounce_events.c.subscriber_id))).where(
                    bounce_events.c.campaign_id == campaign_id, bounce_events.c.kind == "complaint"
                )
            )
        attempted = sum(counts.get(status, 0) for status in ("sent", "failed", "bounced"))
        return CampaignRates(attempted=attempted, bounced=counts.get("bounced", 0), complained=int(complained or 0))

    def bounce_events_of(self, subscriber_id: int) -> list[BounceEvent]:
        """Every report recorded about one subscriber, oldest first."""
        query = select(bounce_events).where(bounce_events.c.subscriber_id == subscriber_id).order_by(bounce_events.c.id)
        with self._read() as conn:
            return [
                BounceEvent(
                    report_key=r.report_key,
                    subscriber_id=r.subscriber_id,
                    campaign_id=r.campaign_id,
                    kind=r.kind,
                    status=r.status,
                    reason=r.reason,
                    reported_at=r.reported_at,
                )
                for r in conn.execute(query)
            ]


def _delivery_exists(conn: Connection, event: BounceEvent) -> bool:
    if event.campaign_id is None:
        return False
    found = conn.scalar(
        select(deliveries.c.id).where(
            deliveries.c.campaign_id == event.campaign_id, deliveries.c.subscriber_id == event.subscriber_id
        )
    )
    return found is not None


def _set_subscriber(
    conn: Connection, event: BounceEvent, status: str, allowed: tuple[str, ...], reason: str, now: datetime
) -> bool:
    """The subscriber to ``status``, dated by the report (when it happened), not by when
    the mailbox was read."""
    changed = conn.execute(
        update(subscribers)
        .where(subscribers.c.id == event.subscriber_id, subscribers.c.status.in_(allowed))
        .values(status=status, status_reason=reason, status_changed_at=event.reported_at, updated_at=now)
    ).rowcount
    return bool(changed)


def _set_delivery(conn: Connection, event: BounceEvent, campaign_id: int | None, status: str, now: datetime) -> None:
    """The delivery the report is about, if known, from 'sent' (what the relay took) to
    ``status``; a delivery that already failed keeps its first reason."""
    if campaign_id is None:
        return
    conn.execute(
        update(deliveries)
        .where(
            and_(
                deliveries.c.campaign_id == campaign_id,
                deliveries.c.subscriber_id == event.subscriber_id,
                deliveries.c.status == "sent",
            )
        )
        .values(status=status, last_reply=f"returned later: {event.reason}", updated_at=now)
    )


def _act(
    conn: Connection, event: BounceEvent, campaign_id: int | None, limit: int, window: timedelta, now: datetime
) -> str:
    if event.kind == "complaint":
        _set_subscriber(conn, event, "complained", _COMPLAINABLE, event.reason, now)
        return "complained"
    if event.kind == "permanent":
        _set_delivery(conn, event, campaign_id, "bounced", now)
        _set_subscriber(conn, event, "bounced", _BOUNCEABLE, event.reason, now)
        return "bounced"
    if event.kind == "failed":
        _set_delivery(conn, event, campaign_id, "failed", now)
        return "failed"
    # Reports may be read in any order (a mailbox lists them by file name, not by date):
    # the address bounces when ``limit`` temporary failures, this one among them, fall
    # within ``window`` of each other, whichever of them came in last.
    times = sorted(
        conn.scalars(
            select(bounce_events.c.reported_at).where(
                bounce_events.c.subscriber_id == event.subscriber_id,
                bounce_events.c.kind == "temporary",
                bounce_events.c.reported_at > event.reported_at - window,
                bounce_events.c.reported_at < event.reported_at + window,
            )
        )
    )
    recent = _failures_in_a_window(times, event.reported_at, limit, window)
    if recent < limit:
        return "counted"
    days = f"{window.days} days" if window.days else f"{window.total_seconds() / 3600:g} hours"
    reason = f"{recent} temporary failures within {days}; the last: {event.reason}"
    return "bounced" if _set_subscriber(conn, event, "bounced", _BOUNCEABLE, reason, now) else "counted"


def _failures_in_a_window(times: list[datetime], at: datetime, limit: int, window: timedelta) -> int:
    """The most failures in one span shorter than ``window`` that holds ``at`` and at
    least ``limit`` failures (0 when there is no such span). ``times``: sorted."""
    best = 0
    for first in range(len(times) - limit + 1):
        last = first + limit - 1
        if times[first] <= at <= times[last] and times[last] - times[first] < window:
            end = times[last]
            best = max(best, sum(1 for t in times if end - window < t <= end))
    return best

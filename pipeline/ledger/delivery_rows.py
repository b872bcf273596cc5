"""Deliveries: one row per campaign and subscriber, moved along by the send loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import and_, func, select, update

from pipeline.ledger import columns
from pipeline.ledger import deliveries as delivery_rows
from pipeline.ledger.deliveries import Claim, DeliverySession, Outcome
from pipeline.ledger.engine import LedgerPart, utcnow
from pipeline.ledger.schema import campaigns, deliveries, subscribers

HELD_REPLY = (
    "held: it was in flight when a sender stopped without recording it, twice, so it may "
    "have arrived already; send it anyway with pipeline send --resume --force"
)


class DeliveryRows(LedgerPart):
    """The deliveries of campaigns (mixed into ``Store``)."""

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
        counts = dict.fromkeys(columns.DELIVERY_STATUSES, 0)
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

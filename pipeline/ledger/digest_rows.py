"""What each subscriber's digest owes them, and the digest campaigns that pay it.

An article's campaign goes to the subscribers who get each article; in the same
transaction it is recorded as owed to every active digest subscriber (``digest_items``,
see ``CampaignRows.create_campaign``). A digest carries to each subscriber exactly what
is owed to them and not yet carried: subscribers owed the same articles share one
campaign, so one day's digest may be a few campaigns (``digest-DATE``, ``digest-DATE-2``
...). Nobody gets an article twice (an article reached a subscriber either on its own or
in one digest), and a switch loses none (what is owed stays owed whatever they choose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, select, update

from pipeline.ledger.campaigns import Campaign, _campaign, add_pending_deliveries, insert_campaign
from pipeline.ledger.engine import LedgerPart, chunks, utcnow
from pipeline.ledger.schema import campaigns, deliveries, digest_items, subscribers


@dataclass(frozen=True)
class DigestGroup:
    """One campaign of a digest: the subscribers owed exactly ``slugs``."""

    key: str
    subject: str
    content: str
    slugs: tuple[str, ...]
    subscriber_ids: tuple[int, ...]


class DigestRows(LedgerPart):
    """Digest items and digest campaigns (mixed into ``Store``)."""

    def owed_digest_items(self, slugs: Sequence[str]) -> dict[int, frozenset[str]]:
        """Active subscribers owed any of ``slugs`` by their next digest, with which.

        An item is left out if the subscriber has a delivery (other than skipped) of the
        article's own campaign: the ledger knows they got it."""
        wanted = sorted(set(slugs))
        got_it = exists().where(
            deliveries.c.campaign_id == digest_items.c.post_campaign_id,
            deliveries.c.subscriber_id == digest_items.c.subscriber_id,
            deliveries.c.status != "skipped",
        )
        owed: dict[int, set[str]] = {}
        with self._read() as conn:
            for chunk in chunks(wanted):
                query = (
                    select(digest_items.c.subscriber_id, digest_items.c.slug)
                    .join(subscribers, subscribers.c.id == digest_items.c.subscriber_id)
                    .where(
                        digest_items.c.digest_campaign_id.is_(None),
                        digest_items.c.slug.in_(chunk),
                        subscribers.c.status == "active",
                        ~got_it,
                    )
                )
                for subscriber_id, slug in conn.execute(query):
                    owed.setdefault(subscriber_id, set()).add(slug)
        return {subscriber_id: frozenset(found) for subscriber_id, found in owed.items()}

    def create_digest_campaigns(self, groups: Sequence[DigestGroup], *, now: datetime | None = None) -> list[Campaign]:
        """One digest campaign per group, with a pending delivery for each of its
        subscribers still active, and their items marked as carried by it: all groups in
        one transaction, so a crash leaves either the whole digest or nothing. An item
        owed meanwhile (a release while this ran) is not in a group's slugs: it stays
        owed, for the next digest."""
        now = now or utcnow()
        made = []
        with self._write() as conn:
            for group in groups:
                campaign_id = insert_campaign(
                    conn,
                    key=group.key,
                    kind="digest",
                    subject=group.subject,
                    content=group.content,
                    audience="digest",
                    now=now,
                )
                for ids in chunks(sorted(group.subscriber_ids)):
                    add_pending_deliveries(conn, campaign_id, now, subscribers.c.id.in_(ids))
                    carried = exists().where(
                        deliveries.c.campaign_id == campaign_id,
                        deliveries.c.subscriber_id == digest_items.c.subscriber_id,
                    )
                    conn.execute(
                        update(digest_items)
                        .where(
                            and_(
                                digest_items.c.subscriber_id.in_(ids),
                                digest_items.c.slug.in_(group.slugs),
                                digest_items.c.digest_campaign_id.is_(None),
                                carried,
                            )
                        )
                        .values(digest_campaign_id=campaign_id)
                    )
                made.append(_campaign(conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).one()))
        return made

    def digest_campaigns_on(self, key: str) -> list[Campaign]:
        """The campaigns of the digest keyed ``key`` (``digest-DATE``), in the order made."""
        query = (
            select(campaigns)
            .where(campaigns.c.kind == "digest", (campaigns.c.key == key) | campaigns.c.key.like(f"{key}-%"))
            .order_by(campaigns.c.id)
        )
        with self._read() as conn:
            return [_campaign(row) for row in conn.execute(query)]

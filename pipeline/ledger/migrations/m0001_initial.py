"""Migration 0001: the first schema (version 1 of every table)."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pipeline.ledger.columns import (
    CAMPAIGN_KINDS,
    SUBSCRIBER_STATUSES,
    V1_CAMPAIGN_STATUSES,
    V1_DELIVERY_STATUSES,
    UTCDateTime,
    one_of,
)


def define_v1(metadata: MetaData) -> None:
    """Version 1 of the schema. Frozen: used by migration 0001 and nothing else."""
    Table(
        "meta",
        metadata,
        Column("key", String(100), primary_key=True),
        Column("value", Text, nullable=False),
    )
    Table(
        "subscribers",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("email", String(320), nullable=False),
        Column("email_key", String(320), nullable=False, unique=True),
        Column("name", String(200)),
        Column("status", String(16), nullable=False),
        Column("source", String(32), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("confirmed_at", UTCDateTime),
        Column("unsubscribed_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        CheckConstraint(one_of("status", SUBSCRIBER_STATUSES), name="subscribers_status"),
        Index("subscribers_by_status", "status", "id"),
    )
    Table(
        "publications",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("slug", String(200), nullable=False),
        Column("channel", String(32), nullable=False),
        Column("released_at", UTCDateTime, nullable=False),
        Column("content_hash", String(64), nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        UniqueConstraint("slug", "channel", name="publications_slug_channel"),
    )
    Table(
        "campaigns",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(200), nullable=False, unique=True),
        Column("kind", String(16), nullable=False),
        Column("subject", Text, nullable=False),
        # The rendered newsletter, frozen at creation: a resumed campaign sends exactly
        # what the first message carried, even if the post was edited in between.
        Column("content", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime),
        # Which process is sending it, until when: two senders never share a campaign.
        Column("lease_owner", String(200)),
        Column("lease_expires_at", UTCDateTime),
        CheckConstraint(one_of("status", V1_CAMPAIGN_STATUSES), name="campaigns_status"),
        CheckConstraint(one_of("kind", CAMPAIGN_KINDS), name="campaigns_kind"),
    )
    Table(
        "deliveries",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_reply", Text),
        Column("next_attempt_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime),
        UniqueConstraint("campaign_id", "subscriber_id", name="deliveries_campaign_subscriber"),
        CheckConstraint(one_of("status", V1_DELIVERY_STATUSES), name="deliveries_status"),
        Index("deliveries_by_status", "campaign_id", "status", "id"),
        Index("deliveries_by_subscriber", "subscriber_id"),
    )


def upgrade(conn: Connection) -> None:
    metadata = MetaData()
    define_v1(metadata)
    metadata.create_all(conn)

"""Migration 0007: bounces and complaints that come back after the send."""

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
    text,
)

from pipeline.ledger.columns import UTCDateTime, one_of

BOUNCE_KINDS_0007 = ("permanent", "temporary", "complaint", "failed")


def define_bounces_0007(metadata: MetaData) -> None:
    """What migration 0007 adds (frozen): one row per bounce or complaint that came back
    later, and on each subscriber why (and when) their status last changed to bounced
    or complained. The subscribers table must already be in ``metadata``."""
    subscribers = metadata.tables["subscribers"]
    subscribers.append_column(Column("status_reason", Text))
    subscribers.append_column(Column("status_changed_at", UTCDateTime))
    Table(
        "bounce_events",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        # The report a row came from (SHA-256 of its bytes, and the part): a mailbox read
        # twice records nothing twice.
        Column("report_key", String(80), nullable=False, unique=True),
        Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="SET NULL")),
        Column("kind", String(16), nullable=False),
        Column("status", String(16)),  # the RFC 3463 code (5.1.1), or the feedback type (abuse)
        Column("reason", Text, nullable=False),
        Column("reported_at", UTCDateTime, nullable=False),  # the report's own date
        Column("recorded_at", UTCDateTime, nullable=False),
        CheckConstraint(one_of("kind", BOUNCE_KINDS_0007), name="bounce_events_kind"),
        Index("bounce_events_by_subscriber", "subscriber_id", "kind", "reported_at"),
        Index("bounce_events_by_campaign", "campaign_id", "kind"),
    )


def upgrade(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE subscribers ADD COLUMN status_reason TEXT"))
    # The type UTCDateTime stands for on each database (SQLite keeps it as text).
    moment = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    conn.execute(text(f"ALTER TABLE subscribers ADD COLUMN status_changed_at {moment}"))
    metadata = MetaData()
    Table("subscribers", metadata, Column("id", Integer, primary_key=True))  # referred to, not created
    Table("campaigns", metadata, Column("id", Integer, primary_key=True))
    define_bounces_0007(metadata)
    metadata.tables["bounce_events"].create(conn)

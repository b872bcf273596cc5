"""Migration 0003: paused campaigns, held deliveries, and the crashes a delivery was in flight for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from pipeline.ledger.columns import UTCDateTime, one_of

# The columns of campaigns and deliveries before 0003 (what it copies).
_V1_CAMPAIGN_COLUMNS = "id, key, kind, subject, content, status, created_at, finished_at, lease_owner, lease_expires_at"
_V1_DELIVERY_COLUMNS = (
    "id, campaign_id, subscriber_id, status, attempts, last_reply, next_attempt_at, updated_at, sent_at"
)


def define_delivery_tables_0003(metadata: MetaData, suffix: str = "") -> None:
    """campaigns and deliveries as migration 0003 leaves them. Frozen: used by 0003 and,
    until a later migration changes these tables, by the current schema."""
    Table(
        f"campaigns{suffix}",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(200), nullable=False, unique=True),
        Column("kind", String(16), nullable=False),
        Column("subject", Text, nullable=False),
        Column("content", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime),
        Column("lease_owner", String(200)),
        Column("lease_expires_at", UTCDateTime),
        # Why the campaign is paused, in words for the person who resumes it.
        Column("pause_reason", Text),
        CheckConstraint(one_of("status", ("sending", "paused", "finished")), name="campaigns_status"),
        CheckConstraint(one_of("kind", ("post", "digest")), name="campaigns_kind"),
    )
    Table(
        f"deliveries{suffix}",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("campaign_id", Integer, ForeignKey(f"campaigns{suffix}.id", ondelete="CASCADE"), nullable=False),
        Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_reply", Text),
        Column("next_attempt_at", UTCDateTime),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime),
        # How many times a sender died while this delivery was in flight (two: held).
        Column("interrupted", Integer, nullable=False, server_default=text("0")),
        UniqueConstraint("campaign_id", "subscriber_id", name="deliveries_campaign_subscriber"),
        CheckConstraint(
            one_of("status", ("pending", "sending", "sent", "failed", "bounced", "skipped", "held")),
            name="deliveries_status",
        ),
    )


def upgrade(conn: Connection) -> None:
    """Campaigns can be 'paused' (with a reason), deliveries 'held', and a delivery counts
    the crashes it was in flight for.

    PostgreSQL alters the constraints in place. SQLite cannot alter a CHECK constraint:
    both tables are rebuilt (create new, copy, drop, rename), deliveries too because it
    refers to campaigns with ON DELETE CASCADE: dropping the old campaigns table while
    foreign keys are on (they cannot be turned off inside a transaction) would delete
    every delivery. The new deliveries table refers to campaigns_new, and SQLite's
    rename carries that reference over to the final name.
    """
    from sqlalchemy import inspect

    if conn.dialect.name != "sqlite":
        for table, statuses in (
            ("campaigns", ("sending", "paused", "finished")),
            ("deliveries", ("pending", "sending", "sent", "failed", "bounced", "skipped", "held")),
        ):
            conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {table}_status"))
            conn.execute(
                text(f"ALTER TABLE {table} ADD CONSTRAINT {table}_status CHECK ({one_of('status', statuses)})")
            )
        conn.execute(text("ALTER TABLE campaigns ADD COLUMN pause_reason TEXT"))
        conn.execute(text("ALTER TABLE deliveries ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0"))
        return
    inspector: Any = inspect(conn)
    for table, known in (("campaigns", _V1_CAMPAIGN_COLUMNS), ("deliveries", _V1_DELIVERY_COLUMNS)):
        extra = {c["name"] for c in inspector.get_columns(table)} - set(known.split(", "))
        if extra:  # a column this copy would lose: refuse rather than drop data
            raise RuntimeError(f"migration 0003 does not know the columns {sorted(extra)} of {table}")
    for other in inspector.get_table_names():
        if other != "deliveries" and any(
            fk["referred_table"] == "campaigns" for fk in inspector.get_foreign_keys(other)
        ):
            raise RuntimeError(f"migration 0003 would empty {other}: it refers to campaigns")
    new = MetaData()
    Table("subscribers", new, Column("id", Integer, primary_key=True))  # referred to, not created
    define_delivery_tables_0003(new, suffix="_new")
    new.tables["campaigns_new"].create(conn)
    new.tables["deliveries_new"].create(conn)
    conn.execute(
        text(f"INSERT INTO campaigns_new ({_V1_CAMPAIGN_COLUMNS}) SELECT {_V1_CAMPAIGN_COLUMNS} FROM campaigns")
    )
    conn.execute(
        text(f"INSERT INTO deliveries_new ({_V1_DELIVERY_COLUMNS}) SELECT {_V1_DELIVERY_COLUMNS} FROM deliveries")
    )
    conn.execute(text("DROP TABLE deliveries"))  # nothing refers to it: no cascade
    conn.execute(text("DROP TABLE campaigns"))  # only deliveries referred to it, and it is gone
    conn.execute(text("ALTER TABLE campaigns_new RENAME TO campaigns"))
    conn.execute(text("ALTER TABLE deliveries_new RENAME TO deliveries"))
    conn.execute(text("CREATE INDEX deliveries_by_status ON deliveries (campaign_id, status, id)"))
    conn.execute(text("CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id)"))
    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if problems:
        raise RuntimeError(f"migration 0003 broke foreign keys: {problems[:5]}")

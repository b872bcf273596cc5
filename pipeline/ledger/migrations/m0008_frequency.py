"""Migration 0008: each subscriber's frequency (every article, or the weekly digest)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Connection, ForeignKey, Index, Integer, MetaData, String, Table, text

from pipeline.ledger.columns import UTCDateTime, one_of

FREQUENCIES_0008 = ("each", "digest")
AUDIENCES_0008 = ("all", "each", "digest")


def define_frequency_0008(metadata: MetaData) -> None:
    """What migration 0008 adds (frozen): each subscriber's frequency (an e-mail per
    article, or the weekly digest only), the log of its changes, which group a campaign
    went to, and the articles owed to a subscriber's next digest. The subscribers and
    campaigns tables must already be in ``metadata``."""
    subscribers = metadata.tables["subscribers"]
    subscribers.append_column(Column("frequency", String(16), nullable=False, server_default=text("'each'")))
    subscribers.append_constraint(CheckConstraint(one_of("frequency", FREQUENCIES_0008), name="subscribers_frequency"))
    # NULL: made before 0008, to every active subscriber (as 'all').
    metadata.tables["campaigns"].append_column(Column("audience", String(16)))
    Table(
        "frequency_changes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("old", String(16), nullable=False),
        Column("new", String(16), nullable=False),
        Column("via", String(32), nullable=False),  # manage page, cli, desk, import, subscribe form
        Index("frequency_changes_by_subscriber", "subscriber_id", "id"),
    )
    Table(
        "digest_items",
        metadata,
        # An article released while the subscriber was on the digest: owed to their next
        # digest (digest_campaign_id NULL) until one carries it, whatever they chose since.
        Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
        Column("slug", String(200), primary_key=True),
        Column("post_campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        Column("owed_since", UTCDateTime, nullable=False),
        Column("digest_campaign_id", Integer, ForeignKey("campaigns.id", ondelete="SET NULL")),
        Index("digest_items_owed", "digest_campaign_id", "subscriber_id"),
    )


def upgrade(conn: Connection) -> None:
    """Every existing subscriber gets 'each': what they had (an e-mail per article)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE subscribers ADD COLUMN frequency VARCHAR(16) NOT NULL DEFAULT 'each'"))
        conn.execute(
            text(
                "ALTER TABLE subscribers ADD CONSTRAINT subscribers_frequency "
                f"CHECK ({one_of('frequency', FREQUENCIES_0008)})"
            )
        )
    else:  # SQLite adds a column with its CHECK constraint in one step (a NOT NULL one needs the default)
        conn.execute(
            text(
                "ALTER TABLE subscribers ADD COLUMN frequency VARCHAR(16) NOT NULL DEFAULT 'each' "
                f"CONSTRAINT subscribers_frequency CHECK ({one_of('frequency', FREQUENCIES_0008)})"
            )
        )
    conn.execute(text("ALTER TABLE campaigns ADD COLUMN audience VARCHAR(16)"))
    metadata = MetaData()
    Table("subscribers", metadata, Column("id", Integer, primary_key=True))  # referred to, not created
    Table("campaigns", metadata, Column("id", Integer, primary_key=True))
    define_frequency_0008(metadata)
    metadata.tables["frequency_changes"].create(conn)
    metadata.tables["digest_items"].create(conn)

"""Migration 0006: direct posting to social platforms."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pipeline.ledger.columns import UTCDateTime, one_of

SOCIAL_POST_STATUSES = ("pending", "posting", "posted", "failed")


def define_social_posts(metadata: MetaData) -> None:
    """Direct posting (migration 0006): one row per post and platform, and each
    platform's pause after a refused credential. Frozen."""
    Table(
        "social_posts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("slug", String(200), nullable=False),
        Column("platform", String(32), nullable=False),
        # The key the server knows the post by before it answers: Mastodon's
        # Idempotency-Key, Bluesky's record key. Derived from the post and platform.
        Column("remote_key", String(200), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime),  # set before each call: "posting" since then
        Column("posted_at", UTCDateTime),
        Column("remote_id", String(500)),
        Column("remote_url", String(1000)),
        Column("last_error", Text),
        UniqueConstraint("slug", "platform", name="social_posts_slug_platform"),
        CheckConstraint(one_of("status", SOCIAL_POST_STATUSES), name="social_posts_status"),
        Index("social_posts_by_status", "status", "next_attempt_at"),
    )
    Table(
        "social_pauses",
        metadata,
        Column("platform", String(32), primary_key=True),
        Column("since", UTCDateTime, nullable=False),
        Column("reason", Text, nullable=False),
        # SHA-256 of the credential that was refused: a new one lifts the pause. Never the secret.
        Column("credential_sha256", String(64), nullable=False),
    )


def upgrade(conn: Connection) -> None:
    metadata = MetaData()
    define_social_posts(metadata)
    metadata.create_all(conn)

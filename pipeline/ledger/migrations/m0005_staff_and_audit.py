"""Migration 0005: staff accounts, their sessions and the audit log."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Connection, ForeignKey, Index, Integer, MetaData, String, Table, Text

from pipeline.ledger.columns import STAFF_ROLES, UTCDateTime, one_of


def define_staff_and_audit(metadata: MetaData) -> None:
    """Staff accounts, their sessions and the audit log (migration 0005). Frozen."""
    Table(
        "staff",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("email", String(320), nullable=False),
        Column("email_key", String(320), nullable=False, unique=True),
        Column("name", String(200), nullable=False),
        Column("role", String(16), nullable=False),
        Column("password_hash", Text, nullable=False),  # Argon2id, with its parameters and salt
        Column("created_at", UTCDateTime, nullable=False),
        Column("password_changed_at", UTCDateTime, nullable=False),
        CheckConstraint(one_of("role", STAFF_ROLES), name="staff_role"),
    )
    Table(
        "staff_sessions",
        metadata,
        # The SHA-256 of the random session id the signed cookie carries: a copy of the
        # database holds no session anyone could use.
        Column("id_hash", String(64), primary_key=True),
        Column("staff_id", Integer, ForeignKey("staff.id", ondelete="CASCADE"), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        Index("staff_sessions_by_staff", "staff_id"),
    )
    Table(
        "audit_log",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        # Who, as they were named then: the row outlives the account.
        Column("actor", String(200), nullable=False),
        Column("actor_email", String(320), nullable=False),
        Column("action", String(32), nullable=False),
        Column("slug", String(200)),
        Column("content_hash", String(64)),
        Column("detail", Text, nullable=False),
        Index("audit_log_by_slug", "slug", "id"),
    )


def upgrade(conn: Connection) -> None:
    metadata = MetaData()
    define_staff_and_audit(metadata)
    metadata.create_all(conn)

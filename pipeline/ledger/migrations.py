"""How a database gets to the current schema: named steps, each applied once in its own
transaction and recorded in ``schema_migrations`` (the approach of sqlite-utils'
migrations). A migration never changes once released: a later change to the tables
is a new migration appended to ``MIGRATIONS``, and tests/test_store.py fails if the
tables in schema.py and what the migrations make drift apart.

The ``_define_*`` functions are frozen table definitions: each migration creates
exactly what it defined when it was written; schema.py builds today's tables from
them. Only SQLAlchemy constructs (and portable SQL) are used, so the same steps run
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from pipeline.ledger.columns import (
    CAMPAIGN_KINDS,
    STAFF_ROLES,
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


def _m0001_initial(conn: Connection) -> None:
    metadata = MetaData()
    define_v1(metadata)
    metadata.create_all(conn)


def define_release_records(metadata: MetaData) -> None:
    """The release path's own records (migration 0002). Frozen, like ``_define_v1``."""
    Table(
        "releases",
        metadata,
        # One row per released post: when, as which bytes, and whether it was backfill.
        Column("slug", String(200), primary_key=True),
        Column("title", Text, nullable=False),
        Column("post_date", UTCDateTime, nullable=False),
        Column("content_hash", String(64), nullable=False),
        Column("released_at", UTCDateTime, nullable=False),
        Column("backfill", Text),  # why it went to the feed only; NULL for a full release
        Column("skipped", String(64), nullable=False),  # channels left out (backfill), comma-separated
        Column("recorded_at", UTCDateTime, nullable=False),
    )
    Table(
        "holds",
        metadata,
        # A due post kept back by the approval gate, until it is approved.
        Column("slug", String(200), primary_key=True),
        Column("since", UTCDateTime, nullable=False),
        Column("post_date", UTCDateTime, nullable=False),
        Column("reason", Text, nullable=False),
    )
    Table(
        "approvals",
        metadata,
        # The latest approval of a post: it covers exactly the file whose hash it names.
        Column("slug", String(200), primary_key=True),
        Column("approved_by", String(200), nullable=False),
        Column("approved_at", UTCDateTime, nullable=False),
        Column("content_hash", String(64), nullable=False),
    )


def _m0002_release_records(conn: Connection) -> None:
    """Release, hold and approval records move from JSON blobs in ``meta`` (keys
    ``released:SLUG``, ``held:SLUG``, ``approval:SLUG``) into tables; an e-mail
    publication gains the campaign that carries it (NULL: the newsletter is still owed)."""
    metadata = MetaData()
    define_release_records(metadata)
    metadata.create_all(conn)
    conn.execute(text("ALTER TABLE publications ADD COLUMN campaign_id INTEGER"))
    releases, holds, approvals = (metadata.tables[name] for name in ("releases", "holds", "approvals"))
    old_meta = Table("meta", MetaData(), Column("key", String(100)), Column("value", Text))
    hashes = {
        row.slug: row.content_hash
        for row in conn.execute(text("SELECT slug, content_hash FROM publications ORDER BY id"))
    }
    moved = []
    for key, value in conn.execute(select(old_meta.c.key, old_meta.c.value)).all():
        kind = key.partition(":")[0]
        if kind not in ("released", "held", "approval") or not value.startswith("{"):
            continue
        data = json.loads(value)
        slug = data["slug"]
        if kind == "released":
            released_at = datetime.fromisoformat(data["released_at"])
            conn.execute(
                insert(releases).values(
                    slug=slug,
                    title=data["title"],
                    post_date=datetime.fromisoformat(data["date"]),
                    content_hash=hashes.get(slug, ""),
                    released_at=released_at,
                    backfill=data.get("backfill"),
                    skipped=",".join(data.get("skipped", [])),
                    recorded_at=released_at,
                )
            )
            if data.get("campaign_id") is not None:
                conn.execute(
                    text("UPDATE publications SET campaign_id = :c WHERE slug = :s AND channel = 'email'"),
                    {"c": data["campaign_id"], "s": slug},
                )
        elif kind == "held":
            conn.execute(
                insert(holds).values(
                    slug=slug,
                    since=datetime.fromisoformat(data["since"]),
                    post_date=datetime.fromisoformat(data["date"]),
                    reason=data["reason"],
                )
            )
        else:
            conn.execute(
                insert(approvals).values(
                    slug=slug,
                    approved_by=data["by"],
                    approved_at=datetime.fromisoformat(data["at"]),
                    content_hash=data["content_hash"],
                )
            )
        moved.append(key)
    for key in moved:
        conn.execute(delete(old_meta).where(old_meta.c.key == key))


def _m0004_scheduler_lock(conn: Connection) -> None:
    """One scheduler per database: a lock row naming its holder, renewed by a heartbeat."""
    metadata = MetaData()
    Table(
        "scheduler_lock",
        metadata,
        Column("name", String(32), primary_key=True),
        Column("holder", String(200)),  # host:pid:nonce; NULL when free
        Column("host", String(255)),
        Column("pid", Integer),
        Column("acquired_at", UTCDateTime),
        Column("heartbeat_at", UTCDateTime),
        Column("expires_at", UTCDateTime),
    )
    metadata.create_all(conn)


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


def _m0003_delivery_safety(conn: Connection) -> None:
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


def _m0005_staff_and_audit(conn: Connection) -> None:
    metadata = MetaData()
    define_staff_and_audit(metadata)
    metadata.create_all(conn)


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


def _m0006_social_posts(conn: Connection) -> None:
    metadata = MetaData()
    define_social_posts(metadata)
    metadata.create_all(conn)


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


def _m0007_bounces(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE subscribers ADD COLUMN status_reason TEXT"))
    # The type UTCDateTime stands for on each database (SQLite keeps it as text).
    moment = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    conn.execute(text(f"ALTER TABLE subscribers ADD COLUMN status_changed_at {moment}"))
    metadata = MetaData()
    Table("subscribers", metadata, Column("id", Integer, primary_key=True))  # referred to, not created
    Table("campaigns", metadata, Column("id", Integer, primary_key=True))
    define_bounces_0007(metadata)
    metadata.tables["bounce_events"].create(conn)


Migration = tuple[str, Callable[[Connection], None]]

# Append only. Never edit or reorder a released migration.
MIGRATIONS: list[Migration] = [
    ("0001_initial", _m0001_initial),
    ("0002_release_records", _m0002_release_records),
    ("0003_delivery_safety", _m0003_delivery_safety),
    ("0004_scheduler_lock", _m0004_scheduler_lock),
    ("0005_staff_and_audit", _m0005_staff_and_audit),
    ("0006_social_posts", _m0006_social_posts),
    ("0007_bounces", _m0007_bounces),
]

_migrations_metadata = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _migrations_metadata,
    Column("name", String(200), primary_key=True),
    Column("applied_at", UTCDateTime, nullable=False),
)


def applied_migrations(conn: Connection) -> set[str]:
    return set(conn.scalars(select(schema_migrations.c.name)))


def migrate(engine: Engine, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction.

    Returns the names applied. Safe to run from several processes at once: each
    migration re-checks, under the database's write lock, that it is still needed.
    A ledger that is up to date costs one read, and no write lock, to find out.
    """
    if _up_to_date(engine):
        return []
    with engine.begin() as conn:
        _lock_for_migration(conn)
        _migrations_metadata.create_all(conn)  # a no-op once present
    applied: list[str] = []
    for name, step in MIGRATIONS:
        with engine.begin() as conn:
            _lock_for_migration(conn)
            if name in applied_migrations(conn):
                continue
            step(conn)
            conn.execute(insert(schema_migrations).values(name=name, applied_at=now()))
            applied.append(name)
    return applied


def _up_to_date(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execution_options(write=False)  # SQLite: a plain BEGIN, no write lock (engine.py)
            with conn.begin():
                return {name for name, _ in MIGRATIONS} <= applied_migrations(conn)
    except DBAPIError:  # no schema_migrations table yet: a new ledger
        return False


# Any fixed number: PostgreSQL's advisory locks are per database, and this is the only one we take.
_MIGRATION_LOCK_KEY = 0x4A50_6C65_6467_6572  # "JPledger"


def _lock_for_migration(conn: Connection) -> None:
    # SQLite: the write transaction is already exclusive (see store.py's BEGIN IMMEDIATE).
    # PostgreSQL: a lock until the transaction ends. Not a table lock: the first lock is
    # taken before schema_migrations exists, and two processes creating it at once
    # collide ("duplicate key value violates unique constraint pg_type_typname_nsp_index").
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})


def table_columns(conn: Connection) -> dict[str, list[str]]:
    """What the database actually has, for the drift check in the tests."""
    from sqlalchemy import inspect

    inspector: Any = inspect(conn)
    return {name: [c["name"] for c in inspector.get_columns(name)] for name in inspector.get_table_names()}

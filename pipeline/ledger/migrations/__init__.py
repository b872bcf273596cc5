"""How a database gets to the current schema: named steps, each applied once in its own
transaction and recorded in ``schema_migrations`` (the approach of sqlite-utils'
migrations). A migration never changes once released: a later change to the tables
is a new migration, a module of its own here named after its revision, appended to
``MIGRATIONS``, and tests/test_store.py fails if the tables in schema.py and what the
migrations make drift apart.

The ``define_*`` functions are frozen table definitions: each migration creates
exactly what it defined when it was written; schema.py builds today's tables from
them. Only SQLAlchemy constructs (and portable SQL) are used, so the same steps run
on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import DBAPIError

from pipeline.ledger.columns import UTCDateTime
from pipeline.ledger.migrations import (
    m0001_initial,
    m0002_release_records,
    m0003_delivery_safety,
    m0004_scheduler_lock,
    m0005_staff_and_audit,
    m0006_social_posts,
    m0007_bounces,
    m0008_frequency,
)
from pipeline.ledger.migrations.m0001_initial import define_v1
from pipeline.ledger.migrations.m0002_release_records import define_release_records
from pipeline.ledger.migrations.m0003_delivery_safety import define_delivery_tables_0003
from pipeline.ledger.migrations.m0005_staff_and_audit import define_staff_and_audit
from pipeline.ledger.migrations.m0006_social_posts import SOCIAL_POST_STATUSES, define_social_posts
from pipeline.ledger.migrations.m0007_bounces import BOUNCE_KINDS_0007, define_bounces_0007
from pipeline.ledger.migrations.m0008_frequency import AUDIENCES_0008, FREQUENCIES_0008, define_frequency_0008

# What this package offers: the runner below, and each migration's frozen definitions.
__all__ = [
    "AUDIENCES_0008",
    "BOUNCE_KINDS_0007",
    "FREQUENCIES_0008",
    "MIGRATIONS",
    "SOCIAL_POST_STATUSES",
    "Migration",
    "applied_migrations",
    "define_bounces_0007",
    "define_delivery_tables_0003",
    "define_frequency_0008",
    "define_release_records",
    "define_social_posts",
    "define_staff_and_audit",
    "define_v1",
    "migrate",
    "schema_migrations",
    "table_columns",
]


Migration = tuple[str, Callable[[Connection], None]]

# Append only. Never edit or reorder a released migration.
MIGRATIONS: list[Migration] = [
    ("0001_initial", m0001_initial.upgrade),
    ("0002_release_records", m0002_release_records.upgrade),
    ("0003_delivery_safety", m0003_delivery_safety.upgrade),
    ("0004_scheduler_lock", m0004_scheduler_lock.upgrade),
    ("0005_staff_and_audit", m0005_staff_and_audit.upgrade),
    ("0006_social_posts", m0006_social_posts.upgrade),
    ("0007_bounces", m0007_bounces.upgrade),
    ("0008_frequency", m0008_frequency.upgrade),
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

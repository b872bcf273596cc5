"""Migration 0004: one scheduler per database."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table

from pipeline.ledger.columns import UTCDateTime


def upgrade(conn: Connection) -> None:
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

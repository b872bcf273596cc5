"""Migration 0002: release, hold and approval records get tables of their own."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Column, Connection, MetaData, String, Table, Text, delete, insert, select, text

from pipeline.ledger.columns import UTCDateTime


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


def upgrade(conn: Connection) -> None:
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

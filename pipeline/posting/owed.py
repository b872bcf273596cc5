"""What releases owe the platforms with direct posting on: one row per post and platform.

Light on purpose (no client library is imported): the release path calls it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.posting.keys import bluesky_rkey, idempotency_key


def remote_key(platform: str, slug: str, post_date: datetime) -> str:
    return bluesky_rkey(slug, post_date) if platform == "bluesky" else idempotency_key(slug, platform)


def owe_posts(settings: Settings, store: Store, slug: str, post_date: datetime, now: datetime) -> list[str]:
    """Owe ``slug`` to every platform with direct posting on (called once it is released
    with the social channel); the platforms newly owed."""
    keys = {p: remote_key(p, slug, post_date) for p in settings.social.post.platforms()}
    return store.owe_social_posts(slug, keys, now=now) if keys else []


def owe_recent(settings: Settings, store: Store, now: datetime) -> list[tuple[str, str]]:
    """Owe what recent releases with the social channel are owed but do not have (the
    process died between recording the release and owing its posts). Only releases of
    the last ``backfill_hours``: turning direct posting on never posts the archive."""
    window = now - timedelta(hours=settings.scheduler.backfill_hours)
    owed = []
    for record in store.list_releases().values():
        if "social" in record.channels and record.released_at >= window:
            owed += [(record.slug, p) for p in owe_posts(settings, store, record.slug, record.post_date, now)]
    return owed

"""Keys the server knows a post by before it answers, derived from the post and platform,
so that a retry after a crash finds the first attempt instead of making a second post."""

from __future__ import annotations

import hashlib
from datetime import datetime

_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, as atproto's TIDs


def idempotency_key(slug: str, platform: str) -> str:
    """Mastodon's ``Idempotency-Key``: the same post on the same account is one status."""
    return "jp-" + hashlib.sha256(f"{platform}\0{slug}".encode()).hexdigest()[:40]


def bluesky_rkey(slug: str, post_date: datetime) -> str:
    """A record key for ``app.bsky.feed.post``, whose lexicon asks for a TID: 64 bits,
    the top one 0, then 53 bits of microseconds since 1970 (the post's date) and 10
    bits of "clock id" (from the slug), written in 13 base32-sortable characters. The
    same post always gets the same key, and createRecord refuses a second record under it."""
    micros = int(post_date.timestamp()) * 1_000_000
    clock = int.from_bytes(hashlib.sha256(slug.encode()).digest()[:2], "big") % 1024
    value = ((micros & ((1 << 53) - 1)) << 10) | clock
    return "".join(_TID_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(13)))

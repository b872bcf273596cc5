"""Direct social posts: one row per post and platform, recorded before and after each call.

``pending`` -> ``posting`` (the call may have reached the server: ``started_at`` is set
before it) -> ``posted`` (with the server's id) or back to ``pending`` (a retryable
failure, with ``next_attempt_at``) or ``failed`` (the server refused the post itself).
A row found in ``posting`` by a later pass means the process died around the call: it
is reconciled by asking the server, never by posting blindly.

A platform whose credential was refused (401) is paused in ``social_pauses`` with the
SHA-256 of that credential; a different credential lifts the pause.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.engine import LedgerPart
from pipeline.ledger.schema import social_pauses, social_posts


@dataclass(frozen=True)
class SocialPost:
    id: int
    slug: str
    platform: str
    remote_key: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    started_at: datetime | None
    posted_at: datetime | None
    remote_id: str | None
    remote_url: str | None
    last_error: str | None


@dataclass(frozen=True)
class SocialPause:
    platform: str
    since: datetime
    reason: str
    credential_sha256: str


def _row(row: Row[Any]) -> SocialPost:
    return SocialPost(**{name: getattr(row, name) for name in SocialPost.__dataclass_fields__})


class SocialRows(LedgerPart):
    """Direct social posts and platform pauses (mixed into ``Store``)."""

    def owe_social_posts(self, slug: str, keys: dict[str, str], *, now: datetime) -> list[str]:
        """A pending row per platform in ``keys`` (platform -> remote key) that has none
        yet. Returns the platforms newly owed; an existing row is never touched."""
        added = []
        for platform, key in keys.items():
            try:
                with self._write() as conn:
                    found = conn.scalar(
                        select(social_posts.c.id).where(
                            social_posts.c.slug == slug, social_posts.c.platform == platform
                        )
                    )
                    if found is not None:
                        continue
                    conn.execute(
                        insert(social_posts).values(
                            slug=slug,
                            platform=platform,
                            remote_key=key,
                            status="pending",
                            attempts=0,
                            created_at=now,
                            next_attempt_at=now,
                        )
                    )
                    added.append(platform)
            except IntegrityError:  # another process owed it meanwhile
                continue
        return added

    def social_posts_due(self, now: datetime, platforms: Iterable[str]) -> list[SocialPost]:
        """Rows to work on now: pending and due, or left ``posting`` by a process that died."""
        query = (
            select(social_posts)
            .where(social_posts.c.platform.in_(list(platforms)))
            .where(
                ((social_posts.c.status == "pending") & (social_posts.c.next_attempt_at <= now))
                | (social_posts.c.status == "posting")
            )
            .order_by(social_posts.c.id)
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query)]

    def social_posts_for(self, slug: str | None = None) -> list[SocialPost]:
        query = select(social_posts).order_by(social_posts.c.id)
        if slug is not None:
            query = query.where(social_posts.c.slug == slug)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query)]

    def get_social_post(self, slug: str, platform: str) -> SocialPost | None:
        with self._read() as conn:
            row = conn.execute(
                select(social_posts).where(social_posts.c.slug == slug, social_posts.c.platform == platform)
            ).first()
        return _row(row) if row else None

    def start_social_post(self, row_id: int, *, now: datetime) -> bool:
        """Record, before the call, that it is being made. False if the row is no longer
        pending (posted or taken meanwhile)."""
        with self._write() as conn:
            result = conn.execute(
                update(social_posts)
                .where(social_posts.c.id == row_id, social_posts.c.status.in_(("pending", "posting")))
                .values(status="posting", started_at=now, attempts=social_posts.c.attempts + 1)
            )
            return result.rowcount == 1

    def finish_social_post(self, row_id: int, *, remote_id: str, remote_url: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                update(social_posts)
                .where(social_posts.c.id == row_id)
                .values(status="posted", posted_at=now, remote_id=remote_id, remote_url=remote_url, last_error=None)
            )

    def retry_social_post(self, row_id: int, *, error: str, at: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                update(social_posts)
                .where(social_posts.c.id == row_id, social_posts.c.status != "posted")
                .values(status="pending", next_attempt_at=at, last_error=error)
            )

    def fail_social_post(self, row_id: int, *, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(social_posts)
                .where(social_posts.c.id == row_id, social_posts.c.status != "posted")
                .values(status="failed", last_error=error)
            )

    # --- pauses ---------------------------------------------------------------------------

    def pause_platform(self, platform: str, *, reason: str, credential_sha256: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(delete(social_pauses).where(social_pauses.c.platform == platform))
            conn.execute(
                insert(social_pauses).values(
                    platform=platform, since=now, reason=reason, credential_sha256=credential_sha256
                )
            )

    def lift_pause(self, platform: str) -> None:
        with self._write() as conn:
            conn.execute(delete(social_pauses).where(social_pauses.c.platform == platform))

    def platform_pauses(self) -> dict[str, SocialPause]:
        with self._read() as conn:
            return {
                r.platform: SocialPause(r.platform, r.since, r.reason, r.credential_sha256)
                for r in conn.execute(select(social_pauses))
            }

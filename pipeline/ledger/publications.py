"""Publications: which post went out on which channel, when, as which bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.engine import LedgerPart, utcnow
from pipeline.ledger.schema import publications


@dataclass(frozen=True)
class Publication:
    slug: str
    channel: str
    released_at: datetime
    content_hash: str
    recorded_at: datetime


class PublicationRows(LedgerPart):
    """One row per post and channel (mixed into ``Store``)."""

    def record_publication(
        self, slug: str, channel: str, released_at: datetime, content_hash: str, *, now: datetime | None = None
    ) -> bool:
        """Record that ``slug`` went out on ``channel``. True if newly recorded, False if
        it already was (the first record stands: a post is released once per channel)."""
        try:
            with self._write() as conn:
                if conn.scalar(
                    select(publications.c.id).where(publications.c.slug == slug, publications.c.channel == channel)
                ):
                    return False
                conn.execute(
                    insert(publications).values(
                        slug=slug,
                        channel=channel,
                        released_at=released_at,
                        content_hash=content_hash,
                        recorded_at=now or utcnow(),
                    )
                )
                return True
        except IntegrityError:  # another process recorded it between our check and insert
            return False

    def is_published(self, slug: str, channel: str) -> bool:
        return self.get_publication(slug, channel) is not None

    def get_publication(self, slug: str, channel: str) -> Publication | None:
        with self._read() as conn:
            row = conn.execute(
                select(publications).where(publications.c.slug == slug, publications.c.channel == channel)
            ).first()
        return self._publication(row) if row else None

    def list_publications(self, channel: str | None = None) -> list[Publication]:
        query = select(publications).order_by(publications.c.released_at, publications.c.slug)
        if channel is not None:
            query = query.where(publications.c.channel == channel)
        with self._read() as conn:
            return [self._publication(r) for r in conn.execute(query)]

    @staticmethod
    def _publication(row: Row[Any]) -> Publication:
        return Publication(
            slug=row.slug,
            channel=row.channel,
            released_at=row.released_at,
            content_hash=row.content_hash,
            recorded_at=row.recorded_at,
        )

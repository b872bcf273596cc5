"""The release path's records: what was released, held back and approved, and when
the pipeline first ran. One row per post in ``releases``, ``holds`` and ``approvals``;
one per post and channel in ``publications`` (an e-mail publication names the
campaign that carries it; none yet means the newsletter is still owed).

``ReleaseRecords`` is a part of ``Store``: every method is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.engine import LedgerPart
from pipeline.ledger.schema import approvals, holds, meta, publications, releases

FIRST_RUN_KEY = "first_run_at"
LAST_DIGEST_KEY = "last_digest_at"


@dataclass(frozen=True)
class ReleaseRecord:
    slug: str
    title: str
    post_date: datetime
    content_hash: str
    released_at: datetime
    backfill: str | None  # why it went to the feed only
    skipped: tuple[str, ...]  # channels left out because of the backfill rule
    channels: tuple[str, ...]  # channels it went out on (feed, email, social)


@dataclass(frozen=True)
class Hold:
    slug: str
    since: datetime
    post_date: datetime
    reason: str


@dataclass(frozen=True)
class Approval:
    slug: str
    by: str
    at: datetime
    content_hash: str

    def covers(self, content_hash: str) -> bool:
        """Whether the approval is of exactly these bytes (any edit voids it)."""
        return self.content_hash == content_hash


@dataclass(frozen=True)
class Mailing:
    """An e-mail publication: the post, when it was released, and its campaign (None: still owed)."""

    slug: str
    released_at: datetime
    content_hash: str
    campaign_id: int | None


def _approval(row: Row[Any]) -> Approval:
    return Approval(slug=row.slug, by=row.approved_by, at=row.approved_at, content_hash=row.content_hash)


class ReleaseRecords(LedgerPart):
    """Release, hold and approval records (mixed into ``Store``)."""

    # --- when the pipeline first ran --------------------------------------------------

    def recorded_first_run(self) -> datetime | None:
        """When the pipeline first ran, or None when it never has."""
        with self._read() as conn:
            text: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == FIRST_RUN_KEY))
        return datetime.fromisoformat(text) if text else None

    def first_run_at(self, now: datetime) -> datetime:
        """When the pipeline first ran, recorded as ``now`` on first use: posts dated
        before it are backfill."""
        with self._write() as conn:
            text: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == FIRST_RUN_KEY))
            if text is None:
                text = now.astimezone(UTC).isoformat()
                conn.execute(insert(meta).values(key=FIRST_RUN_KEY, value=text))
        return datetime.fromisoformat(text)

    # --- releases -----------------------------------------------------------------------

    def get_release(self, slug: str) -> ReleaseRecord | None:
        found = self._releases(releases.c.slug == slug)
        return found[0] if found else None

    def list_releases(self) -> dict[str, ReleaseRecord]:
        """Every release, keyed by slug, oldest release first."""
        return {r.slug: r for r in self._releases(None)}

    def released_slugs(self) -> frozenset[str]:
        """The slug of every release: what the scheduler's rescan asks (one column, no records)."""
        with self._read() as conn:
            return frozenset(conn.execute(select(releases.c.slug)).scalars())

    def _releases(self, condition: Any) -> list[ReleaseRecord]:
        query = select(releases).order_by(releases.c.released_at, releases.c.slug)
        channels_query = select(publications.c.slug, publications.c.channel).order_by(publications.c.id)
        if condition is not None:
            query = query.where(condition)
            channels_query = channels_query.where(publications.c.slug.in_(select(releases.c.slug).where(condition)))
        with self._read() as conn:
            rows = conn.execute(query).all()
            channels: dict[str, list[str]] = {}
            for slug, channel in conn.execute(channels_query):
                channels.setdefault(slug, []).append(channel)
        return [
            ReleaseRecord(
                slug=row.slug,
                title=row.title,
                post_date=row.post_date,
                content_hash=row.content_hash,
                released_at=row.released_at,
                backfill=row.backfill,
                skipped=tuple(c for c in row.skipped.split(",") if c),
                channels=tuple(channels.get(row.slug, ())),
            )
            for row in rows
        ]

    def record_release(self, record: ReleaseRecord, *, now: datetime) -> bool:
        """Record a release and a publication per channel in ``record.channels``, in one
        transaction. An e-mail publication starts with no campaign: the newsletter is owed
        until ``attach_campaign`` names it, and a crash in between leaves it listed by
        ``mailings(owed=True)``. False when the post was already released."""
        try:
            with self._write() as conn:
                if conn.scalar(select(releases.c.slug).where(releases.c.slug == record.slug)) is not None:
                    return False
                conn.execute(
                    insert(releases).values(
                        slug=record.slug,
                        title=record.title,
                        post_date=record.post_date,
                        content_hash=record.content_hash,
                        released_at=record.released_at,
                        backfill=record.backfill,
                        skipped=",".join(record.skipped),
                        recorded_at=now,
                    )
                )
                for channel in record.channels:
                    _publish(conn, record, channel, now)
                conn.execute(delete(holds).where(holds.c.slug == record.slug))
                return True
        except IntegrityError:  # another process recorded it between our check and insert
            return False

    def owe_newsletter(self, record: ReleaseRecord, *, now: datetime) -> bool:
        """Record that an already released post is to be e-mailed after all (an explicit
        ``send`` of a backfill post). False when it already has an e-mail publication."""
        try:
            with self._write() as conn:
                found = conn.scalar(
                    select(publications.c.id).where(
                        publications.c.slug == record.slug, publications.c.channel == "email"
                    )
                )
                if found is not None:
                    return False
                _publish(conn, record, "email", now)
                conn.execute(
                    update(releases)
                    .where(releases.c.slug == record.slug)
                    .values(skipped=",".join(c for c in record.skipped if c != "email"))
                )
                return True
        except IntegrityError:
            return False

    def attach_campaign(self, slug: str, campaign_id: int) -> None:
        """The newsletter owed for ``slug`` is now this campaign."""
        with self._write() as conn:
            conn.execute(
                update(publications)
                .where(
                    publications.c.slug == slug,
                    publications.c.channel == "email",
                    publications.c.campaign_id.is_(None),
                )
                .values(campaign_id=campaign_id)
            )

    def mailings(self, *, owed: bool = False) -> list[Mailing]:
        """Every e-mail publication (only those whose campaign was never created, with
        ``owed``), oldest first."""
        query = (
            select(publications)
            .where(publications.c.channel == "email")
            .order_by(publications.c.released_at, publications.c.slug)
        )
        if owed:
            query = query.where(publications.c.campaign_id.is_(None))
        with self._read() as conn:
            return [Mailing(r.slug, r.released_at, r.content_hash, r.campaign_id) for r in conn.execute(query).all()]

    def get_mailing(self, slug: str) -> Mailing | None:
        with self._read() as conn:
            row = conn.execute(
                select(publications).where(publications.c.slug == slug, publications.c.channel == "email")
            ).first()
        return Mailing(row.slug, row.released_at, row.content_hash, row.campaign_id) if row else None

    # --- holds --------------------------------------------------------------------------

    def hold(self, slug: str, post_date: datetime, reason: str, *, now: datetime) -> Hold:
        """Record that a due post is held back (the first hold's time stands)."""
        with self._write() as conn:
            row = conn.execute(select(holds).where(holds.c.slug == slug)).first()
            if row is None:
                conn.execute(insert(holds).values(slug=slug, since=now, post_date=post_date, reason=reason))
                return Hold(slug, now, post_date, reason)
            conn.execute(update(holds).where(holds.c.slug == slug).values(post_date=post_date, reason=reason))
            return Hold(slug, row.since, post_date, reason)

    def list_holds(self) -> dict[str, Hold]:
        with self._read() as conn:
            return {r.slug: Hold(r.slug, r.since, r.post_date, r.reason) for r in conn.execute(select(holds))}

    # --- approvals ----------------------------------------------------------------------

    def record_approval(self, approval: Approval) -> None:
        """The latest approval of a post replaces any earlier one."""
        values = {
            "approved_by": approval.by,
            "approved_at": approval.at,
            "content_hash": approval.content_hash,
        }
        with self._write() as conn:
            if conn.execute(update(approvals).where(approvals.c.slug == approval.slug).values(**values)).rowcount == 0:
                conn.execute(insert(approvals).values(slug=approval.slug, **values))

    def get_approval(self, slug: str) -> Approval | None:
        with self._read() as conn:
            row = conn.execute(select(approvals).where(approvals.c.slug == slug)).first()
        return _approval(row) if row else None

    def list_approvals(self) -> dict[str, Approval]:
        with self._read() as conn:
            return {r.slug: _approval(r) for r in conn.execute(select(approvals))}


def _publish(conn: Connection, record: ReleaseRecord, channel: str, now: datetime) -> None:
    conn.execute(
        insert(publications).values(
            slug=record.slug,
            channel=channel,
            released_at=record.released_at,
            content_hash=record.content_hash,
            recorded_at=now,
        )
    )

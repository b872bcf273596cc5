"""What the ledger's tables are made of: the time column every table uses, and the statuses it allows."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
# "skipped": the subscriber was no longer active when the message's turn came.
# "held": in flight when a sender died, twice: it may have arrived twice already, so it
# waits for `pipeline send --resume --force` instead of going out a third time.
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "bounced", "skipped", "held")
# "paused": stopped by a refusal of our sender or by the circuit breaker; only an
# explicit `pipeline send --resume` continues it.
CAMPAIGN_STATUSES = ("sending", "paused", "finished")
CAMPAIGN_KINDS = ("post", "digest")
# How often a subscriber is mailed: an e-mail per article, or only the weekly digest.
FREQUENCIES = ("each", "digest")
# Which group a campaign went to; "all" when the digest is off (everyone gets each article).
CAMPAIGN_AUDIENCES = ("all", "each", "digest")
# What version 1 allowed (frozen with it).
V1_DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "bounced", "skipped")
V1_CAMPAIGN_STATUSES = ("sending", "finished")
STAFF_ROLES = ("editor", "approver", "admin")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zone type: values are stored as naive UTC text, which
    also sorts correctly. A naive datetime is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: every time in the ledger must be time-zone aware")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"

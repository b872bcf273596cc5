"""Time-zone-aware date parsing: a time without a zone is in the clinic's zone.

A wall-clock time that does not exist (spring forward) or happens twice (fall
back) is refused with a message that says which offset to add, rather than
guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pipeline.config import Settings

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DateProblem(ValueError):
    """The text is not a usable date; the message says how to fix it."""


def _fmt_offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Attach ``zone`` to a wall-clock time, refusing DST gaps and overlaps."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    shown = naive.strftime("%Y-%m-%d %H:%M")
    if round_trip != naive:
        raise DateProblem(
            f"{shown} does not exist in {zone.key} (the clocks spring forward over it); "
            f"pick another time or write the offset explicitly, e.g. {naive.isoformat()}{_fmt_offset(second.utcoffset())}"
        )
    if first.utcoffset() != second.utcoffset():
        raise DateProblem(
            f"{shown} happens twice in {zone.key} (the clocks fall back); add the offset: "
            f"{naive.isoformat()}{_fmt_offset(first.utcoffset())} for the first, "
            f"{naive.isoformat()}{_fmt_offset(second.utcoffset())} for the second"
        )
    return first


def parse_datetime(value: object, zone: ZoneInfo) -> datetime:
    """ISO 8601 text (or a YAML date) -> aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else localize(value, zone)
    if isinstance(value, date):
        return localize(datetime(value.year, value.month, value.day), zone)
    if not isinstance(value, str):
        raise DateProblem(f"expected an ISO 8601 date such as 2026-11-03 09:00, got {type(value).__name__}")
    text = value.strip()
    if _DATE_ONLY.match(text):
        text += "T00:00"
    candidate = text.replace(" ", "T", 1)
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise DateProblem(
            f"{value!r} is not an ISO 8601 date; write it like 2026-11-03 09:00 or 2026-11-03T09:00-05:00"
        ) from None
    return parsed if parsed.tzinfo else localize(parsed, zone)


def to_utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_time(moment: datetime, settings: Settings, fmt: str = "%B %-d, %Y") -> str:
    """``moment`` in the clinic's zone, as ``fmt`` says."""
    return moment.astimezone(settings.clinic.zone).strftime(fmt)

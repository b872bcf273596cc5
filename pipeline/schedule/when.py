"""Times in words, as the log, the queue and the prompts say them."""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.config import Settings
from pipeline.content.dates import local_time


def local(moment: datetime, settings: Settings) -> str:
    """``2026-11-03 09:00 EST`` (seconds shown when there are any)."""
    shown = moment.astimezone(settings.clinic.zone)
    fmt = "%Y-%m-%d %H:%M:%S %Z" if shown.second or shown.microsecond else "%Y-%m-%d %H:%M %Z"
    return local_time(moment, settings, fmt)


def span(delta: timedelta) -> str:
    """A duration in words: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(moment: datetime, now: datetime) -> str:
    delta = moment - now
    return f"in {span(delta)}" if delta.total_seconds() >= 0 else f"{span(delta)} ago"


def age(moment: datetime, now: datetime) -> str:
    """How old a post is, for a person deciding whether to mail it: ``393 days``."""
    days = (now - moment).days
    if days >= 2:
        return f"{days:,} days"
    return span(now - moment)

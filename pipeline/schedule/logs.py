"""The scheduler's log: on stderr, one line per event, stamped in the clinic's zone."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

from pipeline.config import Settings


class ZonedFormatter(logging.Formatter):
    """Timestamps in the clinic's zone, with the offset: ``2026-11-03 09:00:00.012-05:00``."""

    def __init__(self, zone: Any) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, self.zone).isoformat(sep=" ", timespec="milliseconds")


def configure_logging(settings: Settings, *, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZonedFormatter(settings.clinic.zone))
    for name, level in (("pipeline", logging.DEBUG if verbose else logging.INFO), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False

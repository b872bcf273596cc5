"""Tokens never reach a log: ``/confirm/...``, ``/unsubscribe/...`` and ``/manage/...`` are scrubbed
from every record, uvicorn's access log included."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

_TOKEN_PATH = re.compile(r"(/(?:unsubscribe|confirm|manage)/)[^\s/?#\"']+")


def redact(text: str) -> str:
    """``/unsubscribe/<token>`` -> ``/unsubscribe/[redacted]`` (and the same for confirm and manage)."""
    return _TOKEN_PATH.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Scrubs tokens from a log record's message and arguments.

    The arguments are redacted one by one instead of being merged into the message,
    because uvicorn's access formatter unpacks them (client, method, path, version,
    status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_log_redaction() -> None:
    """Add ``RedactTokens`` to uvicorn's loggers (once), whatever logging config is in use."""
    for name in ("uvicorn.access", "uvicorn.error", "pipeline"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())

"""The audit log: who did what to which post (or subscriber, or account), and when.

Rows are only ever added. Each names the staff member as they were named at the
time, the action (``ACTIONS``), the post's slug and content hash where there is one
(an approval names exactly the bytes approved), and a line of detail.

``AuditLog`` is a part of ``Store``: every method is one transaction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select

from pipeline.content.dates import to_utc_iso
from pipeline.ledger.engine import LedgerPart
from pipeline.ledger.schema import audit_log
from pipeline.spreadsheet import guard_cell

ACTIONS = (
    "save", "create", "schedule", "unschedule", "approve", "proof", "send",
    "staff add", "staff remove", "staff password",
    "subscriber add", "subscriber invite", "subscriber unsubscribe", "subscriber export",
    "social post", "social pause",
)  # fmt: skip
CSV_COLUMNS = ("at_utc", "actor", "actor_email", "action", "slug", "content_hash", "detail")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    actor_email: str
    action: str
    slug: str | None
    content_hash: str | None
    detail: str


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        actor_email=row.actor_email,
        action=row.action,
        slug=row.slug,
        content_hash=row.content_hash,
        detail=row.detail,
    )


class AuditLog(LedgerPart):
    """The audit log (mixed into ``Store``)."""

    def audit(
        self,
        *,
        actor: str,
        actor_email: str,
        action: str,
        now: datetime,
        slug: str | None = None,
        content_hash: str | None = None,
        detail: str = "",
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        with self._write() as conn:
            conn.execute(
                insert(audit_log).values(
                    at=now,
                    actor=actor,
                    actor_email=actor_email,
                    action=action,
                    slug=slug,
                    content_hash=content_hash,
                    detail=" ".join(detail.split()),
                )
            )

    def audit_entries(self, *, slug: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Newest first; only the post's with ``slug``."""
        query = select(audit_log).order_by(audit_log.c.id.desc())
        if slug is not None:
            query = query.where(audit_log.c.slug == slug)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(query)]


def audit_csv(entries: Iterable[AuditEntry]) -> bytes:
    """The entries as CSV, oldest first, every text cell formula-guarded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in sorted(entries, key=lambda e: e.id):
        cells = (e.actor, e.actor_email, e.action, e.slug or "", e.content_hash or "", e.detail)
        writer.writerow([to_utc_iso(e.at), *(guard_cell(c) for c in cells)])
    return buffer.getvalue().encode("utf-8")

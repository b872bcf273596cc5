"""Subscriber addresses: validate, add, remove, import and export.

Addresses are checked and normalised by ``email-validator`` (the domain
lower-cased and IDNA-encoded); uniqueness is case-insensitive (see
``store.email_key``). Staff hold the consent for what they add or import, so
those subscribers are active; a double opt-in leaves them pending until they
confirm. An address that unsubscribed, bounced or complained is never made
active again by staff: only by the person confirming a new subscription.

Import reports every row it does not import, with its line number and why,
and imports the rest. Importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError

from pipeline.config import Settings
from pipeline.content.dates import to_utc_iso
from pipeline.errors import PipelineError, decode_text
from pipeline.ledger.columns import FREQUENCIES, SUBSCRIBER_STATUSES
from pipeline.ledger.engine import utcnow
from pipeline.ledger.store import Store
from pipeline.ledger.subscriber_rows import Subscriber, SubscriberExists, email_key
from pipeline.spreadsheet import guard_cell, unguard_cell

INACTIVE = ("unsubscribed", "bounced", "complained")
EXPORT_COLUMNS = ("email", "name", "status", "source", "created_at", "confirmed_at", "unsubscribed_at", "frequency")
_EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "mail")
_NAME_MAX = 200


def normalise_address(address: str, *, check_deliverability: bool = False) -> str:
    """The canonical form of ``address``, or ``PipelineError`` saying what is wrong with it."""
    candidate = address.strip()
    if not candidate:
        raise PipelineError("the address is empty", field="email")
    try:
        result = validate_email(candidate, check_deliverability=check_deliverability, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise PipelineError(f"{candidate!r} is not a valid e-mail address: {exc}", field="email") from None
    return str(result.ascii_email)


def check_frequency(frequency: str, *, field: str = "frequency") -> str:
    """``frequency`` as the ledger keeps it, or ``PipelineError`` naming the choices."""
    value = frequency.strip().lower()
    if value not in FREQUENCIES:
        raise PipelineError(
            f"unknown frequency {frequency!r}",
            field=field,
            hint="use 'each' (an e-mail per article) or 'digest' (the weekly digest only)",
        )
    return value


def clean_name(name: str | None) -> str | None:
    """One line, trimmed, bounded; None when empty."""
    if name is None:
        return None
    text = " ".join(name.split())[:_NAME_MAX]
    return text or None


# --- one at a time ---------------------------------------------------------------------


@dataclass(frozen=True)
class AddResult:
    subscriber: Subscriber
    outcome: str  # "added", "already", "activated", "pending" (awaits confirmation)

    @property
    def needs_confirmation(self) -> bool:
        return self.outcome == "pending"


def add_subscriber(
    store: Store,
    settings: Settings,
    email: str,
    name: str | None = None,
    *,
    confirm: bool = False,
    source: str = "cli",
    frequency: str | None = None,
    now: datetime | None = None,
) -> AddResult:
    """Add one address. Without ``confirm`` it is active at once (staff consent);
    with it, it stays pending until the person confirms (send the e-mail with
    ``pipeline.mail.confirm.send_confirmation`` when ``needs_confirmation``).

    ``frequency`` ("each" by default) is a new subscriber's; staff (any ``source`` but
    "web") may also change an existing subscriber's with it. A stranger's form never does."""
    address = normalise_address(email, check_deliverability=settings.delivery.check_deliverability)
    name = clean_name(name)
    frequency = check_frequency(frequency, field="--frequency") if frequency is not None else None
    now = now or utcnow()
    existing = store.get_subscriber_by_email(address)
    if existing is None:
        try:
            created = store.add_subscriber(
                address, name, "pending" if confirm else "active", source, frequency=frequency or "each", now=now
            )
        except SubscriberExists as race:
            existing = race.existing
        else:
            return AddResult(created, "pending" if confirm else "added")
    if existing.status in INACTIVE:
        if not confirm:
            raise PipelineError(
                f"{existing.email} is {existing.status}; staff cannot subscribe it again",
                field="email",
                hint="send them a confirmation with --confirm: they become active when they click it",
            )
        # They stay unsubscribed (or bounced) until they click the new link: anyone can
        # type an address into a form, so only that click is consent (the confirm page
        # accepts links sent after they left). Nothing else, an import included, can
        # bring them back meanwhile.
        return AddResult(existing, "pending")
    if frequency is not None and source != "web" and existing.frequency != frequency:
        existing = store.set_subscriber_frequency(existing.id, frequency, via=source, now=now)
    if existing.status == "pending":
        if confirm:
            return AddResult(existing, "pending")
        return AddResult(store.set_subscriber_status(existing.id, "active", now=now), "activated")
    if name and not existing.name:
        store.set_subscriber_name(existing.id, name, now=now)
    return AddResult(existing, "already")


def remove_subscriber(store: Store, email: str, *, forget: bool = False, now: datetime | None = None) -> Subscriber:
    """Unsubscribe an address (kept, so no import can re-add it), or with ``forget``
    delete it and its delivery history."""
    existing = store.get_subscriber_by_email(email)
    if existing is None:
        raise PipelineError(f"{email.strip()} is not a subscriber", field="email", hint="check the spelling")
    if forget:
        store.delete_subscriber(existing.id)
        return existing
    return store.set_subscriber_status(existing.id, "unsubscribed", now=now)


# --- import --------------------------------------------------------------------------


@dataclass
class ImportReport:
    added: int = 0
    activated: int = 0  # pending (never confirmed) made active by staff import
    suppressed: int = 0  # active made unsubscribed/bounced/complained by the file's status column
    updated_names: int = 0
    unchanged: int = 0
    kept: list[PipelineError] = field(default_factory=list)  # inactive addresses left as they are
    rejected: list[PipelineError] = field(default_factory=list)  # rows not imported, with line and reason
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.added + self.activated + self.suppressed + self.updated_names


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str | None
    status: str
    frequency: str = "each"


def _read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) for every non-blank row, header included."""
    raw = path.read_bytes()
    text = decode_text(raw, path, hint="save or export it as 'CSV UTF-8'", encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    previous_end = 0
    try:
        for cells in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells
    except csv.Error as exc:
        raise PipelineError(f"the file is not valid CSV: {exc}", path=path, line=reader.line_num) from None


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None = None
    status: int | None = None
    frequency: int | None = None


def _columns(header: list[str], path: Path, line: int, report: ImportReport) -> _Columns:
    names = [cell.strip().lower() for cell in header]
    email_col = next((i for i, n in enumerate(names) if n in _EMAIL_HEADERS), None)
    if email_col is None:
        raise PipelineError(
            f"no e-mail column in the header (found: {', '.join(repr(c) for c in header)})",
            path=path,
            line=line,
            hint="the first row must name the columns, e.g. 'email,name'",
        )
    name_col = next((i for i, n in enumerate(names) if n in ("name", "full name")), None)
    status_col = names.index("status") if "status" in names else None
    frequency_col = names.index("frequency") if "frequency" in names else None
    known = {*_EMAIL_HEADERS, "name", "full name", *EXPORT_COLUMNS}
    report.ignored_columns = [h for h, n in zip(header, names, strict=True) if n and n not in known]
    return _Columns(email_col, name_col, status_col, frequency_col)


def _parse_rows(path: Path, settings: Settings, report: ImportReport) -> list[_Row]:
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    columns: _Columns | None = None
    for line, cells in _read_rows(path):
        if columns is None:
            first = cells[0].strip() if cells else ""
            if "@" in first and first.lower() not in _EMAIL_HEADERS:
                # No header: a bare list of addresses (and names).
                columns = _Columns(0, 1 if len(cells) > 1 else None)
            else:
                columns = _columns(cells, path, line, report)
                continue
        email_col, name_col, status_col = columns.email, columns.name, columns.status

        def reject(message: str, line: int = line) -> None:
            report.rejected.append(PipelineError(message, path=path, line=line, field="email"))

        address = unguard_cell(cells[email_col].strip()) if email_col < len(cells) else ""
        if not address:
            reject("no address in the e-mail column; row not imported")
            continue
        try:
            email = normalise_address(address, check_deliverability=settings.delivery.check_deliverability)
        except PipelineError as exc:
            reject(f"{exc.message}; row not imported")
            continue
        status = "active"
        if status_col is not None and status_col < len(cells) and cells[status_col].strip():
            status = cells[status_col].strip().lower()
            if status not in SUBSCRIBER_STATUSES:
                reject(f"unknown status {status!r} (known: {', '.join(SUBSCRIBER_STATUSES)}); row not imported")
                continue
        frequency = "each"
        frequency_col = columns.frequency
        if frequency_col is not None and frequency_col < len(cells) and cells[frequency_col].strip():
            frequency = cells[frequency_col].strip().lower()
            if frequency not in FREQUENCIES:
                report.rejected.append(
                    PipelineError(
                        f"unknown frequency {cells[frequency_col].strip()!r} (known: each, digest); row not imported",
                        path=path,
                        line=line,
                        field="frequency",
                    )
                )
                continue
        key = email_key(email)
        if key in seen:
            reject(f"{email} already appears on line {seen[key]}; this row not imported")
            continue
        seen[key] = line
        raw_name = cells[name_col] if name_col is not None and name_col < len(cells) else None
        rows.append(
            _Row(
                line=line,
                email=email,
                name=clean_name(unguard_cell(raw_name) if raw_name is not None else None),
                status=status,
                frequency=frequency,
            )
        )
    if columns is None:
        raise PipelineError(
            "the file has no rows", path=path, hint="the first row names the columns, e.g. 'email,name'"
        )
    return rows


def import_csv(store: Store, settings: Settings, path: Path, *, now: datetime | None = None) -> ImportReport:
    """Import subscribers from a CSV file (header with an ``email`` column; optional
    ``name``, ``status`` and ``frequency``). Returns what happened to every row. A new
    subscriber gets the file's frequency; an existing one keeps their own choice."""
    report = ImportReport()
    now = now or utcnow()
    rows = _parse_rows(path, settings, report)
    existing = store.get_subscribers_by_email([r.email for r in rows])
    new: list[_Row] = []
    for row in rows:
        current = existing.get(email_key(row.email))
        if current is None:
            new.append(row)
            continue
        _merge(store, report, path, row, current, now)
    if new:
        try:
            report.added += store.add_subscribers_bulk(
                [
                    {"email": r.email, "name": r.name, "status": r.status, "source": "import", "frequency": r.frequency}
                    for r in new
                ],
                now=now,
            )
        except IntegrityError:
            # Someone subscribed one of these addresses while we were reading: go row by row.
            for row in new:
                try:
                    store.add_subscriber(row.email, row.name, row.status, "import", frequency=row.frequency, now=now)
                    report.added += 1
                except SubscriberExists as race:
                    _merge(store, report, path, row, race.existing, now)
    return report


def _merge(store: Store, report: ImportReport, path: Path, row: _Row, current: Subscriber, now: datetime) -> None:
    """An imported row for an address we already have."""
    if current.status in INACTIVE:
        if row.status != current.status:
            report.kept.append(
                PipelineError(
                    f"{current.email} is {current.status} and stays so (an import never re-subscribes anyone)",
                    path=path,
                    line=row.line,
                    field="email",
                )
            )
        else:
            report.unchanged += 1
        return
    changed = False
    if row.status in INACTIVE:
        # The file records an opt-out or a bounce: that always wins.
        store.set_subscriber_status(current.id, row.status, now=now)
        report.suppressed += 1
        changed = True
    elif current.status == "pending" and row.status == "active":
        store.set_subscriber_status(current.id, "active", now=now)
        report.activated += 1
        changed = True
    if row.name and not current.name:
        store.set_subscriber_name(current.id, row.name, now=now)
        report.updated_names += 1
        changed = True
    if not changed:
        report.unchanged += 1


# --- export --------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str:
    return to_utc_iso(moment) if moment else ""


def export_csv(store: Store, path: Path, *, status: str | None = None) -> int:
    """Write every subscriber (or those with ``status``) to ``path``; returns the count.

    Unsubscribed and bounced addresses are exported too: imported elsewhere, the
    status column keeps them from being mailed. Written to a temporary file and
    renamed, so a failed export never leaves half a file.
    """
    if status is not None and status not in SUBSCRIBER_STATUSES:
        raise PipelineError(
            f"unknown status {status!r}", field="--status", hint=f"use one of {', '.join(SUBSCRIBER_STATUSES)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    count = 0
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        for sub in store.iter_subscribers(status):
            writer.writerow(
                [
                    guard_cell(sub.email),  # "=x@example.org" is a valid address, and a formula
                    guard_cell(sub.name or ""),
                    sub.status,
                    sub.source,
                    _iso(sub.created_at),
                    _iso(sub.confirmed_at),
                    _iso(sub.unsubscribed_at),
                    sub.frequency,
                ]
            )
            count += 1
    os.replace(temporary, path)
    return count

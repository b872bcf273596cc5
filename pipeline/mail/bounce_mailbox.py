"""The bounce mailbox, read: every unread report recorded against the delivery it names.

``pipeline bounces process`` and the scheduler's bounce job call ``process_mailbox``.
A report that was read (recorded, a duplicate, or nothing to act on) is marked seen:
Maildir's "S" flag (the file moves to cur/), IMAP's \\Seen. A message that is not a
report, or names none of our deliveries, stays unread where it is and is listed each
time: nothing in the mailbox is ever deleted.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.config import Settings
from pipeline.errors import MailFault, PipelineError
from pipeline.ledger.bounce_rows import BounceEvent
from pipeline.ledger.engine import utcnow
from pipeline.ledger.store import Store
from pipeline.ledger.subscriber_rows import email_key
from pipeline.ledger.tokens import read_bounce_token
from pipeline.mail.reports import NotAReport, Report, parse_report

IMAP_PASSWORD_ENV = "PIPELINE_IMAP_PASSWORD"
IMAP_HINT = "write it like imaps://bounces@mail.example.org/INBOX (the password goes in PIPELINE_IMAP_PASSWORD)"
_IMAP_TIMEOUT = 30.0


class Mailbox(Protocol):
    description: str

    def unread(self) -> Iterator[tuple[str, bytes]]:
        """(key, bytes) of each message not yet marked seen."""

    def mark_seen(self, key: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Kept:
    """A message left unread in the mailbox, and why."""

    where: str
    reason: str


@dataclass
class MailboxResult:
    mailbox: str
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # bounced, complained, counted, failed, duplicate, ignored
    kept: list[Kept] = field(default_factory=list)

    def summary(self) -> str:
        done = ", ".join(f"{count} {name}" for name, count in sorted(self.outcomes.items())) or "nothing to record"
        return f"{self.read} message(s) read from {self.mailbox}: {done}; {len(self.kept)} kept unread"


# --- Maildir -------------------------------------------------------------------------------


class MaildirBox:
    """A Maildir folder, read and flagged in place (no message is rewritten)."""

    def __init__(self, path: Path) -> None:
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise PipelineError(
                f"{path} is not a Maildir (it needs new/ and cur/ folders)",
                field="--maildir",
                hint="point --maildir (or bounces.maildir) at the folder your mail server delivers bounces to",
            )
        self.path = path
        self.description = f"Maildir {path}"

    def unread(self) -> Iterator[tuple[str, bytes]]:
        for folder in ("new", "cur"):
            for name in sorted(os.listdir(self.path / folder)):
                if name.startswith(".") or "S" in _flags(name):
                    continue
                try:
                    data = (self.path / folder / name).read_bytes()
                except FileNotFoundError:  # another reader moved it a moment ago
                    continue
                yield f"{folder}/{name}", data

    def mark_seen(self, key: str) -> None:
        folder, name = key.split("/", 1)
        flags = "".join(sorted(set(_flags(name)) | {"S"}))
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path / folder / name, self.path / "cur" / f"{name.split(':', 1)[0]}:2,{flags}")

    def close(self) -> None:
        pass


def _flags(name: str) -> str:
    info = name.partition(":")[2]
    return info[2:] if info.startswith("2,") else ""


# --- IMAP ----------------------------------------------------------------------------------


class ImapBox:
    """An IMAP folder: UNSEEN messages, fetched without marking them, then flagged \\Seen."""

    def __init__(self, url: str, password: str | None, *, timeout: float = _IMAP_TIMEOUT) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise PipelineError(
                f"cannot read the IMAP address {url!r}: {exc}", field="--imap", hint=IMAP_HINT
            ) from None
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise PipelineError(f"{url!r} is not an IMAP address with a user", field="--imap", hint=IMAP_HINT)
        if parts.password is not None:
            raise PipelineError(
                "the IMAP address must not contain a password", field="--imap", hint=f"set {IMAP_PASSWORD_ENV} instead"
            )
        if not password:
            raise PipelineError(
                f"{IMAP_PASSWORD_ENV} is not set", field="--imap", hint=f"export {IMAP_PASSWORD_ENV}=..."
            )
        options = parse_qs(parts.query)
        self.starttls = options.get("tls", [""])[-1] == "starttls"
        self.ssl = parts.scheme == "imaps"
        self.host = parts.hostname
        self.port = port or (993 if self.ssl else 143)
        self.user = unquote(parts.username)
        self.password = password
        self.folder = unquote(parts.path.strip("/")) or "INBOX"
        self.timeout = timeout
        self.description = f"{parts.scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"
        self._client: imaplib.IMAP4 | None = None

    def _connect(self) -> imaplib.IMAP4:
        try:
            if self.ssl:
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=ssl.create_default_context(), timeout=self.timeout
                )
            else:
                client = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
                if self.starttls:
                    client.starttls(ssl.create_default_context())
            client.login(self.user, self.password)
            status, detail = client.select(_quoted(self.folder))
            if status != "OK":
                raise MailFault(f"{self.description}: cannot open the folder: {_said(detail)}", field="--imap")
        except imaplib.IMAP4.error as exc:
            raise MailFault(
                f"{self.description} refused: {exc}", field="--imap", hint=f"check the user and {IMAP_PASSWORD_ENV}"
            ) from None
        except TimeoutError:
            raise MailFault(f"{self.description} did not answer within {self.timeout:g} s", field="--imap") from None
        except ssl.SSLError as exc:
            raise MailFault(f"TLS with {self.description} failed: {exc.reason}", field="--imap") from None
        except OSError as exc:
            raise MailFault(f"cannot reach {self.description}: {exc.strerror or exc}", field="--imap") from None
        return client

    def unread(self) -> Iterator[tuple[str, bytes]]:
        self._client = client = self._connect()
        status, data = client.uid("SEARCH", "UNSEEN")
        if status != "OK":
            raise MailFault(f"{self.description}: the search for unread messages failed: {_said(data)}", field="--imap")
        for uid in (data[0] or b"").split():
            status, fetched = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if status == "OK" and isinstance(raw, bytes):
                yield uid.decode(), raw

    def mark_seen(self, key: str) -> None:
        if self._client is not None:
            self._client.uid("STORE", key, "+FLAGS", "(\\Seen)")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                self._client.logout()
            self._client = None


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _said(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], bytes):
        return data[0].decode("utf-8", "replace")
    return str(data)


def open_mailbox(settings: Settings, *, maildir: Path | None = None, imap: str | None = None) -> Mailbox:
    """The mailbox named by the options, else by ``[bounces]`` in pipeline.toml."""
    if maildir is not None and imap is not None:
        raise PipelineError("--maildir and --imap cannot be combined", field="bounces")
    if maildir is None and imap is None:
        maildir = settings.resolve(settings.bounces.maildir) if settings.bounces.maildir else None
        imap = settings.bounces.imap if maildir is None else None
    if maildir is not None:
        return MaildirBox(maildir)
    if imap is not None:
        return ImapBox(imap, os.environ.get(IMAP_PASSWORD_ENV))
    raise PipelineError(
        "no bounce mailbox to read",
        field="bounces",
        hint="pass --maildir PATH or --imap URL, or set bounces.maildir or bounces.imap in pipeline.toml",
    )


# --- processing ----------------------------------------------------------------------------


def process_mailbox(
    store: Store, settings: Settings, box: Mailbox, *, secret: bytes, now: datetime | None = None
) -> MailboxResult:
    """Record every unread report in ``box``; see the module's docstring."""
    result = MailboxResult(mailbox=box.description)
    bounce_local = settings.bounce_address.rpartition("@")[0]
    try:
        for key, raw in box.unread():
            result.read += 1
            try:
                report = parse_report(raw, bounce_local=bounce_local)
            except NotAReport as why:
                result.kept.append(Kept(key, str(why)))
                continue
            delivery = _delivery_named(store, report, secret)
            if delivery is None:
                if not report.findings:
                    result.outcomes["ignored"] += 1
                    box.mark_seen(key)
                else:
                    result.kept.append(Kept(key, f"{report.summary} that names none of our deliveries"))
                continue
            for outcome in _record(store, settings, report, delivery, now or utcnow()):
                result.outcomes[outcome] += 1
            box.mark_seen(key)
    finally:
        box.close()
    return result


def _delivery_named(store: Store, report: Report, secret: bytes) -> tuple[int | None, int] | None:
    """(campaign id, subscriber id) the report is about: by its signed envelope token,
    else by our Message-ID together with the subscriber's own address."""
    for token in report.tokens:
        found = read_bounce_token(token, secret)
        if found is not None:
            return found
    recipients = {email_key(f.recipient) for f in report.findings if f.recipient}
    for campaign_id, subscriber_id in report.message_ids:
        subscriber = store.get_subscriber(subscriber_id)
        if subscriber is not None and email_key(subscriber.email) in recipients:
            return campaign_id, subscriber_id
    return None


def _record(
    store: Store, settings: Settings, report: Report, delivery: tuple[int | None, int], now: datetime
) -> list[str]:
    campaign_id, subscriber_id = delivery
    if not report.findings:
        return ["ignored"]
    outcomes = []
    # A message of ours had one recipient: every finding is about that delivery.
    for index, finding in enumerate(report.findings):
        event = BounceEvent(
            report_key=f"{report.key}:{index}",
            subscriber_id=subscriber_id,
            campaign_id=campaign_id,
            kind=finding.kind,
            status=finding.status,
            reason=_reason(finding.status, finding.reason),
            reported_at=report.date or now,
        )
        outcomes.append(
            store.record_bounce(
                event,
                temporary_limit=settings.bounces.temporary_limit,
                temporary_days=settings.bounces.temporary_days,
                now=now,
            )
        )
    return outcomes


def _reason(status: str | None, words: str) -> str:
    text = " ".join(words.split())[:300]
    return text if not status or status in text else f"{status}: {text}"

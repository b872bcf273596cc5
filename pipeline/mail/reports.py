"""Reading what comes back to the bounce mailbox: delivery status notifications
(RFC 3464) and feedback reports (ARF, RFC 5965).

A report is about one of our deliveries when it names it:

1. by the envelope sender's signed token (VERP: ``bounces+TOKEN@domain``), found in
   the headers the receiving side writes the envelope into (To, Delivered-To,
   X-Original-To, ...) or, in a feedback report, in ``Original-Mail-From`` and the
   returned message's ``Return-Path``; this works even when the bounce quotes nothing;
2. else by the returned message's own Message-ID (``<cC.sS@domain>``, see
   ``message_id_for``) together with the recipient address the report names, which
   must be that subscriber's.

Nothing else is trusted: a report that names no delivery is listed, not acted on.
This module only reads; ``bounce_mailbox`` records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import parseaddr, parsedate_to_datetime

from pipeline.mail.replies import BAD_MAILBOX_STATUSES

# Headers in which the receiving server records the address a message was delivered to.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "X-Rcpt-To")
# Feedback types that are a reader's complaint about the message (RFC 5965 section 7.3);
# others (auth-failure, not-spam, other) change nothing.
COMPLAINT_TYPES = ("abuse", "fraud", "virus")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<c(\d+)\.s(\d+)@[^<>\s]+>")
# Words by which servers that give a vague status (5.0.0, 5.5.0) say the address is gone.
_GONE = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|doesn't exist|"
    r"mailbox unavailable|mailbox not found|recipient not found|invalid recipient|"
    r"recipient address rejected|address rejected|account (?:is )?disabled|account has been disabled",
    re.IGNORECASE,
)


class NotAReport(Exception):
    """A message in the bounce mailbox that is neither a DSN nor a feedback report (or
    one too damaged to read). It is kept, and listed."""


@dataclass(frozen=True)
class Finding:
    """What a report says about one recipient."""

    kind: str  # "permanent" (the address is gone), "failed" (permanent, not the address's fault), "temporary", "complaint"
    recipient: str | None
    status: str | None  # 5.1.1, 4.2.2, or the feedback type (abuse)
    reason: str  # in words


@dataclass(frozen=True)
class Report:
    key: str  # SHA-256 of the whole message: the same report is recorded once
    kind: str  # "dsn" or "arf"
    findings: tuple[Finding, ...]
    tokens: tuple[str, ...]  # VERP tokens found, in the order they were found
    message_ids: tuple[tuple[int, int], ...] = field(default=())  # (campaign, subscriber) from our Message-IDs
    date: datetime | None = None
    summary: str = ""  # one line for the listing


def report_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse_report(raw: bytes, *, bounce_local: str) -> Report:
    """The report in ``raw`` (the bytes of one message in the bounce mailbox).
    ``bounce_local`` is the bounce mailbox's local part ("bounces"): tokens follow it
    and a "+". Raises ``NotAReport`` with the reason in words."""
    try:
        message = message_from_bytes(raw, policy=policy.default)
    except Exception as exc:  # the parser is lenient; this is a message it cannot take at all
        raise NotAReport(f"not a readable e-mail message: {exc}") from None
    if message.get_content_type() != "multipart/report":
        subject = " ".join(str(message.get("Subject", "")).split())[:80]
        raise NotAReport(
            f"not a delivery status notification or feedback report ({message.get_content_type()}"
            + (f', subject "{subject}"' if subject else "")
            + ")"
        )
    report_type = str(message.get_param("report-type", "")).lower()
    key = report_key(raw)
    if report_type in ("delivery-status", "global-delivery-status"):
        return _dsn(message, key, bounce_local)
    if report_type == "feedback-report":
        return _arf(message, key, bounce_local)
    raise NotAReport(f"a report of a type this does not read ({report_type or 'none given'})")


# --- delivery status notifications (RFC 3464) ----------------------------------------------


def _dsn(message: EmailMessage, key: str, bounce_local: str) -> Report:
    status_part = _first(message, ("message/delivery-status", "message/global-delivery-status"))
    if status_part is None:
        raise NotAReport("a delivery status notification without its message/delivery-status part")
    blocks = [block for block in status_part.get_payload() if isinstance(block, Message)]
    if len(blocks) < 2:
        raise NotAReport("a delivery status notification that names no recipient")
    per_message, recipients = blocks[0], blocks[1:]
    findings = []
    for block in recipients:
        finding = _recipient_finding(block)
        if finding is not None:
            findings.append(finding)
    returned = _returned_headers(message)
    tokens = _tokens(_header_values(message, ENVELOPE_HEADERS), bounce_local)
    tokens += _tokens(_header_values(returned, ("Return-Path",)), bounce_local)
    date = _date(per_message.get("Arrival-Date")) or _date(message.get("Date"))
    kinds = ", ".join(sorted({f.kind for f in findings})) or "nothing to act on"
    return Report(
        key=key,
        kind="dsn",
        findings=tuple(findings),
        tokens=tuple(dict.fromkeys(tokens)),
        message_ids=_our_message_ids(returned),
        date=date,
        summary=f"delivery status notification ({kinds})",
    )


def _recipient_finding(block: Message) -> Finding | None:
    action = str(block.get("Action", "")).strip().lower()
    status_text = str(block.get("Status", "")).strip()
    diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
    diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic else diagnostic
    recipient = _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient"))
    found = _STATUS.search(status_text)
    status = found.group(0) if found else None
    if action in ("delivered", "relayed", "expanded"):
        return None
    in_words = diagnostic or f"{action or 'no action given'} with status {status or status_text or 'unknown'}"
    if action == "delayed" or (status or "").startswith("4"):
        return Finding("temporary", recipient, status, in_words)
    if action != "failed" and not (status or "").startswith("5"):
        return None  # no action we know, no failure status: nothing to act on
    # The Status field may be vague (5.0.0) where the server's own reply is precise.
    precise = _STATUS.search(diagnostic)
    codes = {status, precise.group(0) if precise else None}
    gone = bool(codes & BAD_MAILBOX_STATUSES) or (not codes & _NOT_THE_ADDRESS and bool(_GONE.search(diagnostic)))
    return Finding("permanent" if gone else "failed", recipient, (precise.group(0) if precise else status), in_words)


# Permanent statuses that are about the message or about us, never about the address,
# whatever the words say (a 5.7.1 "recipient address rejected: spam" is policy).
_NOT_THE_ADDRESS = frozenset({"5.7.0", "5.7.1", "5.7.26", "5.7.27", "5.7.509", "5.7.515", "5.3.4", "5.2.2", "5.2.3"})


# --- feedback reports (ARF, RFC 5965) ------------------------------------------------------


def _arf(message: EmailMessage, key: str, bounce_local: str) -> Report:
    feedback = _first(message, ("message/feedback-report",))
    if feedback is None:
        raise NotAReport("a feedback report without its message/feedback-report part")
    fields = feedback.get_payload()
    block = fields[0] if isinstance(fields, list) and fields and isinstance(fields[0], Message) else None
    if block is None or not block.get("Feedback-Type"):
        raise NotAReport("a feedback report without a Feedback-Type")
    feedback_type = str(block.get("Feedback-Type")).strip().lower()
    returned = _returned_headers(message)
    tokens = _tokens(_header_values(block, ("Original-Mail-From",)), bounce_local)
    tokens += _tokens(_header_values(returned, ("Return-Path",)), bounce_local)
    recipient = _address(block.get("Original-Rcpt-To")) or _address(returned.get("To") if returned else None)
    source = " ".join(str(block.get("Reporting-MTA", "") or block.get("User-Agent", "")).split()) or "a provider"
    findings: tuple[Finding, ...] = ()
    if feedback_type in COMPLAINT_TYPES:
        findings = (
            Finding("complaint", recipient, feedback_type, f"marked the newsletter as {feedback_type} ({source})"),
        )
    date = _date(block.get("Arrival-Date")) or _date(block.get("Received-Date")) or _date(message.get("Date"))
    return Report(
        key=key,
        kind="arf",
        findings=findings,
        tokens=tuple(dict.fromkeys(tokens)),
        message_ids=_our_message_ids(returned),
        date=date,
        summary=f"feedback report ({feedback_type})",
    )


# --- helpers ---------------------------------------------------------------------------------


def _first(message: EmailMessage, types: tuple[str, ...]) -> Message | None:
    return next((part for part in message.walk() if part.get_content_type() in types), None)


def _returned_headers(message: EmailMessage) -> Message | None:
    """The headers of the returned message: a message/rfc822 part (whole message) or a
    text/rfc822-headers part (headers only)."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in ("text/rfc822-headers", "text/global-headers"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return message_from_bytes(payload.strip() + b"\r\n\r\n", policy=policy.default)
    return None


def _header_values(message: Message | None, names: Iterable[str]) -> list[str]:
    if message is None:
        return []
    return [str(value) for name in names for value in (message.get_all(name) or [])]


def _tokens(values: Iterable[str], bounce_local: str) -> list[str]:
    pattern = re.compile(re.escape(bounce_local) + r"\+([A-Za-z0-9._\-]+)@", re.IGNORECASE)
    return [match.group(1) for value in values for match in pattern.finditer(value)]


def _our_message_ids(returned: Message | None) -> tuple[tuple[int, int], ...]:
    found = []
    for value in _header_values(returned, ("Message-ID",)):
        match = _MESSAGE_ID.search(value)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    return tuple(found)


def _address(value: object) -> str | None:
    """The address of a DSN/ARF recipient field ("rfc822; ann@example.com") or header."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if ";" in text:
        text = text.split(";", 1)[1]
    address = parseaddr(text.strip())[1]
    return address.lower() if "@" in address else None


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

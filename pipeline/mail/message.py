"""Newsletter -> RFC 5322 bytes, built once per campaign, personalised per recipient.

Building a full ``EmailMessage`` per recipient costs ~4 ms; here the shared part
is serialised once and each recipient costs a few byte joins. Both body parts
use ``Content-Transfer-Encoding: 8bit`` (every line kept under 998 octets), so
the token placeholder is never split by quoted-printable soft line breaks and
substitution is exact. The template checks once, when it is built, that the
placeholder sits whole in both parts and nowhere in broken form, so every
personalised message has every placeholder replaced.

With a ``DkimSigner`` each personalised message is signed (the body differs per
recipient, so the signature must too).
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import TYPE_CHECKING

from pipeline import urls
from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import PipelineError

if TYPE_CHECKING:  # dkimpy (and its DNS resolver) load only when a send actually signs
    from pipeline.mail.dkim import DkimSigner

PLACEHOLDER = urls.TOKEN_PLACEHOLDER.encode("ascii")


class WireMessage(bytes):
    """A message already in the form SMTP's DATA sends: CRLF line ends, every line
    that starts with a dot given a second one, and the closing "." line."""


def to_wire(message: bytes) -> WireMessage:
    """RFC 5321 section 4.5.2 transparency. Each scan is done only when a cheap test
    says it is needed: over a fast link these copies are much of the cost of a send."""
    if isinstance(message, WireMessage):
        return message
    if b"\r\n" not in message and b"\n" in message:
        message = message.replace(b"\n", b"\r\n")  # LF-only input (a file from disk)
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return WireMessage(message + b".\r\n")


def from_wire(message: bytes) -> bytes:
    """The message itself, from its DATA form (for transports that store it)."""
    if not isinstance(message, WireMessage):
        return message
    body = bytes(message).removesuffix(b".\r\n")
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\n..", b"\n.")


_MAX_LINE = 900
PREVIEW_ADDRESS = "subscriber@example.com"


def _wrap_long_lines(data: bytes) -> bytes:
    """Break lines over 900 octets at spaces (HTML and text both allow it): SMTP allows
    998 octets a line, and a line of 900 characters can be 3,600 octets of UTF-8."""
    lines = data.split(b"\n")
    if max(map(len, lines)) <= _MAX_LINE:
        return data  # the common case, found at C speed
    out = []
    for line in lines:
        while len(line) > _MAX_LINE:
            cut = line.rfind(b" ", 0, _MAX_LINE)
            if cut <= 0:
                cut = line.find(b" ", _MAX_LINE)
                if cut < 0:
                    break
            out.append(line[:cut])
            line = line[cut + 1 :]
        out.append(line)
    return b"\n".join(out)


def _clean_header_value(value: str) -> str:
    return " ".join(value.split())


def _header(name: str, value: str) -> bytes:
    """One folded header line; non-ASCII values are RFC 2047 encoded by the email package."""
    if value.isascii() and "=?" not in value:
        # Fold at spaces after the first word, so the value never starts on a
        # continuation line (Python's folder does that for long values, and some
        # clients then show a leading space).
        lines = [f"{name}:"]
        for word in value.split(" "):
            if len(lines[-1]) + 1 + len(word) > 78 and lines[-1] != f"{name}:":
                lines.append(word)
            else:
                lines[-1] += " " + word
        return ("\r\n ".join(lines) + "\r\n").encode("ascii")
    return SMTP.fold_binary(name, SMTP.header_factory(name, value))


def _part(content_type: str, body: bytes) -> bytes:
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'.encode()
        + _wrap_long_lines(body).replace(b"\n", b"\r\n")
        + b"\r\n"
    )


class MessageTemplate:
    """The shared bytes of one campaign's message, split around per-recipient parts."""

    def __init__(self, newsletter: Newsletter, settings: Settings, *, signer: DkimSigner | None = None) -> None:
        self.newsletter = newsletter
        self.settings = settings
        self.signer = signer
        news = settings.newsletter
        # A boundary derived from the content keeps preview files byte-identical between
        # builds, and cannot occur in the parts (it contains their own hash).
        html, text = newsletter.html.encode(), newsletter.text.encode()  # each encoded once
        digest = hashlib.sha256(html)
        digest.update(text)
        digest.update(newsletter.subject.encode())
        boundary = f"=_{digest.hexdigest()[:32]}"
        # Header values are collapsed to one line first, so a title with CR/LF can
        # never become a second header.
        headers = [
            _header("From", formataddr((news.from_name, news.from_address))),
            _header("Reply-To", news.reply_to) if news.reply_to else b"",
            _header("Subject", _clean_header_value(newsletter.subject)),
            _header("List-Id", f"{_clean_header_value(settings.clinic.name)} <{news.list_id}>"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            _header("X-Campaign", newsletter.key),
            _header("Feedback-ID", feedback_id(newsletter.key, news.list_id, news.from_domain)),
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'.encode(),
        ]
        raw = (
            b"".join(headers)
            + b"\r\n"
            + f"--{boundary}\r\n".encode()
            + _part("text/plain", text)
            + f"--{boundary}\r\n".encode()
            + _part("text/html", html)
            + f"--{boundary}--\r\n".encode()
        )
        self._segments = raw.split(PLACEHOLDER)
        _check_placeholders(raw, self._segments)
        self.from_domain = news.from_domain
        self._date: tuple[datetime, str] | None = None

    def _head(self, to_address: str, to_name: str | None, token: str, message_id: str, date: datetime) -> bytes:
        if not token or not token.isascii() or not token.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("token must be URL-safe base64 characters and dots only")
        name = _clean_header_value(to_name) if to_name else ""
        # formataddr encodes a non-ASCII name (RFC 2047) but refuses a non-ASCII address,
        # which is legal with SMTPUTF8: format around an ASCII stand-in, then put it back.
        to = formataddr((name, "to@invalid"), charset="utf-8").replace("to@invalid", to_address) if name else to_address
        # One Date string per second, not one per message: formatting is a third of a
        # personalisation's cost and the header has whole seconds anyway.
        cached = self._date
        if cached is None or cached[0] != date:
            cached = self._date = (date, format_datetime(date))
        return (
            f"To: {to}\r\n"
            f"Date: {cached[1]}\r\n"
            f"Message-ID: {message_id}\r\n"
            f"List-Unsubscribe: <{urls.unsubscribe_url(self.settings, token)}>\r\n"
        ).encode()

    def personalise(
        self, *, to_address: str, to_name: str | None, token: str, message_id: str, date: datetime
    ) -> bytes:
        """The complete message for one recipient, ready for SMTP ``DATA``."""
        head = self._head(to_address, to_name, token, message_id, date)
        body = token.encode("ascii").join(self._segments)
        if self.signer is not None:
            return self.signer.sign(head + body)
        return head + body

    def personalise_wire(
        self, *, to_address: str, to_name: str | None, token: str, message_id: str, date: datetime
    ) -> WireMessage:
        """``personalise`` in SMTP DATA form (see ``WireMessage``), for the send loop."""
        if self.signer is not None:  # DKIM signs the message, not its wire form
            return to_wire(
                self.personalise(to_address=to_address, to_name=to_name, token=token, message_id=message_id, date=date)
            )
        head = self._head(to_address, to_name, token, message_id, date)
        return WireMessage(head + token.encode("ascii").join(self._wire_segments))

    @functools.cached_property
    def _wire_segments(self) -> list[bytes]:
        """The segments in SMTP DATA form, stuffed once per campaign instead of once per
        message (and not at all for a preview). Exact: no segment boundary falls at a
        line start, since the placeholder sits inside a URL."""
        segments = [segment.replace(b"\n.", b"\n..") for segment in self._segments]
        segments[-1] += b".\r\n"
        return segments

    def preview(self) -> bytes:
        """The message as a subscriber would get it, with the token left as a placeholder."""
        return self.personalise(
            to_address=PREVIEW_ADDRESS,
            to_name=None,
            token=urls.TOKEN_PLACEHOLDER,
            message_id=f"<preview.{self.newsletter.key}@{self.from_domain}>",
            date=self.newsletter.date,
        )


def _check_placeholders(raw: bytes, segments: list[bytes]) -> None:
    """The unsubscribe placeholder must sit whole in the text and the HTML part, and
    no piece of it may survive elsewhere (a wrapped or encoded copy would reach the
    subscriber as a dead link). Checked once per campaign, not per message."""
    occurrences = len(segments) - 1
    if occurrences < 2:
        raise PipelineError(
            f"the newsletter has {occurrences} unsubscribe link(s) where the text and HTML parts need one each",
            field="template",
            hint="keep {{ unsubscribe_url }} in both newsletter templates",
        )
    head = PLACEHOLDER[: len(PLACEHOLDER) // 2]
    tail = PLACEHOLDER[len(PLACEHOLDER) // 2 :]
    for segment in segments:
        if head in segment or tail in segment:
            raise PipelineError(
                "an unsubscribe link placeholder was split or encoded in the message",
                field="template",
                hint="the token placeholder must not be wrapped or encoded",
            )
    if raw.count(b"\r\n") != raw.count(b"\n"):
        raise PipelineError("the message has bare line feeds", field="template")


def feedback_id(campaign: str, list_id: str, sender: str) -> str:
    """Gmail's Feedback-ID (campaign:list:sender): its postmaster tools and feedback loop
    report complaint rates per value. Colons separate the fields, so none inside one."""
    return ":".join(" ".join(part.replace(":", "-").split()) for part in (campaign, list_id, sender))


def message_id_for(campaign_id: int, subscriber_id: int, from_domain: str) -> str:
    """Stable per delivery: a message re-sent after a crash carries the same id, which
    lets receiving servers (Gmail among them) drop the duplicate."""
    return f"<c{campaign_id}.s{subscriber_id}@{from_domain}>"

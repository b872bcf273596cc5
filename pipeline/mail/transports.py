"""Where messages go: an outbox folder (Maildir) or an SMTP server.

``transport_from_spec`` reads the spec from ``pipeline.toml`` or ``--transport``:

- ``outbox:PATH``: each message becomes one file in a Maildir at PATH (relative
  to pipeline.toml); no server needed. Open it with any mail client.
- ``smtp://[user@]host[:port][?tls=starttls|ssl|none]``: an SMTP server. The
  password comes only from ``PIPELINE_SMTP_PASSWORD``, never from the spec.

A transport hands out connections, one per sending thread. An SMTP connection
is opened lazily, reused for every message, and re-opened when the server drops
it; the transaction is pipelined (RFC 2920) when the server allows it, which
halves the round trips per message.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.config import Settings
from pipeline.errors import ExitCode, MailFault
from pipeline.mail.message import from_wire, to_wire

PASSWORD_ENV = "PIPELINE_SMTP_PASSWORD"
SPEC_HINT = 'use "outbox:PATH" or "smtp://[user@]host:port[?tls=starttls|ssl]"'
_DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})\b")
RECONNECT_ATTEMPTS = 3
_MAX_REPLY_LINE = 8193  # smtplib's limit (RFC 5321 asks for 512; some servers say more)


class Reply(NamedTuple):
    """An SMTP reply (or the outbox's equivalent). A tuple: one is made per message."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code, e.g. '5.1.1', when the server gave one."""
        match = _ENHANCED.match(self.text.encode("ascii", "replace"))
        return b".".join(match.groups()).decode() if match else None

    @property
    def bad_mailbox(self) -> bool:
        """5.1.x: the address itself is wrong (no such user, bad domain): stop mailing it."""
        status = self.enhanced
        return self.permanent and status is not None and status.startswith("5.1.")

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class TransportError(MailFault):
    """The transport cannot be used: bad spec, server unreachable, login refused."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, field="transport", hint=hint)


class TransportSpecError(TransportError):
    """A transport spec (``delivery.transport`` or ``--transport``) that cannot be read."""

    exit_code = ExitCode.CONFIG


class ConnectionLost(Exception):
    """The server went away in the middle of a transaction."""


Pace = Callable[[], None]
# (recipient, message): the message as bytes, or a function that builds it when its
# turn comes (so building overlaps the network wait instead of delaying the first send).
Item = tuple[str, bytes | Callable[[], bytes]]


def _content(message: bytes | Callable[[], bytes]) -> bytes:
    return message if isinstance(message, bytes) else message()


class Connection(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        """Hand one message over; the reply says whether it was accepted.

        Raises ``TransportError`` when the transport is unusable (after reconnecting).
        """

    def send_many(self, sender: str, items: Sequence[Item], pace: Pace | None = None) -> Iterator[Reply]:
        """Hand over (recipient, message) pairs in order, yielding each one's reply as it
        comes; ``pace`` is called before each message goes out (the rate limit).

        Raises ``TransportError`` when the transport is unusable; the replies already
        yielded stand, and the messages after them were not (knowingly) delivered.
        """

    def close(self) -> None: ...


class Transport(Protocol):
    @property
    def description(self) -> str: ...

    def open(self) -> Connection:
        """A connection for one thread. Opening is lazy: errors surface on ``send``."""


def send_one(transport: Transport, sender: str, recipient: str, message: bytes, what: str) -> Reply:
    """Send one message on a connection of its own. Raises ``TransportError`` if it is
    refused ("<transport> refused the <what> to <recipient>: <reply>")."""
    connection = transport.open()
    try:
        reply = connection.send(sender, recipient, message)
    finally:
        connection.close()
    if not reply.ok:
        raise TransportError(f"{transport.description} refused the {what} to {recipient}: {reply}")
    return reply


# --- outbox ------------------------------------------------------------------------------


class OutboxTransport:
    """A Maildir folder: one file per message (``new/``), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"outbox {path}"
        self._lock = threading.Lock()
        self._maildir: mailbox.Maildir | None = None

    def _box(self) -> mailbox.Maildir:
        if self._maildir is None:
            try:
                self._maildir = mailbox.Maildir(self.path, create=True)
            except OSError as exc:
                raise TransportError(f"cannot create the outbox {self.path}: {exc.strerror}") from None
        return self._maildir

    def open(self) -> Connection:
        return _OutboxConnection(self)

    def deliver(self, message: bytes) -> str:
        # Maildir files use the local line ending; mailbox.Maildir's unique names are
        # not thread-safe, hence the lock (writing a file is quick).
        data = from_wire(message).replace(b"\r\n", b"\n")
        with self._lock:
            try:
                return str(self._box().add(data))
            except OSError as exc:
                raise TransportError(f"cannot write to the outbox {self.path}: {exc.strerror}") from None


class _OutboxConnection:
    def __init__(self, outbox: OutboxTransport) -> None:
        self._outbox = outbox

    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        return Reply(250, f"2.0.0 saved in the outbox as {self._outbox.deliver(message)}")

    def send_many(self, sender: str, items: Sequence[Item], pace: Pace | None = None) -> Iterator[Reply]:
        for recipient, message in items:
            if pace is not None:
                pace()
            yield self.send(sender, recipient, _content(message))

    def close(self) -> None:
        pass


# --- SMTP --------------------------------------------------------------------------------


class _Client(smtplib.SMTP):
    """One SMTP transaction, pipelined when the server advertises PIPELINING.

    smtplib's own ``sendmail`` waits for each reply in turn and rewrites the whole
    message twice with regular expressions; for a newsletter that is most of the
    cost of sending. Connection set-up (EHLO, STARTTLS, AUTH) stays smtplib's.
    """

    def transaction(self, sender: str, recipient: str, message: bytes) -> Reply:
        data = to_wire(message)
        body = " BODY=8BITMIME" if self.has_extn("8bitmime") else ""
        mail_cmd = f"MAIL FROM:<{sender}>{body}\r\n".encode("ascii")
        rcpt_cmd = f"RCPT TO:<{recipient}>\r\n".encode("ascii")
        replies = []
        for command in (mail_cmd, rcpt_cmd, b"DATA\r\n"):
            self.send(command)
            replies.append(self.read_reply())
            if replies[-1][0] >= 400:
                break
        failure = next((r for r in replies if r[0] >= 400), None)
        if failure is None and replies[-1][0] == 354:
            self.send(data)
            return _reply(self.read_reply())
        try:
            if replies[-1][0] == 354:
                # The server took DATA though MAIL or RCPT failed: end the empty message.
                self.send(b".\r\n")
                self.read_reply()
            self.rset()
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()  # the answer stands; the next message reconnects
        return _reply(failure or replies[-1])

    def transactions(self, sender: str, items: Sequence[Item], pace: Pace | None) -> Iterator[Reply]:
        """Several transactions on this connection, one reply per item, in order.

        With PIPELINING, each write carries one message's content and the next
        message's MAIL, RCPT and DATA (RFC 2920 allows content first in a group), so a
        message costs one round trip instead of two; and the next message is built
        while the server is busy with the current one.
        """
        if not items:
            return
        if not self.has_extn("pipelining"):
            for recipient, message in items:
                if pace is not None:
                    pace()
                yield self.transaction(sender, recipient, _content(message))
            return
        body = " BODY=8BITMIME" if self.has_extn("8bitmime") else ""

        def envelope(index: int) -> bytes:
            if index >= len(items):
                return b""
            return f"MAIL FROM:<{sender}>{body}\r\nRCPT TO:<{items[index][0]}>\r\nDATA\r\n".encode("ascii")

        self.send(envelope(0))
        upcoming = _content(items[0][1])
        for index in range(len(items)):
            message = upcoming
            replies = [self.read_reply(), self.read_reply(), self.read_reply()]
            following = envelope(index + 1)
            failure = next((r for r in replies if r[0] >= 400), None)
            accepted = failure is None and replies[2][0] == 354
            if accepted:
                if pace is not None:
                    pace()
                self.send(to_wire(message) + following)
            else:
                # Refused before its content: end an accepted DATA, reset, go on to the next.
                ended = replies[2][0] == 354
                self.send((b".\r\n" if ended else b"") + b"RSET\r\n" + following)
                if ended:
                    self.read_reply()
                self.read_reply()
            if index + 1 < len(items):
                upcoming = _content(items[index + 1][1])  # while the server works
            yield _reply(self.read_reply() if accepted else failure or replies[2])

    def read_reply(self) -> tuple[int, bytes]:
        """smtplib's ``getreply`` without its per-line debug and bookkeeping."""
        if self.file is None:
            if self.sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            self.file = self.sock.makefile("rb")
        lines = []
        while True:
            line = self.file.readline(_MAX_REPLY_LINE)
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        return code, b"\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _reply(raw: tuple[int, bytes]) -> Reply:
    code, text = raw
    if code == 421 or code == -1:
        raise ConnectionLost(text.decode("utf-8", "replace"))
    return Reply(code, " ".join(text.decode("utf-8", "replace").split()))


class _SslClient(_Client, smtplib.SMTP_SSL):
    pass


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    tls: str  # "none", "starttls", "ssl"
    user: str | None
    password: str | None
    timeout: float
    retry_base_seconds: float = 1.0

    @property
    def description(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"smtp://{who}{self.host}:{self.port}" + ("" if self.tls == "none" else f"?tls={self.tls}")

    def open(self) -> Connection:
        return SmtpConnection(self)

    def connect(self) -> _Client:
        """A new, ready SMTP session (greeted, TLS, logged in)."""
        hostname = socket.gethostname()  # not getfqdn(): that may wait on DNS
        client: _Client
        try:
            if self.tls == "ssl":
                client = _SslClient(
                    self.host,
                    self.port,
                    local_hostname=hostname,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = _Client(self.host, self.port, local_hostname=hostname, timeout=self.timeout)
            client.ehlo()
            if self.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if self.user:
                client.login(self.user, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(
                f"{self.description} refused the login: {exc.smtp_code} {_text(exc.smtp_error)}",
                hint=f"check the user name and {PASSWORD_ENV}",
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise TransportError(f"{self.description}: {exc}", hint="check the tls= setting") from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"TLS with {self.description} failed: {exc.reason}", hint="check the tls= setting"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ConnectionLost(f"cannot talk to {self.description}: {exc}") from None
        return client


class SmtpConnection:
    """One reused SMTP session; reconnects when the server drops it."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._client: _Client | None = None

    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        (reply,) = self.send_many(sender, [(recipient, message)])  # consumed to the end
        return reply

    def send_many(self, sender: str, items: Sequence[Item], pace: Pace | None = None) -> Iterator[Reply]:
        done = 0
        failures = 0
        complete = False
        try:
            while done < len(items):
                try:
                    if self._client is None:
                        self._client = self.transport.connect()
                    for reply in self._client.transactions(sender, items[done:], pace):
                        done += 1
                        failures = 0
                        yield reply
                except (ConnectionLost, smtplib.SMTPServerDisconnected, OSError) as exc:
                    # A message dropped after its final dot may have been taken: sending it
                    # again is the one way a recipient can get two copies (the in-flight window).
                    self._discard()
                    failures += 1
                    if failures > RECONNECT_ATTEMPTS:
                        raise TransportError(
                            f"lost the connection to {self.transport.description} {failures} times: "
                            f"{str(exc) or type(exc).__name__}",
                            hint="check the server, then continue with: pipeline send --resume",
                        ) from None
                    # The first reconnect is immediate (an idle connection timed out);
                    # then back off, in case the server is restarting.
                    time.sleep(min(self.transport.retry_base_seconds * (2 ** (failures - 1) - 1), 30.0))
            complete = True
        finally:
            if not complete:
                # Abandoned half-way: the server may be waiting for a pipelined envelope's
                # content. Start the next batch on a fresh connection.
                self._discard()

    def _discard(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._client.quit()
            self._discard()


# --- the spec ----------------------------------------------------------------------------


def transport_from_spec(spec: str | None, settings: Settings) -> Transport:
    """``outbox:PATH`` or ``smtp://[user@]host[:port][?tls=starttls|ssl|none]``;
    ``delivery.transport`` when ``spec`` is empty or None."""
    spec = (spec or settings.delivery.transport).strip()
    if spec == "outbox" or spec.startswith("outbox:"):
        folder = spec.partition(":")[2] or str(settings.paths.state / "outbox")
        return OutboxTransport(settings.resolve(Path(folder)))
    if spec.startswith("smtp://"):
        return _smtp_from_spec(spec, settings)
    raise TransportSpecError(f"unknown transport {spec!r}", hint=SPEC_HINT)


def _smtp_from_spec(spec: str, settings: Settings) -> SmtpTransport:
    try:
        parts = urlsplit(spec)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for smtp://[::1
        raise TransportSpecError(f"cannot read {spec!r}: {exc}", hint=SPEC_HINT) from None
    if parts.password is not None:
        raise TransportSpecError(
            "the transport spec must not contain a password", hint=f"remove it and set {PASSWORD_ENV} instead"
        )
    if not parts.hostname:
        raise TransportSpecError(f"no host in {spec!r}", hint=SPEC_HINT)
    if parts.path not in ("", "/") or parts.fragment:
        raise TransportSpecError(f"unexpected path in {spec!r}", hint=SPEC_HINT)
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise TransportSpecError(f"cannot read the options in {spec!r}", hint=SPEC_HINT) from None
    unknown = sorted(set(query) - {"tls"})
    if unknown:
        raise TransportSpecError(f"unknown option(s) {', '.join(unknown)} in {spec!r}", hint="the only option is tls=")
    tls = query.get("tls", ["none"])[-1].lower()
    if tls not in _DEFAULT_PORTS:
        raise TransportSpecError(f"tls={tls!r} is not one of starttls, ssl, none", hint=SPEC_HINT)
    try:
        port = parts.port or _DEFAULT_PORTS[tls]
    except ValueError:
        raise TransportSpecError(f"the port in {spec!r} is not a number from 1 to 65535", hint=SPEC_HINT) from None
    user = unquote(parts.username) if parts.username else None
    password = os.environ.get(PASSWORD_ENV)
    if user and not password:
        raise TransportSpecError(
            f"{spec} names a user but {PASSWORD_ENV} is not set", hint=f"export {PASSWORD_ENV}=..."
        )
    return SmtpTransport(
        host=parts.hostname,
        port=port,
        tls=tls,
        user=user,
        password=password if user else None,
        timeout=settings.delivery.smtp_timeout,
        retry_base_seconds=settings.delivery.retry_base_seconds,
    )

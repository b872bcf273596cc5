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
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.config import Settings
from pipeline.errors import ExitCode, MailFault
from pipeline.mail.message import from_wire
from pipeline.mail.replies import Reply as Reply  # where callers have always found it
from pipeline.mail.smtp_client import (
    ConnectionLost,
    Item,
    Pace,
    SmtpClient,
    SslSmtpClient,
    TransactionTimedOut,
)
from pipeline.mail.smtp_client import content as _content

PASSWORD_ENV = "PIPELINE_SMTP_PASSWORD"
SPEC_HINT = 'use "outbox:PATH" or "smtp://[user@]host:port[?tls=starttls|ssl]"'
_DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
RECONNECT_ATTEMPTS = 3


class TransportError(MailFault):
    """The transport cannot be used: bad spec, server unreachable, login refused."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, field="transport", hint=hint)


class TransportSpecError(TransportError):
    """A transport spec (``delivery.transport`` or ``--transport``) that cannot be read."""

    exit_code = ExitCode.CONFIG


class Connection(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        """Hand one message over; the reply says whether it was accepted.

        Raises ``TransportError`` when the transport is unusable (after reconnecting).
        """

    def send_many(self, items: Sequence[Item], pace: Pace | None = None) -> Generator[Reply, None, None]:
        """Hand over (envelope sender, recipient, message) items in order, yielding each
        one's reply as it comes; ``pace`` is called before each message goes out (the
        rate limit).

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
        return Reply(250, f"2.0.0 saved in the outbox as {self._outbox.deliver(message)}", "DATA")

    def send_many(self, items: Sequence[Item], pace: Pace | None = None) -> Generator[Reply, None, None]:
        for sender, recipient, message in items:
            if pace is not None:
                pace()
            yield self.send(sender, recipient, _content(message))

    def close(self) -> None:
        pass


# --- SMTP --------------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    tls: str  # "none", "starttls", "ssl"
    user: str | None
    password: str | None
    timeout: float
    retry_base_seconds: float = 1.0
    # The most one transaction may take, end to end (``timeout`` bounds each wait).
    transaction_timeout: float = 120.0

    @property
    def description(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"smtp://{who}{self.host}:{self.port}" + ("" if self.tls == "none" else f"?tls={self.tls}")

    def open(self) -> Connection:
        return SmtpConnection(self)

    def connect(self) -> SmtpClient:
        """A new, ready SMTP session (greeted, TLS, logged in), within one transaction timeout."""
        hostname = socket.gethostname()  # not getfqdn(): that may wait on DNS
        limits = {"timeout": self.timeout, "transaction_timeout": self.transaction_timeout}
        client: SmtpClient
        try:
            if self.tls == "ssl":
                client = SslSmtpClient(local_hostname=hostname, context=ssl.create_default_context(), **limits)
            else:
                client = SmtpClient(local_hostname=hostname, **limits)
            client.begin("the greeting")
            client.connect(self.host, self.port)
            client.ehlo()
            if self.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if self.user:
                client.login(self.user, self.password or "")
            client.end()
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
        except (OSError, smtplib.SMTPException, TransactionTimedOut) as exc:
            raise ConnectionLost(f"cannot talk to {self.description}: {exc}") from None
        return client


class SmtpConnection:
    """One reused SMTP session; reconnects when the server drops it."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._client: SmtpClient | None = None

    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        (reply,) = self.send_many([(sender, recipient, message)])  # consumed to the end
        return reply

    def send_many(self, items: Sequence[Item], pace: Pace | None = None) -> Generator[Reply, None, None]:
        done = 0
        failures = 0
        complete = False
        try:
            while done < len(items):
                try:
                    if self._client is None:
                        self._client = self.transport.connect()
                    for reply in self._client.transactions(items[done:], pace):
                        done += 1
                        failures = 0
                        yield reply
                except TransactionTimedOut as exc:
                    # The server is slow or stuck on this message: drop the connection
                    # (a late reply must not be read as the next one's), defer this
                    # message like a 4xx, and go on with the rest on a new connection.
                    self._discard()
                    done += 1
                    yield Reply(451, f"4.4.1 {exc}: connection dropped, to be tried again", exc.stage)
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
        transaction_timeout=settings.delivery.smtp_transaction_timeout,
    )

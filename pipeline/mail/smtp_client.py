"""One SMTP session on the wire: pipelined transactions, each within a deadline.

smtplib's own ``sendmail`` waits for each reply in turn and rewrites the whole
message twice with regular expressions; for a newsletter that is most of the cost
of sending. Connection set-up (EHLO, STARTTLS, AUTH) stays smtplib's, but every
reply, smtplib's included, is read here, so that one deadline bounds the whole
transaction: ``smtp_timeout`` only bounds each wait, and a server that trickles a
``250-`` line every few seconds would otherwise hold a sending thread forever.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pipeline.mail.message import to_wire
from pipeline.mail.replies import DATA, MAIL, RCPT, Reply

_MAX_REPLY_LINE = 8193  # smtplib's limit (RFC 5321 asks for 512; some servers say more)
_RECEIVE_BYTES = 65536
_ENVELOPE = (MAIL, RCPT, DATA)

Pace = Callable[[], None]
# (envelope sender, recipient, message): the sender is per message (VERP: each names its
# delivery, so a bounce that quotes nothing still says whose it is); the message as
# bytes, or a function that builds it when its turn comes (so building overlaps the
# network wait instead of delaying the first send).
Item = tuple[str, str, bytes | Callable[[], bytes]]


def content(message: bytes | Callable[[], bytes]) -> bytes:
    return message if isinstance(message, bytes) else message()


class ConnectionLost(Exception):
    """The server went away in the middle of a transaction."""


class TransactionTimedOut(Exception):
    """A transaction (or the greeting) took longer than its deadline. The connection is
    useless afterwards: a reply may still be on its way."""

    def __init__(self, stage: str, limit: float) -> None:
        super().__init__(f"no complete reply to {stage} within {limit:g} s")
        self.stage = stage
        self.limit = limit


class SmtpClient(smtplib.SMTP):
    """An SMTP session whose reads and writes observe ``deadline`` (monotonic time).

    ``begin(stage)`` starts a deadline of ``transaction_timeout`` seconds; ``end()``
    lifts it. Without one, each wait is bounded by ``timeout`` alone (as in smtplib).
    """

    def __init__(self, *, timeout: float, transaction_timeout: float, **kwargs: Any) -> None:
        self._inbox = bytearray()  # received, not yet read
        self._armed: float | None = None  # the socket's current timeout
        self.transaction_timeout = transaction_timeout
        self.deadline: float | None = None
        self.stage = MAIL  # what the current wait is for, to say which reply never came
        super().__init__(timeout=timeout, **kwargs)

    def begin(self, stage: str) -> None:
        self.deadline = time.monotonic() + self.transaction_timeout
        self.stage = stage

    def end(self) -> None:
        self.deadline = None

    # --- reading and writing under the deadline ------------------------------------------

    def _arm(self) -> bool:
        """Bound the next socket operation by what is left of the deadline (and by
        ``timeout``); True when the deadline is the tighter bound."""
        wait = float(self.timeout)
        limited = False
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TransactionTimedOut(self.stage, self.transaction_timeout)
            limited = left < wait
            wait = min(wait, left)
        if wait != self._armed and self.sock is not None:
            self.sock.settimeout(wait)  # a system call: only when the bound changes
            self._armed = wait
        return limited

    def _receive(self) -> bytes:
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        limited = self._arm()
        try:
            data: bytes = self.sock.recv(_RECEIVE_BYTES)
        except TimeoutError:
            if limited:
                raise TransactionTimedOut(self.stage, self.transaction_timeout) from None
            raise
        return data

    def read_reply(self) -> tuple[int, bytes]:
        """One reply, all its lines: (code, text lines joined by newlines); code -1 if
        the server's code is not a number."""
        inbox = self._inbox
        lines = []
        start = 0  # of the current line in the inbox
        while True:
            end = inbox.find(b"\n", start)
            if end < 0:
                if len(inbox) - start >= _MAX_REPLY_LINE:
                    self.close()
                    raise smtplib.SMTPServerDisconnected("the server sent a reply line that never ends")
                chunk = self._receive()
                if not chunk:
                    self.close()
                    raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
                inbox += chunk
                continue
            line = bytes(inbox[start : end + 1])
            start = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        del inbox[:start]
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        return code, lines[0] if len(lines) == 1 else b"\n".join(lines)

    def getreply(self) -> tuple[int, bytes]:
        """smtplib's reader, replaced, so that EHLO, STARTTLS and AUTH observe the
        deadline too."""
        return self.read_reply()

    def send(self, s: Any) -> None:  # bytes or str, as smtplib takes
        if self.sock is not None:
            self._arm()
        try:
            super().send(s)
        except smtplib.SMTPServerDisconnected:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise TransactionTimedOut(self.stage, self.transaction_timeout) from None
            raise

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        reply: tuple[int, bytes] = super().starttls(*args, **kwargs)
        # Whatever arrived before the TLS handshake must not be read as said inside it.
        self._inbox.clear()
        return reply

    def close(self) -> None:
        self._inbox.clear()
        self._armed = None
        super().close()

    # --- transactions --------------------------------------------------------------------

    def _read(self, stage: str) -> tuple[int, bytes]:
        self.stage = stage
        return self.read_reply()

    def transaction(self, sender: str, recipient: str, message: bytes) -> Reply:
        """One transaction without pipelining, each command waiting for its reply."""
        self.begin(MAIL)
        data = to_wire(message)
        body = " BODY=8BITMIME" if self.has_extn("8bitmime") else ""
        commands = (f"MAIL FROM:<{sender}>{body}\r\n".encode("ascii"), f"RCPT TO:<{recipient}>\r\n".encode("ascii"))
        replies = []
        for stage, command in zip(_ENVELOPE, (*commands, b"DATA\r\n"), strict=True):
            self.send(command)
            replies.append(self._read(stage))
            if replies[-1][0] >= 400:
                break
        failure = _failure(replies)
        if failure is None and replies[-1][0] == 354:
            self.send(data)
            return _reply(self._read(DATA), DATA)
        try:
            if replies[-1][0] == 354:
                # The server took DATA though MAIL or RCPT failed: end the empty message.
                self.send(b".\r\n")
                self.read_reply()
            self.rset()
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()  # the answer stands; the next message reconnects
        return failure or _reply(replies[-1], _ENVELOPE[len(replies) - 1])

    def transactions(self, items: Sequence[Item], pace: Pace | None) -> Iterator[Reply]:
        """Several transactions on this connection, one reply per item, in order; each
        within ``transaction_timeout`` (time spent in ``pace`` not counted).

        With PIPELINING, each write carries one message's content and the next
        message's MAIL, RCPT and DATA (RFC 2920 allows content first in a group), so a
        message costs one round trip instead of two; and the next message is built
        while the server is busy with the current one.
        """
        if not items:
            return
        try:
            if not self.has_extn("pipelining"):
                for sender, recipient, message in items:
                    if pace is not None:
                        pace()
                    yield self.transaction(sender, recipient, content(message))
                return
            yield from self._pipelined(items, pace)
        finally:
            self.end()

    def _pipelined(self, items: Sequence[Item], pace: Pace | None) -> Iterator[Reply]:
        body = " BODY=8BITMIME" if self.has_extn("8bitmime") else ""

        def envelope(index: int) -> bytes:
            if index >= len(items):
                return b""
            sender, recipient, _message = items[index]
            return f"MAIL FROM:<{sender}>{body}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii")

        self.begin(MAIL)
        self.send(envelope(0))
        upcoming = content(items[0][2])
        for index in range(len(items)):
            self.begin(MAIL)
            message = upcoming
            replies = [self._read(stage) for stage in _ENVELOPE]
            following = envelope(index + 1)
            failure = _failure(replies)
            accepted = failure is None and replies[2][0] == 354
            if accepted:
                if pace is not None and self.deadline is not None:
                    paced = time.monotonic()
                    pace()
                    self.deadline += time.monotonic() - paced  # our own wait is not the server's
                self.send(to_wire(message) + following)
            else:
                # Refused before its content: end an accepted DATA, reset, go on to the next.
                ended = replies[2][0] == 354
                self.send((b".\r\n" if ended else b"") + b"RSET\r\n" + following)
                if ended:
                    self.read_reply()
                self.read_reply()
            if index + 1 < len(items):
                upcoming = content(items[index + 1][2])  # while the server works
            yield _reply(self._read(DATA), DATA) if accepted else failure or _reply(replies[2], DATA)


class SslSmtpClient(SmtpClient, smtplib.SMTP_SSL):
    pass


def _failure(replies: list[tuple[int, bytes]]) -> Reply | None:
    """The first refusal among the envelope's replies, with the command it answers."""
    for stage, raw in zip(_ENVELOPE, replies, strict=False):
        if raw[0] >= 400:
            return _reply(raw, stage)
    return None


def _reply(raw: tuple[int, bytes], stage: str) -> Reply:
    code, text = raw
    if code == 421 or code == -1:
        raise ConnectionLost(text.decode("utf-8", "replace"))
    return Reply(code, " ".join(text.decode("utf-8", "replace").split()), stage)

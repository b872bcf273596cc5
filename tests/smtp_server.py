"""A real SMTP server for the delivery tests: aiosmtpd on 127.0.0.1, scriptable.

It records every message it accepts and can misbehave on purpose: answer 451
a few times before accepting, answer 550 5.1.1 for chosen addresses, refuse our
sender (MAIL FROM), answer chosen RCPT or end-of-DATA replies per address, trickle
"250-" continuation lines forever for chosen addresses, drop the connection when
chosen messages arrive, and slow down.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from pipeline.channels.newsletter import Newsletter, render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.site.build import load_posts
from tests.conftest import make_project


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_to: str
    data: bytes

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Behaviour:
    temp_failures: int = 0  # 451 this many times per address before accepting it
    reject: set[str] = field(default_factory=set)  # answered 550 5.1.1
    drop_at: set[int] = field(default_factory=set)  # drop the connection when message number N arrives (1-based)
    delay: float = 0.0  # seconds before answering each message
    pipelining: bool = True  # advertise PIPELINING (aiosmtpd handles it either way)
    mail_from_reply: str | None = None  # e.g. "550 5.1.0 Sender address rejected": refuse every MAIL FROM
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> its RCPT reply (a refusal)
    data_replies: dict[str, str] = field(default_factory=dict)  # address -> the reply to its message
    trickle: set[str] = field(default_factory=set)  # RCPT of these: "250-" lines every trickle_every s, forever
    trickle_every: float = 0.2


class Recorder:
    """The aiosmtpd handler."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.messages: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.data_seen = 0
        self.dropped = 0
        self.connections = 0
        self.mail_from_seen = 0
        self.trickling = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, threading.Event]] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.connections += 1
        if self.behaviour.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        with self._lock:
            self.mail_from_seen += 1
        if self.behaviour.mail_from_reply:
            return self.behaviour.mail_from_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        key = address.lower()
        if key in self.behaviour.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if key in self.behaviour.rcpt_replies:
            return self.behaviour.rcpt_replies[key]
        if key in self.behaviour.trickle:
            with self._lock:
                self.trickling += 1
            # Never finishes the reply: each line comes well within any read timeout.
            while not server.transport.is_closing():
                await server.push("250-still checking, please wait")
                await asyncio.sleep(self.behaviour.trickle_every)
            return "451 4.3.0 gone"
        with self._lock:
            self.rcpt_attempts[key] += 1
            attempt = self.rcpt_attempts[key]
        if attempt <= self.behaviour.temp_failures:
            return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_seen += 1
            number = self.data_seen
        if number in self.behaviour.drop_at:
            with self._lock:
                self.dropped += 1
            server.transport.abort()  # no reply at all: the client sees a dead connection
            return "421 4.4.2 connection dropped by the test"
        if self.behaviour.delay:
            await asyncio.sleep(self.behaviour.delay)
        refused = [
            self.behaviour.data_replies[r.lower()]
            for r in envelope.rcpt_tos
            if r.lower() in self.behaviour.data_replies
        ]
        if refused:
            return refused[0]
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append(Received(envelope.mail_from, rcpt, bytes(envelope.content)))
            count = len(self.messages)
            for target, event in self._waiters:
                if count >= target:
                    event.set()
        return "250 2.0.0 OK: queued"

    def event_at(self, count: int) -> threading.Event:
        """An event set once ``count`` messages have been accepted."""
        event = threading.Event()
        with self._lock:
            self._waiters.append((count, event))
            if len(self.messages) >= count:
                event.set()
        return event

    def by_recipient(self) -> Counter[str]:
        with self._lock:
            return Counter(m.rcpt_to.lower() for m in self.messages)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_server(behaviour: Behaviour | None = None) -> Iterator[tuple[Recorder, str]]:
    """A running server and the transport spec that reaches it."""
    recorder = Recorder(behaviour or Behaviour())
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        yield recorder, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# --- a project wired for delivery tests ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef0123456789"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


def delivery_project(tmp_path: Path, **delivery: object) -> Settings:
    """A project folder in tmp_path (sample posts, templates, its own state/) whose
    pipeline.toml has these [delivery] settings, so a subprocess sees them too."""
    make_project(tmp_path, posts=ROOT / "posts")
    values: dict[str, object] = {
        "transport": "outbox:state/outbox",
        "concurrency": 4,
        "rate_per_second": 0,
        "max_attempts": 4,
        "retry_base_seconds": 0.02,
        "batch_size": 10,
        "smtp_timeout": 10,
    }
    values.update(delivery)
    config = tmp_path / "pipeline.toml"
    section = "[delivery]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items()) + "\n"
    text = re.sub(r"(?ms)^\[delivery\]\n.*?(?=^\[)", lambda _m: section, config.read_text(encoding="utf-8"))
    config.write_text(text, encoding="utf-8")
    return load_settings(config)


def add_subscribers(store: Store, count: int, *, status: str = "active", prefix: str = "reader") -> list[str]:
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    store.add_subscribers_bulk(
        [{"email": e, "name": f"Reader {i}", "status": status, "source": "test"} for i, e in enumerate(emails)]
    )
    return emails


def sample_newsletter(settings: Settings) -> Newsletter:
    posts, errors = load_posts(settings)
    assert posts and not errors
    post = sorted(posts, key=lambda p: p.slug)[0]
    return render_post_newsletter(post, settings, make_environment(settings))

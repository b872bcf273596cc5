"""The mail sections of ``pipeline.toml``: ``[newsletter]`` (who it is from), ``[delivery]``
(how it is sent) and ``[bounces]`` (where refusals come back)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from msgspec import Meta

from pipeline.config_base import Checks, Strict, email_address


class NewsletterSettings(Strict, frozen=True, kw_only=True):
    from_name: str
    from_address: str
    reply_to: str | None = None
    list_id: str
    max_html_bytes: Annotated[int, Meta(ge=1000)] = 102_000

    checks: ClassVar[Checks] = {"from_address": email_address, "reply_to": email_address}

    @property
    def from_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()


class DeliverySettings(Strict, frozen=True, kw_only=True):
    transport: str = "outbox:state/outbox"
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    rate_per_second: Annotated[float, Meta(ge=0)] = 0
    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 5
    retry_base_seconds: Annotated[float, Meta(ge=0)] = 2.0
    dkim_key: Path | None = None
    dkim_selector: str | None = None
    smtp_timeout: Annotated[float, Meta(gt=0)] = 30.0
    # The most one message's SMTP transaction may take, from MAIL FROM to the final reply
    # (smtp_timeout bounds each wait; a server trickling "250-" lines never trips it). On
    # expiry the connection is dropped and that delivery is retried later, like a 4xx.
    smtp_transaction_timeout: Annotated[float, Meta(gt=0)] = 120.0
    # Deliveries each sending thread holds at a time. At most concurrency x batch_size
    # messages are "in flight" (marked sending, outcome not yet recorded): after a crash
    # (kill -9), only those can reach a recipient twice; 4 x 4 = 16 by default.
    # 1 is strictest; larger is faster on a fast relay, with a larger crash window.
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 4
    # Pause the campaign when more than this share of a run's attempts fail permanently:
    # that many refusals point at the relay, our sender or a stale list, not at a few bad
    # addresses. `pipeline send --resume` continues it. 1 turns the breaker off.
    pause_failure_share: Annotated[float, Meta(ge=0, le=1)] = 0.05
    # MAIL FROM (where bounces go); defaults to newsletter.from_address.
    envelope_from: str | None = None
    # Ask DNS whether an address's domain accepts mail when adding or importing.
    check_deliverability: bool = False

    checks: ClassVar[Checks] = {"envelope_from": email_address}


class BouncesSettings(Strict, frozen=True, kw_only=True):
    """Where bounces and complaints come back, and how the scheduler reads them."""

    # The mailbox that bounces and feedback reports reach. A campaign message's envelope
    # sender is LOCAL+TOKEN@DOMAIN of it (VERP), so the mailbox must take "+" sub-addresses.
    # Default: delivery.envelope_from, else bounces@ the From domain.
    address: str | None = None
    verp: bool = True
    # Read by `pipeline bounces process` and by the scheduler: a Maildir folder, or an
    # IMAP mailbox (imaps://user@host[:port][/FOLDER]; password from PIPELINE_IMAP_PASSWORD).
    maildir: Path | None = None
    imap: str | None = None
    # How often the scheduler reads the mailbox; unset: it does not.
    poll_seconds: Annotated[float, Meta(gt=0)] | None = None
    # Temporary failures (4.x.x) that bounce an address: this many within this many days.
    temporary_limit: Annotated[int, Meta(ge=1)] = 3
    temporary_days: Annotated[float, Meta(gt=0)] = 30

    checks: ClassVar[Checks] = {"address": email_address}

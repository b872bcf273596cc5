"""The sending threads of one campaign run (``campaign_run`` tells how a run works).

The ledger thread puts jobs of claimed deliveries in ``jobs``; each thread builds every
claim's own message, hands the job to its connection, and puts one outcome per claim
back in ``outcomes``. The threads never touch the ledger.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.campaigns import Campaign
from pipeline.ledger.deliveries import Claim, Outcome
from pipeline.ledger.engine import utcnow
from pipeline.ledger.tokens import make_bounce_token, make_token
from pipeline.mail.message import MessageTemplate, message_id_for
from pipeline.mail.transports import Connection, Reply, Transport
from pipeline.ratelimit import RateLimiter

_POLL_SECONDS = 0.25


def sender_refused(sender: str, reply: Reply) -> str:
    return (
        f"the relay refused our sender address <{sender}> at MAIL FROM: {reply}. That is a fault of our "
        "sender or relay, not of the subscribers: nobody was marked bounced and no attempt was counted"
    )


class SendingThreads:
    """``delivery.concurrency`` threads, each with its own connection. ``stop`` is the
    run's: once set (abort or pause) they send nothing more; ``fail`` and ``pause`` set it."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        campaign: Campaign,
        template: MessageTemplate,
        *,
        secret: bytes,
        stop: threading.Event,
        fail: Callable[[PipelineError], None],
        pause: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.campaign = campaign
        self.template = template
        self.secret = secret
        self.stop = stop
        self.fail = fail
        self.pause = pause
        self.jobs: queue.SimpleQueue[list[Claim] | None] = queue.SimpleQueue()
        self.outcomes: queue.SimpleQueue[list[Outcome]] = queue.SimpleQueue()
        rate = settings.delivery.rate_per_second
        # Pacing: one message per 1/rate seconds across all threads (the one limiter).
        self.limiter = RateLimiter(1, 1.0 / rate) if rate > 0 else None
        self.threads = [
            threading.Thread(target=self._work, args=(transport.open(),), name=f"send-{i}", daemon=True)
            for i in range(settings.delivery.concurrency)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def close(self) -> None:
        """Tell each thread to end once the jobs before have been done, and wait for them."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join(timeout=30)

    def gather(self, arrived: list[Outcome], *, block: bool) -> int:
        """Move outcomes handed back by the workers into ``arrived`` (waiting briefly
        for the first if ``block``); returns how many came."""
        before = len(arrived)
        try:
            arrived += self.outcomes.get(timeout=_POLL_SECONDS) if block else self.outcomes.get_nowait()
            while True:
                arrived += self.outcomes.get_nowait()
        except queue.Empty:
            pass
        return len(arrived) - before

    def _work(self, connection: Connection) -> None:
        # Outcomes go back a job at a time: one hand-over per job instead of one per
        # message keeps the ledger thread from waking (and taking the GIL) thousands of
        # times a second. They stay within the in-flight window either way.
        try:
            while (job := self.jobs.get()) is not None:
                outcomes: list[Outcome] = []
                if not self.stop.is_set():
                    try:
                        items = [
                            (self._envelope_sender(claim), claim.email, functools.partial(self._message, claim))
                            for claim in job
                        ]
                        with contextlib.closing(
                            connection.send_many(items, self.limiter.wait if self.limiter else None)
                        ) as replies:
                            for reply in replies:
                                if reply.sender_refused:  # about us, not about this recipient
                                    self.pause(sender_refused(items[len(outcomes)][0], reply))
                                    break
                                outcomes.append(self._outcome(job[len(outcomes)], reply))
                    except PipelineError as exc:
                        self.fail(exc)
                    except Exception as exc:  # a bug: keep the claims pending and stop the run
                        self.fail(PipelineError(f"internal error while sending: {exc!r}"))
                # Whatever was not attempted goes back to pending, uncounted.
                outcomes += [Outcome(c.delivery_id, c.subscriber_id, "release") for c in job[len(outcomes) :]]
                self.outcomes.put(outcomes)
        finally:
            connection.close()

    def _envelope_sender(self, claim: Claim) -> str:
        """MAIL FROM for one delivery: the bounce mailbox with this delivery's signed
        token (VERP), so a bounce names its delivery even when it quotes nothing."""
        token = make_bounce_token(self.campaign.id, claim.subscriber_id, self.secret, self.campaign.issued_at)
        return self.settings.verp_sender(token)

    def _message(self, claim: Claim) -> bytes:
        token = make_token("unsubscribe", claim.subscriber_id, self.secret, self.campaign.issued_at)
        manage = (
            make_token("manage", claim.subscriber_id, self.secret, self.campaign.issued_at)
            if self.template.has_manage_link
            else None
        )
        return self.template.personalise_wire(
            to_address=claim.email,
            to_name=claim.name,
            token=token,
            manage_token=manage,
            message_id=message_id_for(self.campaign.id, claim.subscriber_id, self.template.from_domain),
            date=datetime.now(UTC).replace(microsecond=0),
        )

    def _outcome(self, claim: Claim, reply: Reply) -> Outcome:
        if reply.ok:
            return Outcome(claim.delivery_id, claim.subscriber_id, "sent", str(reply))
        if reply.temporary:
            attempts = claim.attempts + 1
            if attempts >= self.settings.delivery.max_attempts:
                return Outcome(
                    claim.delivery_id, claim.subscriber_id, "failed", f"gave up after {attempts} attempts: {reply}"
                )
            delay = self.settings.delivery.retry_base_seconds * 2 ** (attempts - 1)
            return Outcome(
                claim.delivery_id, claim.subscriber_id, "retry", str(reply), utcnow() + timedelta(seconds=delay)
            )
        # Permanent: the subscriber is bounced only when the reply is about their address.
        status = "bounced" if reply.bad_mailbox else "failed"
        return Outcome(claim.delivery_id, claim.subscriber_id, status, str(reply))

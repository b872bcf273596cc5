"""Campaigns and the send loop: every active subscriber gets each newsletter once.

``start_campaign`` freezes the newsletter and writes one pending delivery per
active subscriber, in one transaction. ``deliver`` sends what is pending; the
CLI (``pipeline send``, ``send --resume``) and the scheduler both call it.

How a delivery moves, and why it survives a crash (``kill -9`` included):

    pending --claim--> sending --SMTP--> sent | failed | bounced
       ^                  |
       +--- 4xx (later) --+   (and at start-up: 'sending' left by a dead sender)

The calling thread is the only one that touches the ledger. It claims a batch
(marks it 'sending', commits), hands it to a worker thread, and commits each
outcome as it comes back. Worker threads each own one reused SMTP connection,
personalise each message, respect a shared messages-per-second limit and send.
At most ``max_in_flight`` deliveries are 'sending' at any moment; after a crash
those, and only those, are sent again, so a subscriber can get a second copy
only if their message was in flight when the process died. The Message-ID is
the same on both copies, which lets receiving servers drop the duplicate.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import LEASE_SECONDS, Campaign, Claim, Outcome, Store, utcnow
from pipeline.ledger.subscribers import normalise_address
from pipeline.ledger.tokens import load_secret, make_token
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.message import MessageTemplate, message_id_for
from pipeline.mail.transports import Connection, Reply, Transport, send_one

_POLL_SECONDS = 0.25
_MAX_IDLE_WAIT = 1.0


# --- results --------------------------------------------------------------------------


@dataclass
class CampaignResult:
    key: str
    total: int = 0
    sent: int = 0  # in this run
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    retried: int = 0  # 4xx answers, to be tried again
    recovered: int = 0  # left 'sending' by a sender that died; sent again
    remaining: int = 0  # pending or sending when the run ended
    finished: bool = False
    busy_with: str | None = None  # another sender holds this campaign
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (address, status, reply)


@dataclass
class Summary:
    campaigns: list[CampaignResult] = field(default_factory=list)
    seconds: float = 0.0

    def _sum(self, name: str) -> int:
        return sum(int(getattr(c, name)) for c in self.campaigns)

    @property
    def sent(self) -> int:
        return self._sum("sent")

    @property
    def failed(self) -> int:
        return self._sum("failed")

    @property
    def bounced(self) -> int:
        return self._sum("bounced")

    @property
    def skipped(self) -> int:
        return self._sum("skipped")

    @property
    def remaining(self) -> int:
        return self._sum("remaining")

    @property
    def ok(self) -> bool:
        """Nothing failed or bounced in this run."""
        return self.failed == 0 and self.bounced == 0


@dataclass(frozen=True)
class Progress:
    """Passed to the ``progress`` callback after every batch of outcomes."""

    campaign: str
    total: int
    sent: int  # whole campaign, not just this run
    failed: int  # failed + bounced
    remaining: int


ProgressCallback = Callable[[Progress], None]


class DeliveryAborted(PipelineError):
    """The transport failed mid-run. Everything not sent is pending again; the summary
    says what was done. Fix the cause, then ``pipeline send --resume``."""

    def __init__(self, cause: PipelineError, summary: Summary) -> None:
        super().__init__(cause.message, field=cause.field, hint=cause.hint)
        self.summary = summary


# --- the rate limit -------------------------------------------------------------------


class RateLimiter:
    """At most ``per_second`` messages a second across all threads (0: no limit).

    Each caller books the next free slot under a lock and sleeps outside it, so the
    limit holds without threads waiting on each other's sleep.
    """

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


# --- campaigns --------------------------------------------------------------------------


def start_campaign(
    store: Store, settings: Settings, newsletter: Newsletter, *, kind: str | None = None, now: datetime | None = None
) -> int:
    """The campaign for ``newsletter`` with one pending delivery per active subscriber,
    created in one transaction. The same newsletter key gives the same campaign and
    no new rows, so calling this twice (a job that fires twice) is harmless."""
    MessageTemplate(newsletter, settings)  # a broken template fails here, before any row exists
    kind = kind or ("digest" if newsletter.key.startswith("digest-") else "post")
    campaign, _created = store.create_campaign(newsletter, kind, now=now)
    return campaign.id


def max_in_flight(settings: Settings) -> int:
    """The most deliveries that can be 'sending' at once: two batches per worker (one
    being sent, one waiting), so that the ledger is visited once per round, not per batch."""
    return 2 * settings.delivery.concurrency * settings.delivery.batch_size


def deliver(
    store: Store,
    settings: Settings,
    transport: Transport,
    campaign_id: int | None = None,
    progress: ProgressCallback | None = None,
    *,
    wait_for_retries: bool = True,
) -> Summary:
    """Send what is pending: of one campaign, or of every unfinished one (resume).

    With ``wait_for_retries`` the run waits for deferred (4xx) deliveries to come due
    and ends when every delivery is final; without, it returns once only deferred
    ones are left (the scheduler calls again later). Raises ``DeliveryAborted`` when
    the transport is unusable.
    """
    started = time.monotonic()
    summary = Summary()
    if campaign_id is None:
        todo = store.list_campaigns(unfinished=True)
    else:
        campaign = store.get_campaign(campaign_id)
        if campaign is None:
            raise PipelineError(f"no campaign with id {campaign_id}", field="campaign")
        todo = [campaign]
    if not todo:
        return summary
    secret = load_secret(settings)
    signer = DkimSigner.from_settings(settings)
    owner = store.new_lease_owner()
    try:
        for campaign in todo:
            run = _CampaignRun(store, settings, transport, campaign, secret, signer, owner, progress, wait_for_retries)
            summary.campaigns.append(run.result)
            run.execute()
    except _Aborted as aborted:
        raise DeliveryAborted(aborted.cause, summary) from None
    finally:
        summary.seconds = time.monotonic() - started
    return summary


class _Aborted(Exception):
    def __init__(self, cause: PipelineError) -> None:
        self.cause = cause


class _CampaignRun:
    """One campaign, one run: the claiming loop plus its worker threads."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        transport: Transport,
        campaign: Campaign,
        secret: bytes,
        signer: DkimSigner | None,
        owner: str,
        progress: ProgressCallback | None,
        wait_for_retries: bool,
    ) -> None:
        self.store = store
        self.settings = settings
        self.transport = transport
        self.campaign = campaign
        self.secret = secret
        self.signer = signer
        self.owner = owner
        self.progress = progress
        self.wait_for_retries = wait_for_retries
        self.result = CampaignResult(key=campaign.key)
        self.jobs: queue.SimpleQueue[list[Claim] | None] = queue.SimpleQueue()
        self.outcomes: queue.SimpleQueue[list[Outcome]] = queue.SimpleQueue()
        self.abort = threading.Event()
        self.error: PipelineError | None = None
        self.limiter = RateLimiter(settings.delivery.rate_per_second)
        self.sender = settings.envelope_sender
        self.counts: dict[str, int] = {}

    # --- the claiming loop (this thread only touches the ledger) -------------------------

    def execute(self) -> None:
        holder = self.store.acquire_lease(self.campaign.id, self.owner)
        if holder is not None:
            self.result.busy_with = holder
            return
        try:
            self.result.recovered, _held = self.store.requeue_in_flight(self.campaign.id)
            self.counts = self.store.delivery_counts(self.campaign.id)
            self.result.total = sum(self.counts.values())
            self.template = MessageTemplate(
                self.store.campaign_newsletter(self.campaign.id), self.settings, signer=self.signer
            )
            self._loop()
            self.result.finished = self.store.finish_campaign(self.campaign.id)
            counts = self.store.delivery_counts(self.campaign.id)
            self.result.remaining = counts["pending"] + counts["sending"]
            self.result.problems = self.store.problem_deliveries(self.campaign.id, limit=20)
        finally:
            self.store.release_lease(self.campaign.id, self.owner)
        if self.error is not None:
            raise _Aborted(self.error)

    def _loop(self) -> None:
        delivery = self.settings.delivery
        batch_size = delivery.batch_size
        limit = max_in_flight(self.settings)
        workers = [
            threading.Thread(target=self._work, args=(self.transport.open(),), name=f"send-{i}", daemon=True)
            for i in range(delivery.concurrency)
        ]
        for worker in workers:
            worker.start()
        in_flight = 0  # claimed and not yet recorded, arrived outcomes included
        arrived: list[Outcome] = []
        flush_at = max(limit // 4, 1)
        renewed = time.monotonic()
        try:
            while True:
                claimed = False
                room = limit - in_flight
                # Claim only when half the window is free, then fill it; record outcomes a
                # quarter window at a time. Few, large ledger transactions leave the
                # sending threads the interpreter lock most of the time.
                if not self.abort.is_set() and (room >= limit // 2 or in_flight == 0):
                    claims, skipped = self.store.claim_deliveries(self.campaign.id, room)
                    self._count_skipped(skipped)
                    for start in range(0, len(claims), batch_size):
                        self.jobs.put(claims[start : start + batch_size])
                    in_flight += len(claims)
                    claimed = bool(claims or skipped)
                block = in_flight > len(arrived) and not claimed
                got = self._gather(arrived, block=block)
                if arrived and (len(arrived) >= flush_at or len(arrived) == in_flight or (block and not got)):
                    self._record(arrived)
                    in_flight -= len(arrived)
                    arrived = []
                if block and not got and not any(w.is_alive() for w in workers):
                    # Cannot happen unless a worker crashed outside its guard; its claims
                    # stay 'sending' and the next run sends them again.
                    self._fail(PipelineError("every sending thread stopped unexpectedly"))
                    return
                if time.monotonic() - renewed > LEASE_SECONDS / 3:
                    self.store.renew_lease(self.campaign.id, self.owner)
                    renewed = time.monotonic()
                if in_flight or claimed:
                    continue
                if self.abort.is_set():
                    return
                due = self.store.next_retry_at(self.campaign.id)
                if due is None or not self.wait_for_retries:
                    return
                time.sleep(min(max((due - utcnow()).total_seconds(), 0.0), _MAX_IDLE_WAIT))
        except BaseException:
            # Interrupted (Ctrl-C) or a bug: stop the workers, keep what they finished.
            self.abort.set()
            deadline = time.monotonic() + 10
            while in_flight > len(arrived) and time.monotonic() < deadline:
                self._gather(arrived, block=True)
            self._record(arrived)
            raise
        finally:
            for _ in workers:
                self.jobs.put(None)
            for worker in workers:
                worker.join(timeout=30)

    def _gather(self, arrived: list[Outcome], *, block: bool) -> int:
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

    def _record(self, outcomes: list[Outcome]) -> None:
        """Commit outcomes to the ledger, then count them."""
        if not outcomes:
            return
        self.store.record_outcomes(outcomes)
        for outcome in outcomes:
            if outcome.status == "sent":
                self.result.sent += 1
                self.counts["sent"] += 1
            elif outcome.status in ("failed", "bounced"):
                setattr(self.result, outcome.status, getattr(self.result, outcome.status) + 1)
                self.counts[outcome.status] += 1
            elif outcome.status == "retry":
                self.result.retried += 1
        self._report()

    def _count_skipped(self, skipped: int) -> None:
        if skipped:
            self.result.skipped += skipped
            self.counts["skipped"] += skipped
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        c = self.counts
        done = c["sent"] + c["failed"] + c["bounced"] + c["skipped"]
        self.progress(
            Progress(
                campaign=self.campaign.key,
                total=self.result.total,
                sent=c["sent"],
                failed=c["failed"] + c["bounced"],
                remaining=self.result.total - done,
            )
        )

    # --- worker threads -----------------------------------------------------------------

    def _work(self, connection: Connection) -> None:
        # Outcomes go back a batch at a time: one hand-over per batch instead of one per
        # message keeps the ledger thread from waking (and taking the GIL) thousands of
        # times a second. They stay within the in-flight window either way.
        try:
            while (batch := self.jobs.get()) is not None:
                outcomes: list[Outcome] = []
                if not self.abort.is_set():
                    try:
                        items = [(claim.email, functools.partial(self._message, claim)) for claim in batch]
                        for reply in connection.send_many(self.sender, items, self.limiter.wait):
                            outcomes.append(self._outcome(batch[len(outcomes)], reply))
                    except PipelineError as exc:
                        self._fail(exc)
                    except Exception as exc:  # a bug: keep the claims pending and stop the run
                        self._fail(PipelineError(f"internal error while sending: {exc!r}"))
                # Whatever was not attempted goes back to pending, uncounted.
                outcomes += [Outcome(c.delivery_id, c.subscriber_id, "release") for c in batch[len(outcomes) :]]
                self.outcomes.put(outcomes)
        finally:
            connection.close()

    def _message(self, claim: Claim) -> bytes:
        token = make_token("unsubscribe", claim.subscriber_id, self.secret, self.campaign.issued_at)
        return self.template.personalise_wire(
            to_address=claim.email,
            to_name=claim.name,
            token=token,
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
        status = "bounced" if reply.bad_mailbox else "failed"
        return Outcome(claim.delivery_id, claim.subscriber_id, status, str(reply))

    def _fail(self, error: PipelineError) -> None:
        if self.error is None:
            self.error = error
        self.abort.set()


# --- a proof copy -----------------------------------------------------------------------


def send_test(
    settings: Settings, transport: Transport, newsletter: Newsletter, to: str, *, now: datetime | None = None
) -> Reply:
    """Send one proof copy of ``newsletter`` to ``to``. Touches no ledger: no campaign,
    no delivery, no subscriber. Raises ``PipelineError`` if it is refused."""
    address = normalise_address(to)
    now = now or datetime.now(UTC)
    proof = dataclasses.replace(newsletter, subject=f"[Proof] {newsletter.subject}")
    template = MessageTemplate(proof, settings, signer=DkimSigner.from_settings(settings))
    # Subscriber id 0 belongs to nobody: the proof's unsubscribe link works as a link
    # and unsubscribes no one.
    token = make_token("unsubscribe", 0, load_secret(settings), now)
    message = template.personalise(
        to_address=address,
        to_name=None,
        token=token,
        message_id=f"<proof.{int(now.timestamp())}.{newsletter.key}@{template.from_domain}>",
        date=now,
    )
    return send_one(transport, settings.envelope_sender, address, message, "proof")

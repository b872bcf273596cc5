"""One campaign, one run: the ledger loop, its sending threads and its circuit breaker.

How a delivery moves, and why it survives a crash (``kill -9`` included):

    pending --claim--> sending --SMTP--> sent | failed | bounced
       ^                  |
       +--- 4xx (later) --+   (and at start-up: 'sending' left by a dead sender;
                               'held' instead if that is its second time)

The calling thread is the only one that touches the ledger. Each round it records
the outcomes that came back and claims as many deliveries as that freed, in one
transaction, and hands them to the sending threads in small jobs. At most
``max_in_flight`` = concurrency x batch_size deliveries are 'sending' at any moment,
whatever the threads or the database are doing: when the ledger is slow or locked,
the threads finish what they hold and wait. After a crash those, and only those,
are sent again, so a subscriber gets a second copy only if their message was in
flight when the process died (the Message-ID is the same on both copies, which
lets receiving servers drop the duplicate); and a delivery caught in flight by a
second crash is held for a person to decide (``send --resume --force``).

A refusal of our sender address (5xx to MAIL FROM), or more permanent failures
than ``delivery.pause_failure_share`` allows, pauses the campaign instead of
working through the list: such a run would only burn it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Sequence

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.campaign_leases import LEASE_SECONDS
from pipeline.ledger.campaigns import Campaign
from pipeline.ledger.deliveries import DeliverySession, Outcome
from pipeline.ledger.engine import utcnow
from pipeline.ledger.store import Store
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.message import MessageTemplate
from pipeline.mail.results import CampaignResult, Progress, ProgressCallback
from pipeline.mail.sending_threads import SendingThreads
from pipeline.mail.transports import Transport

_MAX_IDLE_WAIT = 1.0
# The breaker judges the failure share against at least this many attempts. A list
# that confirms every address (double opt-in) and drops bounced ones hard-bounces well
# under 1% per send; at 1%, more than 5 failures among 100 attempts (a false trip) has
# a chance under 0.1%. Counting small runs as 100 also keeps a breaker for them: six
# permanent failures in a row pause even a 50-subscriber campaign, where waiting for
# 100 attempts would let a broken relay fail all of it.
BREAKER_MIN_ATTEMPTS = 100
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


def max_in_flight(settings: Settings) -> int:
    """The most deliveries that can be 'sending' at once, hence the most a crash can
    send twice: each sending thread holds at most ``batch_size`` (one job being sent,
    one waiting)."""
    return settings.delivery.concurrency * settings.delivery.batch_size


class RunAborted(Exception):
    def __init__(self, cause: PipelineError) -> None:
        self.cause = cause


class CircuitBreaker:
    """Trips when a run's permanent failures exceed ``share`` of its attempts (taken as
    at least ``BREAKER_MIN_ATTEMPTS``)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.attempts = 0
        self.failures = 0
        self.replies: Counter[str] = Counter()

    def count(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "release":  # not attempted
                continue
            self.attempts += 1
            if outcome.status in ("failed", "bounced"):
                self.failures += 1
                self.replies[_ADDRESS.sub("<address>", outcome.reply)] += 1

    @property
    def tripped(self) -> bool:
        return self.failures > self.share * max(self.attempts, BREAKER_MIN_ATTEMPTS)

    def reason(self) -> str:
        seen = "; ".join(f"{reply} (x{count})" for reply, count in self.replies.most_common(3))
        return (
            f"{self.failures} of the {self.attempts} attempts in this run failed permanently, more than the "
            f"{self.share:.0%} allowed (delivery.pause_failure_share): that points at the relay, our sender or "
            f"the list, not at a few bad addresses. Replies seen: {seen}"
        )


class CampaignRun:
    """One campaign, one run: the claiming loop plus its worker threads (``SendingThreads``)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        transport: Transport,
        campaign: Campaign,
        *,
        secret: bytes,
        signer: DkimSigner | None,
        owner: str,
        progress: ProgressCallback | None,
        wait_for_retries: bool,
        resume_paused: bool,
        force: bool,
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
        self.resume_paused = resume_paused
        self.force = force
        self.result = CampaignResult(key=campaign.key)
        self.stop = threading.Event()  # abort or pause: send nothing more
        self._stop_lock = threading.Lock()
        self.error: PipelineError | None = None
        self.pause_reason: str | None = None
        self.breaker = CircuitBreaker(settings.delivery.pause_failure_share)
        self.counts: dict[str, int] = {}

    # --- the claiming loop (this thread only touches the ledger) -------------------------

    def execute(self) -> None:
        """Send what is due; raises ``RunAborted`` when the transport became unusable."""
        campaign_id = self.campaign.id
        holder = self.store.acquire_lease(campaign_id, self.owner)
        if holder is not None:
            self.result.busy_with = holder
            return
        try:
            current = self.store.get_campaign(campaign_id)
            if current is not None and current.status == "paused":
                if not self.resume_paused:
                    self.result.paused = current.pause_reason or "paused"
                    self._summarise()
                    return
                self.store.resume_campaign(campaign_id)
            self.result.recovered, self.result.held_now = self.store.requeue_in_flight(campaign_id)
            if self.force:
                self.result.released = self.store.release_held(campaign_id)
            self.counts = self.store.delivery_counts(campaign_id)
            self.result.total = sum(self.counts.values())
            self.template = MessageTemplate(
                Newsletter.from_json(self.store.campaign_content(campaign_id)), self.settings, signer=self.signer
            )
            with self.store.delivery_session() as session:
                self._loop(session)
            self.result.finished = self.store.finish_campaign(campaign_id)
            if not self.result.finished and self.pause_reason is not None:
                self.store.pause_campaign(campaign_id, self.pause_reason)
                self.result.paused = self.pause_reason
            self._summarise()
        finally:
            self.store.release_lease(campaign_id, self.owner)
        if self.error is not None:
            raise RunAborted(self.error)

    def _summarise(self) -> None:
        counts = self.store.delivery_counts(self.campaign.id)
        self.result.total = sum(counts.values())
        self.result.remaining = counts["pending"] + counts["sending"]
        self.result.held = counts["held"]
        self.result.held_addresses = self.store.held_deliveries(self.campaign.id, limit=20)
        self.result.problems = self.store.problem_deliveries(self.campaign.id, limit=20)
        self.result.rates = self.store.campaign_rates(self.campaign.id)

    def _loop(self, session: DeliverySession) -> None:
        window = max_in_flight(self.settings)
        # Half a thread's share per job: one being sent while the next waits in the queue,
        # so a thread rarely idles while the ledger records and refills.
        job_size = -(-self.settings.delivery.batch_size // 2)
        senders = SendingThreads(
            self.settings,
            self.transport,
            self.campaign,
            self.template,
            secret=self.secret,
            stop=self.stop,
            fail=self._fail,
            pause=self._pause,
        )
        senders.start()
        in_flight = 0  # claimed and not yet recorded, arrived outcomes included
        arrived: list[Outcome] = []
        due_now = True  # the last claim got all it asked for: more may be due
        renewed = time.monotonic()
        try:
            while True:
                # Visit the ledger when half the window has come back (the threads still
                # hold the other half), when everything has, or to start.
                back = len(arrived)
                if (back and (back == in_flight or 2 * back >= window or self.stop.is_set())) or (
                    in_flight == 0 and due_now and not self.stop.is_set()
                ):
                    self.breaker.count(arrived)
                    if self.breaker.tripped:
                        self._pause(self.breaker.reason())
                    refill = due_now and not self.stop.is_set()
                    want = window - in_flight + back if refill else 0
                    claims, skipped = session.record_and_claim(self.campaign.id, arrived, want, utcnow())
                    self._count(arrived, skipped)
                    in_flight += len(claims) - back
                    arrived = []
                    if refill:
                        due_now = len(claims) + skipped == want
                    for start in range(0, len(claims), job_size):
                        senders.jobs.put(claims[start : start + job_size])
                if time.monotonic() - renewed > LEASE_SECONDS / 3:
                    self.store.renew_lease(self.campaign.id, self.owner)
                    renewed = time.monotonic()
                if in_flight == 0:
                    # A run ends only when nothing is left that it may send now.
                    if self.stop.is_set():
                        return
                    if due_now:
                        continue
                    due = self.store.next_retry_at(self.campaign.id)
                    if due is None or not self.wait_for_retries:
                        return
                    time.sleep(min(max((due - utcnow()).total_seconds(), 0.0), _MAX_IDLE_WAIT))
                    due_now = True
                    continue
                if not senders.gather(arrived, block=True) and not senders.alive():
                    # Cannot happen unless a worker crashed outside its guard; its claims
                    # stay 'sending' and the next run sends them again.
                    self._fail(PipelineError("every sending thread stopped unexpectedly"))
                    return
        except BaseException:
            # Interrupted (Ctrl-C) or a bug: stop the workers, keep what they finished.
            self.stop.set()
            deadline = time.monotonic() + 10
            while in_flight > len(arrived) and time.monotonic() < deadline:
                senders.gather(arrived, block=True)
            session.record_and_claim(self.campaign.id, arrived, 0, utcnow())
            raise
        finally:
            senders.close()

    def _count(self, outcomes: list[Outcome], skipped: int) -> None:
        """Count recorded outcomes and skipped deliveries, and report progress."""
        for outcome in outcomes:
            status = outcome.status
            if status == "sent":
                self.result.sent += 1
                self.counts["sent"] += 1
            elif status in ("failed", "bounced"):
                setattr(self.result, status, getattr(self.result, status) + 1)
                self.counts[status] += 1
            elif status == "retry":
                self.result.retried += 1
        self.result.skipped += skipped
        self.counts["skipped"] += skipped
        if self.progress is None or not (outcomes or skipped):
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

    def _fail(self, error: PipelineError) -> None:
        with self._stop_lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def _pause(self, reason: str) -> None:
        with self._stop_lock:
            if self.pause_reason is None and self.error is None:
                self.pause_reason = reason
        self.stop.set()

"""Campaigns and the send loop: every active subscriber gets each newsletter once.

``start_campaign`` freezes the newsletter and writes one pending delivery per
active subscriber, in one transaction. ``deliver`` sends what is pending; the
CLI (``pipeline send``, ``send --resume``) and the scheduler both call it. How a
run works, and what it guarantees after a crash, is told in ``campaign_run``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import normalise_address
from pipeline.ledger.tokens import load_secret, make_token
from pipeline.mail.campaign_run import CampaignRun, RunAborted, max_in_flight
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.message import MessageTemplate
from pipeline.mail.results import CampaignResult, Progress, ProgressCallback, Summary
from pipeline.mail.transports import Reply, Transport, send_one

__all__ = [
    "CampaignResult",
    "DeliveryAborted",
    "Progress",
    "ProgressCallback",
    "Summary",
    "deliver",
    "max_in_flight",
    "send_test",
    "start_campaign",
]


class DeliveryAborted(PipelineError):
    """The transport failed mid-run. Everything not sent is pending again; the summary
    says what was done. Fix the cause, then ``pipeline send --resume``."""

    def __init__(self, cause: PipelineError, summary: Summary) -> None:
        super().__init__(cause.message, field=cause.field, hint=cause.hint)
        self.summary = summary


# --- campaigns --------------------------------------------------------------------------


def digests_on(settings: Settings) -> bool:
    """Whether subscribers' choice of frequency applies: only while a digest is
    scheduled. Without one, everybody gets each article (a digest reader is never left
    with nothing)."""
    return settings.scheduler.digest_cron is not None


def start_campaign(
    store: Store, settings: Settings, newsletter: Newsletter, *, kind: str | None = None, now: datetime | None = None
) -> int:
    """The campaign for ``newsletter`` with one pending delivery per active subscriber
    (of an article: per subscriber who gets each article, the article owed to the
    others' next digest, while digests are on), created in one transaction. The same
    newsletter key gives the same campaign and no new rows, so calling this twice (a
    job that fires twice) is harmless."""
    MessageTemplate(newsletter, settings)  # a broken template fails here, before any row exists
    kind = kind or ("digest" if newsletter.key.startswith("digest-") else "post")
    split = kind == "post" and digests_on(settings)
    campaign, _created = store.create_campaign(
        newsletter.key,
        kind,
        newsletter.subject,
        newsletter.to_json(),
        audience="each" if split else "all",
        owed_slug=newsletter.key if split else None,
        now=now,
    )
    return campaign.id


def deliver(
    store: Store,
    settings: Settings,
    transport: Transport,
    campaign_id: int | Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    *,
    wait_for_retries: bool = True,
    resume_paused: bool = False,
    force: bool = False,
) -> Summary:
    """Send what is pending: of one campaign (or several: a digest's), or of every
    unfinished one (resume).

    With ``wait_for_retries`` the run waits for deferred (4xx) deliveries to come due
    and ends when every delivery is final; without, it returns once only deferred
    ones are left (the scheduler calls again later). A paused campaign is only
    continued with ``resume_paused`` (``send --resume``), and held deliveries only go
    out again with ``force`` (``send --resume --force``). Raises ``DeliveryAborted``
    when the transport is unusable.
    """
    started = time.monotonic()
    summary = Summary()
    if campaign_id is None:
        todo = [c for c in store.list_campaigns(unfinished=True) if resume_paused or c.status != "paused"]
    else:
        todo = []
        for wanted in [campaign_id] if isinstance(campaign_id, int) else campaign_id:
            campaign = store.get_campaign(wanted)
            if campaign is None:
                raise PipelineError(f"no campaign with id {wanted}", field="campaign")
            todo.append(campaign)
    if not todo:
        return summary
    secret = load_secret(settings)
    signer = DkimSigner.from_settings(settings)
    owner = store.new_lease_owner()
    try:
        for campaign in todo:
            run = CampaignRun(
                store,
                settings,
                transport,
                campaign,
                secret=secret,
                signer=signer,
                owner=owner,
                progress=progress,
                wait_for_retries=wait_for_retries,
                resume_paused=resume_paused,
                force=force,
            )
            summary.campaigns.append(run.result)
            run.execute()
    except RunAborted as aborted:
        raise DeliveryAborted(aborted.cause, summary) from None
    finally:
        summary.seconds = time.monotonic() - started
    return summary


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
    # Subscriber id 0 belongs to nobody: the proof's unsubscribe and manage links work
    # as links and change no one's subscription.
    secret = load_secret(settings)
    token = make_token("unsubscribe", 0, secret, now)
    message = template.personalise(
        to_address=address,
        to_name=None,
        token=token,
        manage_token=make_token("manage", 0, secret, now),
        message_id=f"<proof.{int(now.timestamp())}.{newsletter.key}@{template.from_domain}>",
        date=now,
    )
    return send_one(transport, settings.envelope_sender, address, message, "proof")

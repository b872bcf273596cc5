"""A release's newsletter handed to the send loop, and what happened said in the log."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.mail.sender import DeliveryAborted, Summary, deliver
from pipeline.mail.transports import Transport, transport_from_spec

log = logging.getLogger("pipeline.release")


def deliver_campaign(
    settings: Settings, store: Store, transport: Transport | None, campaign_id: int | Sequence[int], what: str
) -> Summary:
    """Send a release's newsletter now (``what``: its slug or digest key, for the log)."""
    transport = transport or transport_from_spec(settings.delivery.transport, settings)
    return deliver_and_log(
        store,
        settings,
        transport,
        campaign_id,
        what,
        stopped_prefix=f"{what}: ",
        stopped_tail=" so far; the delivery job resumes it",
    )


def deliver_and_log(
    store: Store,
    settings: Settings,
    transport: Transport,
    campaign_id: int | Sequence[int] | None,
    what: str,
    *,
    stopped_prefix: str,
    stopped_tail: str,
) -> Summary:
    """Deliver one campaign (every unfinished one when ``campaign_id`` is None) and log
    the summary as ``what``. When delivery stops, log
    ``{stopped_prefix}delivery stopped: REASON; N sent{stopped_tail}`` and return what
    was done so far."""
    try:
        summary = deliver(store, settings, transport, campaign_id, wait_for_retries=False)
    except DeliveryAborted as aborted:
        log.error("%sdelivery stopped: %s; %d sent%s", stopped_prefix, aborted, aborted.summary.sent, stopped_tail)
        return aborted.summary
    log_delivery(what, summary)
    return summary


def log_delivery(what: str, summary: Summary) -> None:
    for campaign in summary.campaigns:
        if campaign.paused or campaign.held_now:
            for line in campaign.advice():
                log.warning("%s: %s", what, line)
        if campaign.busy_with:
            log.info("%s: campaign %s is being sent by %s; leaving it to them", what, campaign.key, campaign.busy_with)
            continue
        if not (campaign.sent or campaign.failed or campaign.bounced or campaign.skipped or campaign.remaining):
            continue
        parts = [f"sent {campaign.sent} of {campaign.total}"]
        for name in ("failed", "bounced", "skipped", "remaining"):
            count = getattr(campaign, name)
            if count:
                waiting = "waiting (paused)" if campaign.paused else "deferred for retry"
                parts.append(f"{count} {waiting if name == 'remaining' else name}")
        level = logging.WARNING if campaign.failed or campaign.bounced else logging.INFO
        label = f"newsletter {campaign.key}" if what == campaign.key else f"{what}: newsletter {campaign.key}"
        log.log(level, "%s: %s", label, ", ".join(parts))
        for address, status, reply in campaign.problems[:5]:
            log.warning("%s: %s %s: %s", campaign.key, address, status, reply)

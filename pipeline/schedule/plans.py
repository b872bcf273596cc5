"""What an explicit send would do, decided exactly as the release will be: for the
confirmation prompt, ``--dry-run`` and the desk's "send now"."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.mail.sender import digests_on
from pipeline.schedule.gate import decide
from pipeline.schedule.when import local
from pipeline.site.build import find_post

# A post older than this is "old" when staff are asked to send it: the prompt says its age.
OLD_POST = timedelta(days=7)


@dataclass(frozen=True)
class SendPlan:
    """What ``pipeline send SLUG`` would do, decided exactly as the release will be."""

    slug: str
    title: str
    subject: str
    post_date: datetime
    recipients: int  # active subscribers now, or the deliveries left in a campaign to continue
    continues: int | None = None  # the unfinished campaign it would continue
    done: str | None = None  # why there is nothing to send
    in_digest: int = 0  # active subscribers who get it in their next digest instead (digests on)


def plan_send(settings: Settings, store: Store, slug: str, now: datetime) -> SendPlan:
    """The plan for an explicit send of ``slug``, or a ``PipelineError`` saying why it
    may not be sent (draft, in the future, e-mail off, not approved)."""
    post = find_post(settings, slug)
    mailing = store.get_mailing(slug)
    if mailing is not None and mailing.campaign_id is not None:
        campaign = store.get_campaign(mailing.campaign_id)
        counts = store.delivery_counts(mailing.campaign_id)
        left = counts["pending"] + counts["sending"]
        plan = SendPlan(slug, post.title, post.subject, post.date, left, continues=mailing.campaign_id)
        if campaign is not None and campaign.status == "finished":
            done = (
                f"{slug} was already e-mailed at {local(mailing.released_at, settings)} "
                f"({counts['sent']:,} sent); nobody gets it twice"
            )
            return dataclasses.replace(plan, continues=None, done=done)
        return plan
    decision = decide(
        post,
        now=now,
        first_run=store.recorded_first_run() or now,
        approval=store.get_approval(slug),
        settings=settings,
        explicit=True,
    )
    if not decision.releases:
        hint = {
            "draft": "remove 'draft: true' when it is ready",
            "not-due": "wait for its date, or send a proof now with `pipeline send-test SLUG --to ADDRESS`",
            "held": f"a clinician approves it with `pipeline approve {slug} --by NAME`",
        }.get(decision.status)
        raise PipelineError(f"{slug} cannot be sent: {decision.reason}", path=post.path, field="send", hint=hint)
    if digests_on(settings):
        groups = store.count_frequencies()
        return SendPlan(slug, post.title, post.subject, post.date, groups["each"], in_digest=groups["digest"])
    return SendPlan(slug, post.title, post.subject, post.date, store.count_subscribers()["active"])

"""The release decision, pure: may this post go out now, on which channels, and why not.

Every path that publishes or mails a post (the scheduler's release job, ``pipeline
send``, ``send --digest``, the staff desk) asks ``decide``; nothing else decides.

- A draft, or a post dated after ``now``, is not released.
- Approval (``scheduler.require_approval``): nothing is mailed or queued unless an
  approval covers the post's current bytes (its content hash). Posts dated before the
  pipeline first ran predate the gate, but that exemption covers the feed and the
  archive only: they are never mailed automatically, and an explicit send of one
  still needs an approval.
- Backfill: a post dated before the first run, or more than ``backfill_hours`` late,
  goes to the feed only. An explicit ``send`` may still mail it (staff are told how old it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.errors import PipelineError
from pipeline.ledger.releases import Approval
from pipeline.ledger.store import Store
from pipeline.schedule.when import local, span


@dataclass(frozen=True)
class Decision:
    """``status``: release | held | draft | not-due | refused."""

    status: str
    reason: str = ""
    channels: tuple[str, ...] = ()  # to publish now, in the order feed, email, social
    skipped: tuple[str, ...] = ()  # on for the post, but left out by the backfill rule
    backfill: str | None = None

    @property
    def releases(self) -> bool:
        return self.status == "release"


def approval_problem(post: Post, approval: Approval | None, settings: Settings) -> str | None:
    """Why ``post`` lacks the approval the gate asks for, or None when it has it (or the gate is off)."""
    if not settings.scheduler.require_approval:
        return None
    if approval is None:
        return "not approved"
    if not approval.covers(post.content_hash):
        return f"the approval by {approval.by} ({local(approval.at, settings)}) is void: the post changed after it"
    return None


def backfill_reason(post: Post, now: datetime, first_run: datetime, settings: Settings) -> str | None:
    """Why ``post`` goes to the feed only (never e-mailed or queued for social), or None."""
    if post.date < first_run:
        return f"dated {local(post.date, settings)}, before the pipeline first ran ({local(first_run, settings)})"
    limit = timedelta(hours=settings.scheduler.backfill_hours)
    if now - post.date > limit:
        return (
            f"{span(now - post.date)} late (more than scheduler.backfill_hours = {settings.scheduler.backfill_hours:g})"
        )
    return None


def decide(
    post: Post,
    *,
    now: datetime,
    first_run: datetime,
    approval: Approval | None,
    settings: Settings,
    explicit: bool = False,
) -> Decision:
    """May ``post`` go out at ``now``? ``explicit``: staff asked to e-mail it (``pipeline
    send``), which overrides the backfill rule for e-mail and nothing else."""
    if post.draft:
        return Decision("draft", "it is a draft (draft: true)")
    if post.date > now:
        return Decision("not-due", f"it is dated {local(post.date, settings)}, in the future")
    if explicit and "email" not in post.channels:
        return Decision("refused", "e-mail is turned off for this post (channels: {email: false})")
    backfill = backfill_reason(post, now, first_run, settings)
    mails = "email" in post.channels and (explicit or backfill is None)
    posts_social = "social" in post.channels and backfill is None
    if mails or posts_social or post.date >= first_run:
        problem = approval_problem(post, approval, settings)
        if problem is not None:
            return Decision("held", problem)
    channels = tuple(
        c for c, on in (("feed", "feed" in post.channels), ("email", mails), ("social", posts_social)) if on
    )
    skipped = tuple(c for c in ("email", "social") if c in post.channels and c not in channels)
    return Decision("release", channels=channels, skipped=skipped, backfill=backfill)


def approve(store: Store, post: Post, by: str, now: datetime) -> Approval:
    """Record that ``by`` approved ``post`` as its file is now (any later edit voids it)."""
    name = " ".join(by.split())
    if not name:
        raise PipelineError("is empty", field="--by", hint="give the approver's name, e.g. --by 'Dr. Jameson'")
    approval = Approval(slug=post.slug, by=name, at=now, content_hash=post.content_hash)
    store.record_approval(approval)
    return approval

"""Where a post stands, in the words the desk shows: draft, upcoming, held for
approval, due, or released (with each channel's state), and its approval. Decided by
the release path's own records and ``gate.approval_problem``, never anew here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.content.posts import Post
from pipeline.ledger.releases import Approval, Hold, ReleaseRecord
from pipeline.ledger.social_rows import SocialPause, SocialPost
from pipeline.schedule.gate import approval_problem
from pipeline.web.state import WebState


@dataclass(frozen=True)
class ChannelState:
    name: str
    state: str  # words: "in the feed", "sent 3 of 3, 1 failed", "posted on mastodon", "off"


@dataclass(frozen=True)
class PostState:
    slug: str
    title: str
    date: datetime
    stage: str  # draft | upcoming | held | due | released
    approval: Approval | None
    approval_problem: str | None  # None: approved for these bytes (or approval is off)
    release: ReleaseRecord | None = None
    hold: Hold | None = None
    channels: tuple[ChannelState, ...] = field(default_factory=tuple)
    campaign_id: int | None = None

    @property
    def approved(self) -> bool:
        return self.approval is not None and self.approval_problem is None


def newsletter_state(web: WebState, campaign_id: int | None) -> str:
    if campaign_id is None:
        return "owed: not started yet"
    counts = web.store.delivery_counts(campaign_id)
    total = sum(counts.values())
    parts = [f"sent {counts['sent']:,} of {total:,}"]
    parts += [f"{counts[s]:,} {s}" for s in ("failed", "bounced") if counts[s]]
    open_rows = counts["pending"] + counts["sending"]
    if open_rows:
        parts.append(f"{open_rows:,} still to send")
    return ", ".join(parts)


# A direct post's ledger status in the desk's words (pipeline.posting moves it along).
SOCIAL_WORDS = {"pending": "to post", "posting": "posting", "posted": "posted", "failed": "FAILED"}


def social_state(rows: list[SocialPost], pauses: dict[str, SocialPause]) -> str:
    """Each platform the pipeline posts to directly, with where its post stands; the
    other platforms' snippets wait in the preview for staff to copy."""
    if not rows:
        return "snippets ready to copy (nothing is posted directly)"
    parts = []
    for row in sorted(rows, key=lambda r: r.platform):
        if row.platform in pauses and row.status != "posted":
            parts.append(f"{row.platform} PAUSED: {pauses[row.platform].reason}")
        elif row.status == "failed":
            parts.append(f"{row.platform} FAILED: {row.last_error or 'refused'}")
        else:
            parts.append(f"{row.platform} {SOCIAL_WORDS.get(row.status, row.status)}")
    return "; ".join(parts)


def post_state(
    web: WebState,
    post: Post,
    *,
    releases: dict[str, ReleaseRecord] | None = None,
    holds: dict[str, Hold] | None = None,
    approvals: dict[str, Approval] | None = None,
    social: dict[str, list[SocialPost]] | None = None,
    pauses: dict[str, SocialPause] | None = None,
) -> PostState:
    store = web.store
    release = releases.get(post.slug) if releases is not None else store.get_release(post.slug)
    hold = holds.get(post.slug) if holds is not None else store.list_holds().get(post.slug)
    approval = approvals.get(post.slug) if approvals is not None else store.get_approval(post.slug)
    problem = approval_problem(post, approval, web.settings)
    if (
        web.settings.scheduler.require_approval is False
        and approval is not None
        and not approval.covers(post.content_hash)
    ):
        problem = "the approval is void: the post changed after it"
    now = web.now()
    if release is not None:
        stage = "released"
    elif post.draft:
        stage = "draft"
    elif hold is not None or (post.date <= now and web.settings.scheduler.require_approval and problem):
        stage = "held"
    elif post.date <= now:
        stage = "due"
    else:
        stage = "upcoming"
    channels: list[ChannelState] = []
    campaign_id = None
    if release is not None:
        for name in ("feed", "email", "social"):
            if name in release.channels:
                if name == "email":
                    mailing = store.get_mailing(post.slug)
                    campaign_id = mailing.campaign_id if mailing else None
                    channels.append(ChannelState("newsletter", newsletter_state(web, campaign_id)))
                elif name == "feed":
                    channels.append(ChannelState(name, "in the feed"))
                else:
                    rows = social.get(post.slug, []) if social is not None else store.social_posts_for(post.slug)
                    known = pauses if pauses is not None else store.platform_pauses()
                    channels.append(ChannelState(name, social_state(rows, known)))
            elif name in release.skipped:
                channels.append(ChannelState(name if name != "email" else "newsletter", "left out (backfill)"))
            else:
                channels.append(ChannelState(name if name != "email" else "newsletter", "off"))
    return PostState(
        slug=post.slug,
        title=post.title,
        date=post.date,
        stage=stage,
        approval=approval,
        approval_problem=problem,
        release=release,
        hold=hold,
        channels=tuple(channels),
        campaign_id=campaign_id,
    )

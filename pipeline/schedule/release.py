"""Releasing a post: the scheduler decides WHEN, the ledger decides WHETHER.

``release_post(settings, slug, now)`` rebuilds ``out/`` and then, for each channel
the post allows, records it in the ledger once:

- feed: the build put it in the feeds; the publication is recorded;
- email: its newsletter campaign is started (one pending delivery per active
  subscriber, idempotent per slug) and then delivered, or left to the delivery job;
- social: its snippets are in ``out/social/<slug>.json`` and ``queue.csv``; the
  publication is recorded.

A job that fires twice finds the ``released:<slug>`` marker and does nothing.

Backfill: a post dated before the pipeline first ran, or more than
``scheduler.backfill_hours`` late, goes to the feed only; it is never e-mailed or
queued for social, and the log says so.

Approval gate (``scheduler.require_approval``): a post is released only once
``pipeline approve SLUG --by NAME`` recorded an approval of the post's current
bytes (its content hash); any edit afterwards voids it. An unapproved post whose
time comes is HELD (``held:<slug>``) until it is approved. Posts dated before the
pipeline first ran predate the gate and are not held.

State kept in the ledger's ``meta`` table (JSON values; keys ``KIND:SLUG``):
``released:``, ``held:``, ``approval:``, plus ``first_run_at`` and ``last_digest_at``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.channels.newsletter import render_digest, render_post_newsletter
from pipeline.channels.templating import local_time, make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post, errors_for_slug
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.mail.sender import DeliveryAborted, Summary, deliver, start_campaign
from pipeline.mail.transports import Transport, transport_from_spec
from pipeline.site.build import ApprovalGate, build, full_posts

log = logging.getLogger("pipeline.scheduler")

FIRST_RUN_KEY = "first_run_at"
LAST_DIGEST_KEY = "last_digest_at"
RELEASED, HELD, APPROVAL = "released", "held", "approval"
_META_KEY_MAX = 100  # meta.key is VARCHAR(100)

# One release at a time per process: builds write out/ and its cache, and the
# "is it released yet?" check must not interleave with another job's record.
_release_lock = threading.Lock()


# --- time in words -------------------------------------------------------------------


def local(moment: datetime, settings: Settings) -> str:
    """``2026-11-03 09:00 EST`` (seconds shown when there are any)."""
    shown = moment.astimezone(settings.clinic.zone)
    fmt = "%Y-%m-%d %H:%M:%S %Z" if shown.second or shown.microsecond else "%Y-%m-%d %H:%M %Z"
    return local_time(moment, settings, fmt)


def span(delta: timedelta) -> str:
    """A duration in words: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(moment: datetime, now: datetime) -> str:
    delta = moment - now
    return f"in {span(delta)}" if delta.total_seconds() >= 0 else f"{span(delta)} ago"


# --- our state in the ledger's meta table ------------------------------------------------


def meta_key(kind: str, slug: str) -> str:
    """``kind:slug``, shortened with a hash when it would not fit the column."""
    key = f"{kind}:{slug}"
    if len(key) <= _META_KEY_MAX:
        return key
    digest = hashlib.sha256(slug.encode()).hexdigest()[:16]
    return f"{kind}:{slug[: _META_KEY_MAX - len(kind) - 18]}~{digest}"


def _get(store: Store, kind: str, slug: str) -> dict[str, Any] | None:
    value = store.get_meta(meta_key(kind, slug))
    return json.loads(value) if value else None


def _put(store: Store, kind: str, slug: str, data: dict[str, Any]) -> None:
    store.set_meta(meta_key(kind, slug), json.dumps({"slug": slug, **data}, sort_keys=True))


def _drop(store: Store, kind: str, slug: str) -> None:
    store.delete_meta(meta_key(kind, slug))


def all_of(store: Store, kind: str) -> dict[str, dict[str, Any]]:
    """Every ``kind:`` record, keyed by slug (one query, for rescans and ``pipeline queue``)."""
    found = {}
    for value in store.meta_values(f"{kind}:"):
        data = json.loads(value)
        found[data["slug"]] = data
    return found


def recorded_first_run(store: Store) -> datetime | None:
    """When the pipeline first ran, or None when it never has (nothing recorded yet)."""
    text = store.get_meta(FIRST_RUN_KEY)
    return datetime.fromisoformat(text) if text else None


def first_run_at(store: Store, now: datetime) -> datetime:
    """When the pipeline first ran (recorded on first use; posts dated before it are backfill)."""
    return datetime.fromisoformat(store.setdefault_meta(FIRST_RUN_KEY, now.astimezone(UTC).isoformat()))


# --- approvals --------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    slug: str
    by: str
    at: datetime
    content_hash: str

    def covers(self, post: Post) -> bool:
        """Whether the approval is of the post as it is now (any edit voids it)."""
        return self.content_hash == post.content_hash


def get_approval(store: Store, slug: str) -> Approval | None:
    data = _get(store, APPROVAL, slug)
    if data is None:
        return None
    return Approval(slug=slug, by=data["by"], at=datetime.fromisoformat(data["at"]), content_hash=data["content_hash"])


def approve(store: Store, post: Post, by: str, now: datetime) -> Approval:
    """Record that ``by`` approved ``post`` as its file is now."""
    name = " ".join(by.split())
    if not name:
        raise PipelineError("is empty", field="--by", hint="give the approver's name, e.g. --by 'Dr. Jameson'")
    approval = Approval(slug=post.slug, by=name, at=now, content_hash=post.content_hash)
    _put(store, APPROVAL, post.slug, {"by": name, "at": now.isoformat(), "content_hash": post.content_hash})
    return approval


def approval_gate(settings: Settings, store: Store, now: datetime) -> ApprovalGate | None:
    """What the build may publish under ``require_approval`` (None when it is off):
    exactly the approved versions of posts, so a held post never reaches the feed."""
    if not settings.scheduler.require_approval:
        return None
    approved = frozenset((slug, str(data["content_hash"])) for slug, data in all_of(store, APPROVAL).items())
    return ApprovalGate(since=first_run_at(store, now), approved=approved)


def approval_problem(store: Store, settings: Settings, post: Post, first_run: datetime) -> str | None:
    """Why ``post`` may not be released yet under the approval gate, or None."""
    if not settings.scheduler.require_approval or post.date < first_run:
        return None
    approval = get_approval(store, post.slug)
    if approval is None:
        return "not approved"
    if not approval.covers(post):
        return f"the approval by {approval.by} ({approval.at:%Y-%m-%d %H:%M %Z}) is void: the post changed after it"
    return None


# --- backfill ----------------------------------------------------------------------------


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


# --- releasing ---------------------------------------------------------------------------


@dataclass
class Release:
    """What happened to one slug.

    ``status``: released | backfill (feed only) | held | already | not-due | draft | missing | invalid
    """

    slug: str
    status: str
    message: str
    channels: tuple[str, ...] = ()
    campaign_id: int | None = None
    delivery: Summary | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in ("released", "backfill", "already")


def release_post(
    settings: Settings,
    slug: str,
    now: datetime,
    *,
    store: Store | None = None,
    transport: Transport | None = None,
    deliver_now: bool = True,
    jobs: int | None = None,
) -> Release:
    """Release one post (see the module doc). Repeat-safe: a second call is a no-op."""
    return release_posts(settings, [slug], now, store=store, transport=transport, deliver_now=deliver_now, jobs=jobs)[0]


def release_posts(
    settings: Settings,
    slugs: Sequence[str],
    now: datetime,
    *,
    store: Store | None = None,
    transport: Transport | None = None,
    deliver_now: bool = True,
    jobs: int | None = None,
) -> list[Release]:
    """Release several posts after one build (start-up catch-up, backfill)."""
    own_store = store is None
    store = store or Store.open(settings)
    try:
        with _release_lock:
            outcomes = _release_locked(settings, store, slugs, now, jobs)
        if deliver_now:
            for outcome in outcomes:
                if outcome.campaign_id is not None:
                    _deliver(settings, store, transport, outcome)
        return outcomes
    finally:
        if own_store:
            store.close()


def _release_locked(
    settings: Settings, store: Store, slugs: Sequence[str], now: datetime, jobs: int | None
) -> list[Release]:
    first_run = first_run_at(store, now)
    outcomes: dict[str, Release] = {}
    todo = []
    for slug in dict.fromkeys(slugs):
        marker = released_marker(store, slug)
        if marker is not None:
            outcomes[slug] = Release(slug, "already", f"{slug} was released at {marker['released_at']}; nothing to do")
            log.debug("%s: already released; nothing to do", slug)
        else:
            todo.append(slug)
    if todo:
        # The gate keeps unapproved posts out of every output, not just out of the mail.
        result = build(settings, now, jobs=jobs, gate=approval_gate(settings, store, now))
        by_slug = {post.slug: post for post in result.posts}
        env = make_environment(settings) if any(s in by_slug for s in todo) else None
        for slug in todo:
            post = by_slug.get(slug)
            if post is None:
                outcomes[slug] = _not_found(slug, result.errors)
                log.warning("%s", outcomes[slug].message)
                continue
            assert env is not None
            outcomes[slug] = _release_one(settings, store, post, now, first_run, env)
    return [outcomes[slug] for slug in dict.fromkeys(slugs)]


def _not_found(slug: str, errors: Iterable[PipelineError]) -> Release:
    broken = [str(e) for e in errors_for_slug(errors, slug)]
    if broken:
        return Release(slug, "invalid", f"{slug} not released: the post has an error: {broken[0]}", errors=broken)
    return Release(slug, "missing", f"{slug} not released: no post with this slug in posts/ any more")


def _release_one(settings: Settings, store: Store, post: Post, now: datetime, first_run: datetime, env: Any) -> Release:
    slug = post.slug
    if post.draft:
        return _say(Release(slug, "draft", f"{slug} not released: it is a draft (draft: true)"))
    if post.date > now:
        return _say(Release(slug, "not-due", f"{slug} not released yet: it is now dated {local(post.date, settings)}"))
    problem = approval_problem(store, settings, post, first_run)
    if problem is not None:
        return _hold(settings, store, post, now, problem)

    backfill = backfill_reason(post, now, first_run, settings)
    done: list[str] = []
    skipped: list[str] = []
    campaign_id = None
    if "feed" in post.channels:
        store.record_publication(slug, "feed", now, post.content_hash)
        done.append("feed")
    if "email" in post.channels:
        if store.is_published(slug, "email"):
            done.append("email")
            existing = store.get_campaign_by_key(slug)
            campaign_id = existing.id if existing is not None and existing.status != "finished" else None
        elif backfill:
            skipped.append("email")
        else:
            # The campaign first (idempotent per slug), then the record: a crash between
            # the two finds the same campaign on the next run.
            (full,) = full_posts(settings, [post])
            campaign_id = start_campaign(store, settings, render_post_newsletter(full, settings, env), now=now)
            store.record_publication(slug, "email", now, post.content_hash)
            done.append("email")
    if "social" in post.channels:
        if store.is_published(slug, "social"):
            done.append("social")
        elif backfill:
            skipped.append("social")
        else:
            store.record_publication(slug, "social", now, post.content_hash)
            done.append("social")
    _put(
        store,
        RELEASED,
        slug,
        {
            "released_at": now.isoformat(),
            "date": post.date.isoformat(),
            "title": post.title,
            "channels": done,
            "skipped": skipped,
            "backfill": backfill,
            "campaign_id": campaign_id,
        },
    )
    _drop(store, HELD, slug)

    lateness = now - post.date
    when = f"{span(lateness)} after its time" if lateness < timedelta(hours=1) else f"{span(lateness)} late"
    if backfill:
        message = (
            f"backfill: {slug} ({post.title!r}) {backfill}: added to the feed only"
            f"{'' if 'feed' in done else ' (feed is off for this post: nothing to do)'}; "
            f"not e-mailed and not queued for social"
        )
        status = "backfill"
    else:
        detail = [f"email (campaign {campaign_id})" if c == "email" and campaign_id is not None else c for c in done]
        message = f"released {slug} ({post.title!r}), {when}: {', '.join(detail) or 'no channel is on for this post'}"
        status = "released"
    return _say(Release(slug, status, message, channels=tuple(done), campaign_id=campaign_id))


def _say(outcome: Release) -> Release:
    log.info("%s", outcome.message)
    return outcome


def _hold(settings: Settings, store: Store, post: Post, now: datetime, problem: str) -> Release:
    held = _get(store, HELD, post.slug)
    if held is None:
        _put(store, HELD, post.slug, {"since": now.isoformat(), "date": post.date.isoformat(), "reason": problem})
    message = (
        f"HELD: {post.slug} ({post.title!r}) was due {local(post.date, settings)} but is not released: {problem}. "
        f"Run `pipeline approve {post.slug} --by NAME`; it is released within "
        f"{settings.scheduler.rescan_seconds:g} s of the approval"
    )
    log.warning("%s", message)
    return Release(post.slug, "held", message)


def held_posts(store: Store) -> dict[str, dict[str, Any]]:
    return all_of(store, HELD)


def released_posts(store: Store) -> dict[str, dict[str, Any]]:
    return all_of(store, RELEASED)


def released_marker(store: Store, slug: str) -> dict[str, Any] | None:
    """The ``released:`` record of one slug, or None when it was never released."""
    return _get(store, RELEASED, slug)


# --- delivery ------------------------------------------------------------------------------


def _deliver(settings: Settings, store: Store, transport: Transport | None, outcome: Release) -> None:
    assert outcome.campaign_id is not None
    transport = transport or transport_from_spec(settings.delivery.transport, settings)
    outcome.delivery = deliver_and_log(
        store,
        settings,
        transport,
        outcome.campaign_id,
        outcome.slug,
        stopped_prefix=f"{outcome.slug}: ",
        stopped_tail=" so far; the delivery job resumes it",
    )


def deliver_and_log(
    store: Store,
    settings: Settings,
    transport: Transport,
    campaign_id: int | None,
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


# --- the digest ----------------------------------------------------------------------------


def send_digest(
    settings: Settings, now: datetime, *, store: Store, transport: Transport | None = None
) -> Release | None:
    """One newsletter of every post released (and e-mailable, not backfill) since the
    last digest; None when there is nothing new."""
    with _release_lock:
        since = datetime.fromisoformat(store.get_meta(LAST_DIGEST_KEY) or first_run_at(store, now).isoformat())
        released = released_posts(store)
        slugs = [
            slug
            for slug, data in released.items()
            if not data.get("backfill") and "email" in data.get("channels", []) and since < _when(data) <= now
        ]
        if not slugs:
            log.info("digest: nothing released since %s; no digest sent", local(since, settings))
            store.set_meta(LAST_DIGEST_KEY, now.isoformat())
            return None
        result = build(settings, now, jobs=1, gate=approval_gate(settings, store, now))
        wanted = set(slugs)
        posts = [p for p in result.released if p.slug in wanted]
        if not posts:
            log.info("digest: the posts released since %s are gone from posts/; no digest sent", local(since, settings))
            store.set_meta(LAST_DIGEST_KEY, now.isoformat())
            return None
        env = make_environment(settings)
        newsletter = render_digest(full_posts(settings, posts), settings, env, now=now)
        campaign_id = start_campaign(store, settings, newsletter, kind="digest", now=now)
        store.set_meta(LAST_DIGEST_KEY, now.isoformat())
    outcome = Release(
        newsletter.key,
        "released",
        f"digest {newsletter.key}: {len(posts)} post(s) since {local(since, settings)}: "
        + ", ".join(p.slug for p in posts),
        channels=("email",),
        campaign_id=campaign_id,
    )
    _say(outcome)
    _deliver(settings, store, transport, outcome)
    return outcome


def _when(data: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(data["released_at"])

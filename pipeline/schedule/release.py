"""The one release path: the scheduler decides WHEN, this module and the ledger decide WHETHER.

``release_posts(settings, slugs, now, store=...)`` is what every path that publishes or
mails a post calls: the scheduler's release job, ``pipeline send SLUG`` (with
``explicit=True``) and, later, the staff desk. For each post it asks ``gate.decide``
(draft, date, channels, approval bound to the content hash, backfill), then:

1. rebuilds ``out/`` so the feed, the archive page and the social queue hold the post;
2. records the release and one publication per channel in one transaction; an
   e-mail publication is recorded with no campaign yet: the newsletter is *owed*;
3. renders the newsletter from exactly the bytes that were decided on, creates its
   campaign (one pending delivery per active subscriber) and names it on the
   publication; a crash between 2 and 3 leaves the newsletter owed, and
   ``complete_owed`` (``send --resume``, the scheduler's delivery job) makes it;
4. delivers it, or leaves that to the caller.

A job that fires twice finds the release recorded and does nothing. An explicit send
of a post that went to the feed only (backfill) owes its newsletter from then on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import jinja2

from pipeline.channels.newsletter import Newsletter, render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post, errors_for_slug, parse_post
from pipeline.errors import PipelineError
from pipeline.ledger.releases import ReleaseRecord
from pipeline.ledger.store import Store
from pipeline.mail.sender import Summary, start_campaign
from pipeline.mail.transports import Transport
from pipeline.posting.owed import owe_posts
from pipeline.schedule.archive import MailedPages
from pipeline.schedule.gate import Decision, approval_problem, decide
from pipeline.schedule.sending import deliver_campaign
from pipeline.schedule.when import local, span
from pipeline.site.build import ApprovalGate, build, find_post
from pipeline.site.index import PostIndex

log = logging.getLogger("pipeline.release")

# One release at a time per process: builds write out/ and its cache, and the
# "is it released yet?" check must not interleave with another job's record.
release_lock = threading.Lock()


@dataclass
class Release:
    """What happened to one slug.

    ``status``: released | backfill (feed only) | held | already | not-due | draft |
    refused | missing | invalid
    """

    slug: str
    status: str
    message: str
    channels: tuple[str, ...] = ()
    campaign_id: int | None = None
    delivery: Summary | None = None
    errors: list[str] = field(default_factory=list)
    # A digest's campaigns, one per group of subscribers owed the same articles (the first is campaign_id).
    campaign_ids: tuple[int, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in ("released", "backfill", "already")


# --- approvals ------------------------------------------------------------------------------


def approval_gate(settings: Settings, store: Store, now: datetime) -> ApprovalGate | None:
    """What the build may publish under ``require_approval`` (None when it is off):
    exactly the approved versions of posts, so a held post never reaches the feed."""
    if not settings.scheduler.require_approval:
        return None
    approved = frozenset((a.slug, a.content_hash) for a in store.list_approvals().values())
    return ApprovalGate(since=store.first_run_at(now), approved=approved)


# --- releasing ------------------------------------------------------------------------------


def release_post(
    settings: Settings,
    slug: str,
    now: datetime,
    *,
    store: Store | None = None,
    transport: Transport | None = None,
    deliver_now: bool = True,
    jobs: int | None = None,
    explicit: bool = False,
    index: PostIndex | None = None,
) -> Release:
    """Release one post (see the module doc). Repeat-safe: a second call is a no-op."""
    return release_posts(
        settings, [slug], now, store=store, transport=transport, deliver_now=deliver_now, jobs=jobs,
        explicit=explicit, index=index,
    )[0]  # fmt: skip


def release_posts(
    settings: Settings,
    slugs: Sequence[str],
    now: datetime,
    *,
    store: Store | None = None,
    transport: Transport | None = None,
    deliver_now: bool = True,
    jobs: int | None = None,
    explicit: bool = False,
    index: PostIndex | None = None,
) -> list[Release]:
    """Release several posts after one build (start-up catch-up, backfill). With
    ``explicit`` (``pipeline send``): each post is to be e-mailed now, backfill or not.
    ``index``: the scheduler's, whose cache the build renders from without listing or
    parsing the archive (it looks at these posts' files alone)."""
    own_store = store is None
    store = store or Store.open(settings)
    try:
        with release_lock:
            outcomes = _release_locked(settings, store, slugs, now, jobs, explicit, index)
        if deliver_now:
            for outcome in outcomes:
                if outcome.campaign_id is not None:
                    outcome.delivery = deliver_campaign(settings, store, transport, outcome.campaign_id, outcome.slug)
        return outcomes
    finally:
        if own_store:
            store.close()


def _release_locked(
    settings: Settings,
    store: Store,
    slugs: Sequence[str],
    now: datetime,
    jobs: int | None,
    explicit: bool,
    index: PostIndex | None,
) -> list[Release]:
    first_run = store.first_run_at(now)
    outcomes: dict[str, Release] = {}
    todo = []
    for slug in dict.fromkeys(slugs):
        record = store.get_release(slug)
        if record is None:
            todo.append(slug)
        elif explicit:
            outcomes[slug] = _mail_released(settings, store, record, now, first_run)
        else:
            outcomes[slug] = Release(slug, "already", f"{slug} was released at {local(record.released_at, settings)}")
            log.debug("%s: already released; nothing to do", slug)
    if todo:
        # The gate keeps unapproved posts out of every output, not just out of the mail.
        result = build(
            settings, now, jobs=jobs, gate=approval_gate(settings, store, now), keeper=MailedPages(settings, store),
            cache=index.cache if index else None, only=index.files(todo) if index else None, newsletters=todo,
        )  # fmt: skip
        by_slug = {post.slug: post for post in result.posts}
        for slug in todo:
            post = by_slug.get(slug)
            if post is None:
                outcomes[slug] = _say(_not_found(slug, result.errors), logging.WARNING)
                continue
            decision = decide(
                post,
                now=now,
                first_run=first_run,
                approval=store.get_approval(slug),
                settings=settings,
                explicit=explicit,
            )
            # A post that fell due with another was rendered by that one's build, which kept
            # only its own newsletter: this one's is made with the scheduler's loaded templates.
            made = result.newsletters.get(slug)
            env = index.cache.environment() if index else None
            outcomes[slug] = _release_one(settings, store, post, decision, now, made, env)
    return [outcomes[slug] for slug in dict.fromkeys(slugs)]


def _not_found(slug: str, errors: Iterable[PipelineError]) -> Release:
    broken = [str(e) for e in errors_for_slug(errors, slug)]
    if broken:
        return Release(slug, "invalid", f"{slug} not released: the post has an error: {broken[0]}", errors=broken)
    return Release(slug, "missing", f"{slug} not released: no post with this slug in posts/ any more")


def _release_one(
    settings: Settings,
    store: Store,
    post: Post,
    decision: Decision,
    now: datetime,
    newsletter: Newsletter | None,
    env: jinja2.Environment | None,
) -> Release:
    slug = post.slug
    if decision.status == "held":
        return _hold(settings, store, post, now, decision.reason)
    if not decision.releases:
        return _say(Release(slug, decision.status, f"{slug} not released: {decision.reason}"))
    record = ReleaseRecord(
        slug=slug,
        title=post.title,
        post_date=post.date,
        content_hash=post.content_hash,
        released_at=now,
        backfill=decision.backfill,
        skipped=decision.skipped,
        channels=decision.channels,
    )
    if not store.record_release(record, now=now):
        return Release(slug, "already", f"{slug} was released by another process meanwhile")
    if "social" in decision.channels:  # posted by the social job, after the newsletter is started
        owe_posts(settings, store, slug, post.date, now)
    campaign_id = (
        _make_newsletter(settings, store, post, now, newsletter, env) if "email" in decision.channels else None
    )

    lateness = now - post.date
    when = f"{span(lateness)} after its time" if lateness < timedelta(hours=1) else f"{span(lateness)} late"
    if decision.backfill and "email" not in decision.channels:
        message = (
            f"backfill: {slug} ({post.title!r}) {decision.backfill}: added to the feed only"
            f"{'' if 'feed' in decision.channels else ' (feed is off for this post: nothing to do)'}; "
            f"not e-mailed and not queued for social"
        )
        return _say(Release(slug, "backfill", message, channels=decision.channels))
    detail = [f"email (campaign {campaign_id})" if c == "email" else c for c in decision.channels]
    message = f"released {slug} ({post.title!r}), {when}: {', '.join(detail) or 'no channel is on for this post'}"
    return _say(Release(slug, "released", message, channels=decision.channels, campaign_id=campaign_id))


def _mail_released(
    settings: Settings, store: Store, record: ReleaseRecord, now: datetime, first_run: datetime
) -> Release:
    """An explicit send of a post that was released already: its newsletter if it was
    never mailed (a backfill post, or one owed since a crash), else what was sent."""
    slug = record.slug
    mailing = store.get_mailing(slug)
    if mailing is not None and mailing.campaign_id is not None:
        return Release(slug, "already", f"{slug} was e-mailed at {local(mailing.released_at, settings)}",
                       channels=("email",), campaign_id=mailing.campaign_id)  # fmt: skip
    post = find_post(settings, slug)
    decision = decide(
        post, now=now, first_run=first_run, approval=store.get_approval(slug), settings=settings, explicit=True
    )
    if decision.status == "held":
        return _say(Release(slug, "held", f"{slug} not sent: {decision.reason}"), logging.WARNING)
    if not decision.releases:
        return _say(Release(slug, decision.status, f"{slug} not sent: {decision.reason}"))
    if mailing is None:
        store.owe_newsletter(dataclasses.replace(record, content_hash=post.content_hash, released_at=now), now=now)
    campaign_id = _make_newsletter(settings, store, post, now)
    message = f"{slug} ({post.title!r}): newsletter started (campaign {campaign_id})"
    return _say(Release(slug, "released", message, channels=("email",), campaign_id=campaign_id))


def _make_newsletter(
    settings: Settings,
    store: Store,
    post: Post,
    now: datetime,
    newsletter: Newsletter | None = None,
    env: jinja2.Environment | None = None,
) -> int:
    """Render the newsletter from the post's bytes as decided, create its campaign and name
    it on the e-mail publication. ``newsletter``: the build's, rendered from the very
    bytes decided on. Else the file is read again for its body: if it changed since the
    decision, nothing is made (the next pass decides on the new bytes). ``env``: the
    templates to render it with, when the caller has them loaded already."""
    if newsletter is None:
        newsletter = _render_newsletter(settings, post, env)
    campaign_id = start_campaign(store, settings, newsletter, kind="post", now=now)
    store.attach_campaign(post.slug, campaign_id)
    return campaign_id


def _render_newsletter(settings: Settings, post: Post, env: jinja2.Environment | None) -> Newsletter:
    path = Path(post.path)
    if not path.is_absolute() and not path.exists():
        path = settings.posts_dir / path.name
    full = parse_post(path.read_bytes(), post.path, settings)
    if full.content_hash != post.content_hash:
        raise PipelineError(
            "the post changed while it was being released; its newsletter is made from the new version "
            "once that is released or approved",
            path=post.path,
            hint="run `pipeline send --resume`",
        )
    return render_post_newsletter(full, settings, env or make_environment(settings))


def complete_owed(settings: Settings, store: Store, now: datetime) -> list[Release]:
    """Make the newsletters that releases owe but whose campaign was never created
    (the process died in between). Each is made from the post as it is now, only if
    that is what was released (or, with approval off, any valid version)."""
    outcomes = []
    with release_lock:
        for mailing in store.mailings(owed=True):
            try:
                post = find_post(settings, mailing.slug)
                if post.content_hash != mailing.content_hash:
                    problem = approval_problem(post, store.get_approval(post.slug), settings)
                    if problem is not None:
                        raise PipelineError(
                            f"the newsletter owed since {local(mailing.released_at, settings)} is not sent: "
                            f"the post changed after its release and is {problem}",
                            path=post.path,
                            hint=f"run `pipeline approve {post.slug} --by NAME`",
                        )
                campaign_id = _make_newsletter(settings, store, post, now)
            except PipelineError as error:
                outcomes.append(_say(Release(mailing.slug, "held", f"{mailing.slug}: {error}"), logging.ERROR))
                continue
            message = f"{mailing.slug}: the newsletter its release owed is started (campaign {campaign_id})"
            outcomes.append(_say(Release(mailing.slug, "released", message, ("email",), campaign_id)))
    return outcomes


def _say(outcome: Release, level: int = logging.INFO) -> Release:
    log.log(level, "%s", outcome.message)
    return outcome


def _hold(settings: Settings, store: Store, post: Post, now: datetime, problem: str) -> Release:
    store.hold(post.slug, post.date, problem, now=now)
    message = (
        f"HELD: {post.slug} ({post.title!r}) was due {local(post.date, settings)} but is not released: {problem}. "
        f"Run `pipeline approve {post.slug} --by NAME`; it is released within "
        f"{settings.scheduler.rescan_seconds:g} s of the approval"
    )
    return _say(Release(post.slug, "held", message), logging.WARNING)

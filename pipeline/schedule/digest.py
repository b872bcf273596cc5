"""The digest: one newsletter of every post mailed since the last digest.

The scheduler's digest job and ``pipeline send --digest`` pick posts the same way:
by their release records (an e-mail publication released after ``since``), never by
the dates in the files. The digest is rendered from the posts as they are now, so
under ``require_approval`` a post whose file changed after its approval is left out
(and the log says so). One digest a day: the campaign is keyed by the clinic's date.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pipeline.channels.newsletter import digest_key, render_digest
from pipeline.channels.templating import make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.ledger.releases import LAST_DIGEST_KEY
from pipeline.ledger.store import Store
from pipeline.mail.sender import start_campaign
from pipeline.mail.transports import Transport
from pipeline.schedule.gate import approval_problem
from pipeline.schedule.release import Release, release_lock
from pipeline.schedule.sending import deliver_campaign
from pipeline.schedule.when import local
from pipeline.site.build import load_posts

log = logging.getLogger("pipeline.release")


def digest_posts(settings: Settings, store: Store, since: datetime, now: datetime) -> tuple[list[Post], list[str]]:
    """The posts a digest of (since, now] holds, and why any mailed post is left out."""
    mailed = [m for m in store.mailings() if since < m.released_at <= now]
    if not mailed:
        return [], []
    posts, _errors = load_posts(settings)
    by_slug = {p.slug: p for p in posts}
    chosen, left_out = [], []
    for mailing in mailed:
        post = by_slug.get(mailing.slug)
        if post is None or post.draft:
            left_out.append(f"{mailing.slug}: its file is gone, invalid or a draft now")
            continue
        problem = approval_problem(post, store.get_approval(post.slug), settings)
        if problem is not None:
            left_out.append(f"{mailing.slug}: {problem}")
            continue
        chosen.append(post)
    return chosen, left_out


def send_digest(
    settings: Settings,
    now: datetime,
    *,
    store: Store,
    transport: Transport | None = None,
    since: datetime | None = None,
    deliver_now: bool = True,
) -> Release:
    """Start (and deliver) the digest of everything mailed since ``since`` (default: the
    last digest, or the first run). The outcome's status says what happened:
    ``released``, or ``already`` (today's digest exists) or ``nothing`` with the reason."""
    key = digest_key(now, settings)
    with release_lock:
        existing = store.get_campaign_by_key(key)
        if existing is not None:
            return _say(
                Release(
                    key,
                    "already",
                    f"digest: today's digest ({key}) was already started at {local(existing.created_at, settings)}; "
                    "one digest a day, nothing sent",
                    campaign_id=existing.id if existing.status != "finished" else None,
                )
            )
        last = store.get_meta(LAST_DIGEST_KEY)
        start = since or (datetime.fromisoformat(last) if last else store.first_run_at(now))
        posts, left_out = digest_posts(settings, store, start, now)
        for reason in left_out:
            log.warning("digest: left out %s", reason)
        if not posts:
            if since is None:
                store.set_meta(LAST_DIGEST_KEY, now.isoformat())
            what = "nothing was e-mailed" if not left_out else "nothing that may be mailed was released"
            return _say(Release(key, "nothing", f"digest: {what} since {local(start, settings)}; no digest sent"))
        newsletter = render_digest(posts, settings, make_environment(settings), now=now)
        campaign_id = start_campaign(store, settings, newsletter, kind="digest", now=now)
        store.set_meta(LAST_DIGEST_KEY, now.isoformat())
    outcome = _say(
        Release(
            key,
            "released",
            f"digest {key}: {len(posts)} post(s) since {local(start, settings)}: " + ", ".join(p.slug for p in posts),
            channels=("email",),
            campaign_id=campaign_id,
        )
    )
    if deliver_now:
        outcome.delivery = deliver_campaign(settings, store, transport, campaign_id, key)
    return outcome


def _say(outcome: Release) -> Release:
    log.info("%s", outcome.message)
    return outcome

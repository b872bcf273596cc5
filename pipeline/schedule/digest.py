"""The digest: one newsletter of the posts mailed since the last digest, to the
subscribers they are owed to.

The scheduler's digest job and ``pipeline send --digest`` pick posts the same way:
by their release records (an e-mail publication released after ``since``), never by
the dates in the files. The digest is rendered from the posts as they are now, so
under ``require_approval`` a post whose file changed after its approval is left out
(and the log says so). One digest a day: its campaigns are keyed by the clinic's date.

Each subscriber gets only what the ledger says is owed to them (``ledger/digest_rows.py``):
the articles released while they were on the digest that they have not had. Those
owed the same articles share a campaign; nobody owed anything gets a digest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from datetime import datetime

from pipeline.channels.newsletter import render_digest
from pipeline.channels.templating import make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.ledger.digest_rows import DigestGroup
from pipeline.ledger.releases import LAST_DIGEST_KEY
from pipeline.ledger.store import Store
from pipeline.mail.message import MessageTemplate
from pipeline.mail.transports import Transport
from pipeline.schedule.gate import approval_problem
from pipeline.schedule.release import Release, release_lock
from pipeline.schedule.sending import deliver_campaign
from pipeline.schedule.when import local
from pipeline.site.build import load_posts
from pipeline.urls import digest_key

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


def digest_readers(store: Store, posts: list[Post]) -> dict[frozenset[str], list[int]]:
    """The subscribers owed some of ``posts``, grouped by exactly which."""
    groups: dict[frozenset[str], list[int]] = defaultdict(list)
    for subscriber_id, slugs in store.owed_digest_items([p.slug for p in posts]).items():
        groups[slugs].append(subscriber_id)
    return dict(groups)


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
        existing = store.digest_campaigns_on(key)
        if existing:
            unfinished = [c.id for c in existing if c.status != "finished"]
            return _say(
                Release(
                    key,
                    "already",
                    f"digest: today's digest ({key}) was already started at "
                    f"{local(existing[0].created_at, settings)}; one digest a day, nothing sent",
                    campaign_id=unfinished[0] if unfinished else None,
                    campaign_ids=tuple(unfinished),
                )
            )
        last = store.get_meta(LAST_DIGEST_KEY)
        start = since or (datetime.fromisoformat(last) if last else store.first_run_at(now))
        posts, left_out = digest_posts(settings, store, start, now)
        for reason in left_out:
            log.warning("digest: left out %s", reason)
        readers = digest_readers(store, posts) if posts else {}
        if not readers:
            if since is None:
                store.set_meta(LAST_DIGEST_KEY, now.isoformat())
            if posts:
                what = f"nobody is owed the {len(posts)} post(s) e-mailed (each reader got them on their own)"
            elif left_out:
                what = "nothing that may be mailed was released"
            else:
                what = "nothing was e-mailed"
            return _say(Release(key, "nothing", f"digest: {what} since {local(start, settings)}; no digest sent"))
        campaigns = store.create_digest_campaigns(_groups(settings, key, posts, readers, now), now=now)
        store.set_meta(LAST_DIGEST_KEY, now.isoformat())
    ids = tuple(c.id for c in campaigns)
    count = sum(len(subscribers) for subscribers in readers.values())
    outcome = _say(
        Release(
            key,
            "released",
            f"digest {key}: {len(posts)} post(s) since {local(start, settings)} to {count} digest reader(s)"
            + (f" in {len(ids)} campaigns (each gets only what it has not had)" if len(ids) > 1 else "")
            + ": "
            + ", ".join(p.slug for p in posts if any(p.slug in slugs for slugs in readers)),
            channels=("email",),
            campaign_id=ids[0],
            campaign_ids=ids,
        )
    )
    if deliver_now:
        outcome.delivery = deliver_campaign(settings, store, transport, ids, key)
    return outcome


def _groups(
    settings: Settings, key: str, posts: list[Post], readers: dict[frozenset[str], list[int]], now: datetime
) -> list[DigestGroup]:
    """One campaign per set of owed posts: the largest set (usually everything) keyed
    ``digest-DATE``, any others ``digest-DATE-2``, ``-3``... in a fixed order."""
    env = make_environment(settings)
    ordered = sorted(readers.items(), key=lambda pair: (-len(pair[0]), -len(pair[1]), sorted(pair[0])))
    groups = []
    for number, (slugs, subscriber_ids) in enumerate(ordered, start=1):
        newsletter = render_digest([p for p in posts if p.slug in slugs], settings, env, now=now)
        if number > 1:
            newsletter = dataclasses.replace(newsletter, key=f"{key}-{number}")
        MessageTemplate(newsletter, settings)  # a broken template fails here, before any row exists
        groups.append(
            DigestGroup(
                key=newsletter.key,
                subject=newsletter.subject,
                content=newsletter.to_json(),
                slugs=tuple(sorted(slugs)),
                subscriber_ids=tuple(sorted(subscriber_ids)),
            )
        )
    return groups


def _say(outcome: Release) -> Release:
    log.info("%s", outcome.message)
    return outcome

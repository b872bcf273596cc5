"""The one posting path: owe a post per platform at release, then post what is due.

Each row is recorded as ``posting`` before the call and ``posted`` after it (see
``pipeline.ledger.social_rows``). A row found ``posting`` by a later pass is looked up
on the server first (Mastodon: the account's statuses carrying the link, and the same
``Idempotency-Key``; Bluesky: the record under the same key), so a crash between the
call and its record never makes a second post. 429, 5xx and network faults are retried
with backoff, then left for the next pass; a refused credential (401) pauses that
platform only, until the credential in the environment changes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from pipeline.channels.social.card import render_card
from pipeline.channels.social.snippets import render_snippets, social_link
from pipeline.channels.templating import make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.errors import PipelineError
from pipeline.ledger.social_rows import SocialPost
from pipeline.ledger.store import Store
from pipeline.posting.bluesky import BlueskyAccount
from pipeline.posting.mastodon import MastodonAccount
from pipeline.posting.outcomes import Posted, PostingFault, fingerprint
from pipeline.posting.owed import remote_key

log = logging.getLogger("pipeline.social")

CREDENTIALS = {"mastodon": "PIPELINE_MASTODON_TOKEN", "bluesky": "PIPELINE_BLUESKY_APP_PASSWORD"}
MAX_WAIT_SECONDS = 60.0  # the longest one backoff waits inside a pass; longer waits go to the next pass

Account = MastodonAccount | BlueskyAccount


@dataclass
class Outcome:
    slug: str
    platform: str
    status: str  # posted | found | retry | paused | failed | held | dry-run
    message: str


class _Pass:
    """One pass over what is due: one account per platform, opened when first needed."""

    def __init__(self, settings: Settings, store: Store, env: Mapping[str, str], sleep: Callable[[float], None]):
        self.settings, self.store, self.env, self.sleep = settings, store, env, sleep
        self.accounts: dict[str, Account] = {}
        self.blocked: dict[str, str] = {}  # platform -> why nothing more is tried this pass

    def credential(self, platform: str) -> str:
        return self.env.get(CREDENTIALS[platform], "")

    def paused(self, platform: str, now: datetime) -> str | None:
        """Why ``platform`` is paused, or None; a new credential lifts a pause."""
        if platform in self.blocked:
            return self.blocked[platform]
        pause = self.store.platform_pauses().get(platform)
        if pause is None:
            return None
        if pause.credential_sha256 != fingerprint(self.credential(platform)):
            self.store.lift_pause(platform)
            log.info("%s: the credential changed; posting resumes", platform)
            return None
        return pause.reason

    def pause(self, platform: str, reason: str, now: datetime) -> None:
        self.store.pause_platform(
            platform, reason=reason, credential_sha256=fingerprint(self.credential(platform)), now=now
        )
        self.store.audit(
            actor="pipeline", actor_email="", action="social pause", now=now, detail=f"{platform}: {reason}"
        )
        log.error("%s: PAUSED: %s. Set a new %s; posting resumes by itself", platform, reason, CREDENTIALS[platform])
        self.blocked[platform] = reason

    def account(self, platform: str) -> Account:
        if platform not in self.accounts:
            secret = self.credential(platform)
            if not secret:
                raise PostingFault(f"{CREDENTIALS[platform]} is not set", credential=True)
            post = self.settings.social.post
            if platform == "mastodon":
                assert post.mastodon is not None
                self.accounts[platform] = MastodonAccount(
                    post.mastodon.server, secret, visibility=post.mastodon.visibility
                )
            else:
                assert post.bluesky is not None
                self.accounts[platform] = BlueskyAccount(post.bluesky.service, post.bluesky.handle, secret)
        return self.accounts[platform]


def post_due(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    slugs: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
    due_by: datetime | None = None,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Post every owed row that is due by ``due_by`` (default ``now``; of ``slugs`` and
    ``platforms`` when given)."""
    from pipeline.site.build import find_post

    run = _Pass(settings, store, os.environ if env is None else env, sleep)
    wanted = [p for p in settings.social.post.platforms() if platforms is None or p in platforms]
    outcomes = []
    for row in store.social_posts_due(due_by or now, wanted):
        if slugs is not None and row.slug not in slugs:
            continue
        reason = run.paused(row.platform, now)
        if reason is not None:
            outcomes.append(Outcome(row.slug, row.platform, "paused", f"{row.platform} is paused: {reason}"))
            continue
        try:
            post = find_post(settings, row.slug)
        except PipelineError as error:
            store.retry_social_post(row.id, error=str(error), at=now + timedelta(minutes=5))
            outcomes.append(_say(Outcome(row.slug, row.platform, "held", f"{row.slug}: {error}"), logging.ERROR))
            continue
        outcomes.append(_post_one(run, row, post, now))
    return outcomes


def _changed_since_release(store: Store, settings: Settings, post: Post) -> str | None:
    release = store.get_release(post.slug)
    if release is None:
        return "it was never released"
    if release.content_hash == post.content_hash:
        return None
    # The release gate's rule (schedule/gate.py), here without importing a higher layer.
    if not settings.scheduler.require_approval:
        return None
    approval = store.get_approval(post.slug)
    if approval is None:
        return "not approved"
    return None if approval.covers(post.content_hash) else f"changed after its approval by {approval.by}"


def _post_one(run: _Pass, row: SocialPost, post: Post, now: datetime) -> Outcome:
    settings, store = run.settings, run.store
    problem = _changed_since_release(store, settings, post)
    if problem is not None:
        message = f"{row.slug}: not posted to {row.platform}: the post changed after its release and is {problem}"
        store.retry_social_post(row.id, error=message, at=now + timedelta(minutes=5))
        return _say(Outcome(row.slug, row.platform, "held", message), logging.ERROR)
    attempts = settings.social.post.max_attempts
    for attempt in range(1, attempts + 1):
        try:
            return _attempt(run, row, post, now)
        except PostingFault as fault:
            if fault.credential:
                run.pause(row.platform, str(fault), now)
                store.retry_social_post(row.id, error=str(fault), at=now)
                return Outcome(row.slug, row.platform, "paused", str(fault))
            if not fault.retry:
                store.fail_social_post(row.id, error=str(fault))
                return _say(Outcome(row.slug, row.platform, "failed", f"{row.slug}: {fault}"), logging.ERROR)
            delay = (
                fault.wait if fault.wait is not None else settings.social.post.retry_base_seconds * 2 ** (attempt - 1)
            )
            if attempt == attempts or delay > MAX_WAIT_SECONDS:
                store.retry_social_post(row.id, error=str(fault), at=now + timedelta(seconds=max(delay, 60)))
                message = f"{row.slug}: {fault}; tried {attempt} time(s), trying again later"
                return _say(Outcome(row.slug, row.platform, "retry", message), logging.WARNING)
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", row.slug, fault, delay, attempt, attempts)
            run.sleep(delay)
            row = store.get_social_post(row.slug, row.platform) or row
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(run: _Pass, row: SocialPost, post: Post, now: datetime) -> Outcome:
    settings, store = run.settings, run.store
    account = run.account(row.platform)
    link = social_link(post, settings, row.platform)
    if row.status == "posting":  # a pass died around the call: ask the server first
        found = account.find(link) if isinstance(account, MastodonAccount) else account.find(row.remote_key)
        if found is not None:
            return _record(
                store, row, found, now, "found", "found on the server after an interrupted attempt; not posted again"
            )
    if isinstance(account, MastodonAccount):
        social = msgspec.structs.replace(settings.social, mastodon_limit=account.max_characters())
        settings = msgspec.structs.replace(settings, social=social)
    snippet = render_snippets(post, settings, make_environment(settings))[row.platform]
    if not store.start_social_post(row.id, now=now):
        return Outcome(row.slug, row.platform, "posted", "posted meanwhile by another process")
    if isinstance(account, MastodonAccount):
        posted = account.post(snippet.text, key=row.remote_key)
    else:
        posted = account.post(
            rkey=row.remote_key, text=snippet.text, facets=snippet.facets, created_at=now,
            card=(link, post.title, post.summary), thumbnail=render_card(post.title, settings),
        )  # fmt: skip
    return _record(store, row, posted, now, "posted", "posted")


def _record(store: Store, row: SocialPost, posted: Posted, now: datetime, status: str, what: str) -> Outcome:
    store.finish_social_post(row.id, remote_id=posted.remote_id, remote_url=posted.url, now=now)
    detail = f"{row.platform}: {what}: {posted.url}"
    store.audit(actor="pipeline", actor_email="", action="social post", now=now, slug=row.slug, detail=detail)
    return _say(Outcome(row.slug, row.platform, status, f"{row.slug}: {detail}"))


def _say(outcome: Outcome, level: int = logging.INFO) -> Outcome:
    log.log(level, "%s", outcome.message)
    return outcome


def dry_run(settings: Settings, post: Post, platforms: Sequence[str]) -> list[Outcome]:
    """What would be sent, without a call."""
    snippets = render_snippets(post, settings, make_environment(settings))
    return [
        Outcome(post.slug, p, "dry-run", f"{p} ({remote_key(p, post.slug, post.date)}):\n{snippets[p].text}")
        for p in platforms
    ]


__all__ = ["Outcome", "dry_run", "post_due"]

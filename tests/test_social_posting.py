"""Direct posting through the ledger: once per post and platform, whatever fails.

Mastodon and the Bluesky PDS are STAND-INS (tests/social_servers.py says why and which
documented behaviour they follow); the clients are the real Mastodon.py and atproto SDK.
"""

from __future__ import annotations

import html
import io
import os
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.posting.keys import bluesky_rkey
from pipeline.posting.run import post_due
from pipeline.schedule.release import release_posts
from pipeline.web.app import create_app
from tests.conftest import make_project
from tests.social_servers import TID, BlueskyPdsStandIn, MastodonStandIn

TOKEN, PASSWORD = "mastodon-token", "app-password"
ENV = {"PIPELINE_MASTODON_TOKEN": TOKEN, "PIPELINE_BLUESKY_APP_PASSWORD": PASSWORD}
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def servers() -> Iterator[tuple[MastodonStandIn, BlueskyPdsStandIn]]:
    with MastodonStandIn(TOKEN) as mastodon, BlueskyPdsStandIn("clinic.test", PASSWORD) as pds:
        yield mastodon, pds


def posting_project(tmp_path: Path, mastodon: MastodonStandIn, pds: BlueskyPdsStandIn) -> Path:
    project = make_project(tmp_path)
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text()
        + f'\n[social.post.mastodon]\nserver = "{mastodon.url}"\n'
        + f'[social.post.bluesky]\nhandle = "clinic.test"\nservice = "{pds.url}"\n'
        + "[social.post]\nretry_base_seconds = 0\n"
    )
    return project


def write_post(project: Path, slug: str, when: datetime, extra: str = "") -> None:
    (project / "posts" / f"{slug}.md").write_text(
        f"---\ntitle: {slug.replace('-', ' ').capitalize()}\ndate: {when.isoformat()}\n{extra}"
        "summary: Liners wear out. Here is how to tell when yours needs replacing.\n---\nBody.\n"
    )


def released(settings: Settings, slug: str, when: datetime) -> Store:
    store = Store.open(settings)
    store.first_run_at(when - timedelta(hours=1))
    (outcome,) = release_posts(settings, [slug], when, store=store, deliver_now=False)
    assert outcome.status == "released", outcome.message
    return store


def test_a_release_posts_once_to_each_platform_with_a_link_card(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn]
) -> None:
    mastodon, pds = servers
    project = posting_project(tmp_path, mastodon, pds)
    write_post(
        project,
        "liner-care",
        NOW - timedelta(minutes=1),
        'social: {bluesky: "Liners wear out, says @friend.test. Ask us."}\n',
    )
    settings = load_settings(project / "pipeline.toml")
    with released(settings, "liner-care", NOW) as store:
        outcomes = post_due(settings, store, NOW, env=ENV, sleep=lambda s: None)
        assert sorted((o.platform, o.status) for o in outcomes) == [("bluesky", "posted"), ("mastodon", "posted")]
        assert post_due(settings, store, NOW + timedelta(hours=2), env=ENV) == []  # nothing owed any more
        rows = {r.platform: r for r in store.social_posts_for("liner-care")}
        assert {p: r.status for p, r in rows.items()} == {"mastodon": "posted", "bluesky": "posted"}
        assert [e.action for e in store.audit_entries(slug="liner-care")].count("social post") == 2
    assert len(mastodon.statuses) == 1
    assert "utm_source=mastodon" in mastodon.statuses[0]["text"] and "@" not in mastodon.statuses[0]["text"]
    (((collection, rkey), record),) = pds.records.items()
    assert (
        collection == "app.bsky.feed.post"
        and TID.match(rkey)
        and rkey == bluesky_rkey("liner-care", NOW - timedelta(minutes=1))
    )
    text = record["text"].encode()
    features = {
        text[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(): f["features"][0] for f in record["facets"]
    }
    assert features["@friend.test"] == {"$type": "app.bsky.richtext.facet#mention", "did": pds.accounts["friend.test"]}
    external = record["embed"]["external"]
    assert record["embed"]["$type"] == "app.bsky.embed.external"
    assert external["uri"].startswith("https://jamesonprosthetics.com/archive/liner-care?utm_source=bluesky")
    assert external["title"] == "Liner care"
    thumb = pds.blobs[external["thumb"]["ref"]["$link"]]
    assert len(thumb) <= 1_000_000 and Image.open(io.BytesIO(thumb)).size == (1200, 630)
    with TestClient(create_app(settings)) as client:  # the page's og:image is the same card
        served = client.get("/archive/liner-care.png")
    assert served.status_code == 200 and served.content == thumb


def test_a_backfill_post_is_never_posted(tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn]) -> None:
    mastodon, pds = servers
    project = posting_project(tmp_path, mastodon, pds)
    write_post(project, "old-news", NOW - timedelta(days=30))
    settings = load_settings(project / "pipeline.toml")
    with Store.open(settings) as store:
        store.first_run_at(NOW - timedelta(hours=1))
        (outcome,) = release_posts(settings, ["old-news"], NOW, store=store, deliver_now=False)
        assert outcome.status == "backfill"
        assert post_due(settings, store, NOW, env=ENV) == [] and store.social_posts_for("old-news") == []
    assert mastodon.statuses == [] and pds.records == {}


def test_a_refused_credential_pauses_only_that_platform_until_it_changes(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn]
) -> None:
    mastodon, pds = servers
    project = posting_project(tmp_path, mastodon, pds)
    write_post(project, "liner-care", NOW - timedelta(minutes=1))
    settings = load_settings(project / "pipeline.toml")
    stale = {**ENV, "PIPELINE_MASTODON_TOKEN": "revoked"}
    with released(settings, "liner-care", NOW) as store:
        outcomes = {o.platform: o.status for o in post_due(settings, store, NOW, env=stale)}
        assert outcomes == {"mastodon": "paused", "bluesky": "posted"}
        assert "mastodon" in store.platform_pauses()
        calls = len(mastodon.calls)
        # Paused: the same refused token is not tried again.
        assert {o.platform: o.status for o in post_due(settings, store, NOW, env=stale)} == {"mastodon": "paused"}
        assert len(mastodon.calls) == calls
        # A new token lifts the pause by itself.
        assert {o.platform: o.status for o in post_due(settings, store, NOW, env=ENV)} == {"mastodon": "posted"}
        assert store.platform_pauses() == {}
    assert len(mastodon.statuses) == 1 and len(pds.records) == 1


def test_429_and_5xx_are_retried_with_backoff_and_post_once(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn]
) -> None:
    mastodon, pds = servers
    mastodon.faults += [("/api/v1/statuses", 429), ("/api/v1/statuses", 503)]
    pds.faults += [("/xrpc/com.atproto.repo.createRecord", 429)]
    project = posting_project(tmp_path, mastodon, pds)
    write_post(project, "liner-care", NOW - timedelta(minutes=1))
    settings = load_settings(project / "pipeline.toml")
    waits: list[float] = []
    with released(settings, "liner-care", NOW) as store:
        outcomes = {o.platform: o.status for o in post_due(settings, store, NOW, env=ENV, sleep=waits.append)}
    assert outcomes == {"mastodon": "posted", "bluesky": "posted"}
    assert len(waits) == 3
    assert [c[2] for c in mastodon.calls if c[1] == "/api/v1/statuses"] == [429, 503, 200]
    assert len(mastodon.statuses) == 1 and len(pds.records) == 1


def test_a_post_refused_by_the_server_fails_loudly_and_is_not_retried(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn]
) -> None:
    mastodon, pds = servers
    mastodon.faults.append(("/api/v1/statuses", 422))
    project = posting_project(tmp_path, mastodon, pds)
    write_post(project, "liner-care", NOW - timedelta(minutes=1))
    settings = load_settings(project / "pipeline.toml")
    with released(settings, "liner-care", NOW) as store:
        outcomes = {o.platform: o.status for o in post_due(settings, store, NOW, env=ENV)}
        assert outcomes["mastodon"] == "failed"
        assert post_due(settings, store, NOW + timedelta(hours=1), env=ENV) == []
        row = store.get_social_post("liner-care", "mastodon")
        assert row is not None and row.status == "failed" and "422" in (row.last_error or "")


# --- the real scheduler, killed between the call and its record ---------------------------------


@pytest.mark.parametrize("platform", ["mastodon", "bluesky"])
def test_killed_after_the_call_and_before_the_record_the_resumed_scheduler_does_not_post_twice(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn], platform: str
) -> None:
    from tests.test_scheduler import Scheduler, configure

    mastodon, pds = servers
    project = posting_project(tmp_path, mastodon, pds)
    configure(project, delivery_seconds=0.5)
    other = "bluesky" if platform == "mastodon" else "mastodon"
    os.environ.update(ENV)
    os.environ[{"mastodon": "PIPELINE_BLUESKY_APP_PASSWORD", "bluesky": "PIPELINE_MASTODON_TOKEN"}[platform]] = ""
    schedulers: list[Scheduler] = []
    try:
        first = Scheduler(project)
        schedulers.append(first)
        server = mastodon if platform == "mastodon" else pds
        server.on_created = lambda: os.kill(first.process.pid, signal.SIGKILL)  # the post exists; no answer, no record
        first.wait_for("scheduler running", timeout=30)
        write_post(project, "liner-care", datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1))
        assert first.process.wait(60) == -signal.SIGKILL
        server.on_created = None
        settings = load_settings(project / "pipeline.toml")
        with Store.open(settings) as store:
            row = store.get_social_post("liner-care", platform)
            assert row is not None and row.status == "posting"  # called, never recorded
        second = Scheduler(project)
        schedulers.append(second)
        second.wait_for(rf"liner-care: {platform}: found on the server after an interrupted attempt", timeout=60)
        with Store.open(settings) as store:
            row = store.get_social_post("liner-care", platform)
            assert row is not None and row.status == "posted"
        assert len(mastodon.statuses if platform == "mastodon" else pds.records) == 1
        # The other platform's credential is not set: paused (once), while this one went on.
        if first.count(f"{other}: PAUSED") == 0:  # the first died before it came to the other platform
            second.wait_for(f"{other}: PAUSED", timeout=30)
        assert first.count(f"{other}: PAUSED") + second.count(f"{other}: PAUSED") == 1
        with Store.open(settings) as store:
            assert other in store.platform_pauses()
    finally:
        for key in ENV:
            os.environ.pop(key, None)
        for scheduler in schedulers:
            if scheduler.process.poll() is None:
                scheduler.kill()


def test_the_desk_queue_shows_each_platforms_post(
    tmp_path: Path, servers: tuple[MastodonStandIn, BlueskyPdsStandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_desk import PASSWORD, SECRET, sign_in

    monkeypatch.setenv(SECRET_ENV, SECRET)
    mastodon, pds = servers
    project = posting_project(tmp_path, mastodon, pds)
    write_post(project, "liner-care", NOW - timedelta(minutes=1))
    settings = load_settings(project / "pipeline.toml")
    stale = {**ENV, "PIPELINE_MASTODON_TOKEN": "revoked"}

    def queue_line() -> str:
        with TestClient(create_app(settings), base_url="https://testserver") as client:
            assert sign_in(client, "editor@clinic.example").status_code == 303
            page = html.unescape(client.get("/desk/").text)
        (line,) = re.findall(r"social: [^<]*", page)
        return line

    with released(settings, "liner-care", NOW) as store:
        store.add_staff("editor@clinic.example", "Eddie Editor", "editor", PASSWORD, now=NOW)
        assert queue_line() == "social: bluesky to post; mastodon to post"
        post_due(settings, store, NOW, env=stale)
        assert queue_line() == (
            f"social: bluesky posted; mastodon PAUSED: {store.platform_pauses()['mastodon'].reason}"
        )
        post_due(settings, store, NOW, env=ENV)
        assert queue_line() == "social: bluesky posted; mastodon posted"

"""Subscribers choose how often (issue 14): each article, or the weekly digest.

Real ledger (SQLite and PostgreSQL), the real release path and send loop into the
outbox Maildir; who got which article is read from the messages themselves. The
manage page is driven through the app here (a real browser drives it in
test_manage_browser.py).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from pipeline.cli.main import cli
from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import add_subscriber
from pipeline.ledger.tokens import SECRET_ENV, load_secret, make_token
from pipeline.schedule import release
from pipeline.schedule.digest import send_digest
from pipeline.web.app import create_app, mask_address
from tests.conftest import make_project
from tests.test_scheduler import at, configure, write_post

SECRET = "test-secret-0123456789abcdef0123456789"
WEEKLY = "0 9 * * mon"
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def clinic(tmp_path: Path, readers: dict[str, str], **scheduler: object) -> tuple[Path, Settings]:
    """A project whose scheduler first ran a week ago, with ``readers`` (address: frequency)."""
    project = make_project(tmp_path)
    settings = load_settings(configure(project, **scheduler))
    with Store.open(settings) as store:
        store.first_run_at(datetime.now(UTC) - timedelta(days=7))
        for address, frequency in readers.items():
            add_subscriber(store, settings, address, frequency=frequency)
    return project, settings


def messages(project: Path) -> list[EmailMessage]:
    folder = project / "state" / "outbox" / "new"
    if not folder.exists():
        return []
    parser = email.parser.BytesParser(policy=email.policy.default)
    found = []
    for path in sorted(folder.iterdir()):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def articles_received(project: Path, settings: Settings) -> Counter[tuple[str, str]]:
    """(address, slug) for every article that reached someone: a post's own e-mail
    (its X-Campaign is the slug) or an article listed in a digest."""
    got: Counter[tuple[str, str]] = Counter()
    for message in messages(project):
        to, campaign = str(message["To"]), str(message["X-Campaign"])
        if not campaign.startswith("digest-"):
            got[(to, campaign)] += 1
            continue
        text = message.get_body(("plain",))
        assert text is not None
        archive = re.escape(settings.clinic.base_url + "/archive/")
        for slug in re.findall(rf"Read the article:\n{archive}([a-z0-9-]+)", text.get_content()):
            got[(to, slug)] += 1
    return got


def release_now(settings: Settings, store: Store, slug: str, when: datetime) -> None:
    outcome = release.release_post(settings, slug, when, store=store)
    assert outcome.status == "released", outcome.message


def choose(store: Store, address: str, frequency: str, when: datetime) -> None:
    subscriber = store.get_subscriber_by_email(address)
    assert subscriber is not None
    store.set_subscriber_frequency(subscriber.id, frequency, via="manage page", now=when)


# --- the release path and the digest -------------------------------------------------------------


@pytest.mark.usefixtures("each_ledger")
def test_a_release_reaches_only_each_readers_and_the_digest_only_digest_readers(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, {"ann@example.org": "each", "dan@example.org": "digest"}, digest_cron=WEEKLY)
    now = datetime.now(UTC)
    write_post(project, "knee-care", at(-120), title="Knee care")
    with Store.open(settings) as store:
        release_now(settings, store, "knee-care", now)
        assert [(str(m["To"]), str(m["Subject"])) for m in messages(project)] == [("ann@example.org", "Knee care")]
        digest = send_digest(settings, now + timedelta(minutes=1), store=store)
        assert digest.status == "released", digest.message
        campaigns = {c.key: c for c in store.list_campaigns()}
        assert campaigns["knee-care"].audience == "each"
        assert len(digest.campaign_ids) == 1 and campaigns[digest.slug].audience == "digest"
        assert store.delivery_counts(campaigns[digest.slug].id)["sent"] == 1
    assert articles_received(project, settings) == Counter(
        {("ann@example.org", "knee-care"): 1, ("dan@example.org", "knee-care"): 1}
    )
    digests = [m for m in messages(project) if str(m["X-Campaign"]).startswith("digest-")]
    assert [str(m["To"]) for m in digests] == ["dan@example.org"]


@pytest.mark.usefixtures("each_ledger")
def test_switching_in_mid_week_never_doubles_nor_loses_an_article(tmp_path: Path) -> None:
    readers = {
        "ann@example.org": "each",  # each -> digest after the first article
        "dan@example.org": "digest",  # digest -> each after the first article
        "eve@example.org": "digest",  # digest -> each after both
        "fay@example.org": "each",  # each -> digest -> each, between the articles
    }
    project, settings = clinic(tmp_path, readers, digest_cron=WEEKLY)
    monday = datetime.now(UTC) - timedelta(days=3)
    write_post(project, "first-week", monday - timedelta(minutes=5), title="First week")
    write_post(project, "socket-fit", monday + timedelta(days=1), title="Socket fit")
    with Store.open(settings) as store:
        release_now(settings, store, "first-week", monday)
        choose(store, "ann@example.org", "digest", monday + timedelta(hours=2))
        choose(store, "dan@example.org", "each", monday + timedelta(hours=3))
        choose(store, "fay@example.org", "digest", monday + timedelta(hours=4))
        choose(store, "fay@example.org", "each", monday + timedelta(hours=5))
        release_now(settings, store, "socket-fit", monday + timedelta(days=1, minutes=1))
        choose(store, "eve@example.org", "each", monday + timedelta(days=2))
        digest = send_digest(settings, monday + timedelta(days=3), store=store)
        assert digest.status == "released", digest.message
        # Three sets of owed articles: three campaigns of one digest.
        assert len(digest.campaign_ids) == 3
        again = send_digest(settings, monday + timedelta(days=4), store=store)
        assert again.status == "nothing", again.message
        history = store.frequency_history(store.get_subscriber_by_email("fay@example.org").id)  # type: ignore[union-attr]
        assert [(old, new, via) for _at, old, new, via in history] == [
            ("each", "digest", "manage page"),
            ("digest", "each", "manage page"),
        ]
    got = articles_received(project, settings)
    everyone = {(address, slug) for address in readers for slug in ("first-week", "socket-fit")}
    assert set(got) == everyone, "an article was lost"
    assert all(count == 1 for count in got.values()), f"an article arrived twice: {got}"
    per_message = Counter(str(m["To"]) for m in messages(project))
    # ann: the first on its own, the second in the digest; dan: the second on its own, the
    # first in the digest (owed while he was on it); eve: both in one digest; fay: both on their own.
    assert per_message == Counter(
        {"ann@example.org": 2, "dan@example.org": 2, "eve@example.org": 1, "fay@example.org": 2}
    )


@pytest.mark.usefixtures("each_ledger")
def test_without_a_scheduled_digest_everyone_gets_each_article(tmp_path: Path) -> None:
    """A digest reader is never left with nothing: no digest_cron, no split."""
    project, settings = clinic(tmp_path, {"ann@example.org": "each", "dan@example.org": "digest"})
    write_post(project, "knee-care", at(-120), title="Knee care")
    with Store.open(settings) as store:
        release_now(settings, store, "knee-care", datetime.now(UTC))
        assert store.list_campaigns()[0].audience == "all"
    assert sorted(str(m["To"]) for m in messages(project)) == ["ann@example.org", "dan@example.org"]


@pytest.mark.usefixtures("each_ledger")
def test_send_says_how_many_get_the_article_now_and_how_many_in_their_digest(tmp_path: Path) -> None:
    project, _settings = clinic(
        tmp_path,
        {"ann@example.org": "each", "ben@example.org": "each", "dan@example.org": "digest"},
        digest_cron=WEEKLY,
    )
    write_post(project, "asked", at(-60), title="Asked")
    run = CliRunner().invoke(cli, ["send", "asked", "--dry-run", "--config", str(project / "pipeline.toml")])
    assert run.exit_code == 0, run.output
    assert "to 2 active subscribers (and to 1 in their next digest) via outbox" in run.output


# --- the ledger upgrade --------------------------------------------------------------------------


def test_a_ledger_made_before_frequencies_is_upgraded(tmp_path: Path) -> None:
    """(SQLite only: the ledger under test is a file.) tests/data/ledger-0007.sqlite was made
    by the code of migration 0007: three subscribers (one unsubscribed), a released post
    mailed to the two active ones, and a digest of it."""
    project = make_project(tmp_path)
    settings = load_settings(configure(project, digest_cron=WEEKLY))
    (project / "state").mkdir()
    shutil.copy(DATA / "ledger-0007.sqlite", project / "state" / "pipeline.db")
    with Store.open(settings) as store:
        subscribers = list(store.iter_subscribers())
        assert [(s.email, s.status, s.frequency) for s in subscribers] == [
            ("ann@example.org", "active", "each"),
            ("ben@example.org", "active", "each"),
            ("cy@example.org", "unsubscribed", "each"),
        ]
        assert store.count_frequencies() == {"each": 2, "digest": 0}
        campaigns = store.list_campaigns()
        assert [(c.key, c.audience) for c in campaigns] == [("knee-care", None), ("digest-2026-11-30", None)]
        assert [store.delivery_counts(c.id)["sent"] for c in campaigns] == [2, 2]
        assert store.frequency_history(subscribers[0].id) == []
        # The upgraded ledger takes the new choice and logs it.
        changed = store.set_subscriber_frequency(subscribers[1].id, "digest", via="cli")
        assert changed.frequency == "digest" and len(store.frequency_history(changed.id)) == 1
    with sqlite3.connect(project / "state" / "pipeline.db") as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
        assert names[-2:] == ["0007_bounces", "0008_frequency"]
        with pytest.raises(sqlite3.IntegrityError, match="subscribers_frequency"):
            conn.execute("UPDATE subscribers SET frequency = 'monthly' WHERE id = 1")


# --- the manage page, through the app ------------------------------------------------------------


@pytest.fixture
def manage_site(tmp_path: Path) -> tuple[Settings, int]:
    _project, settings = clinic(tmp_path, {"ann@example.org": "each"}, digest_cron=WEEKLY)
    with Store.open(settings) as store:
        subscriber = store.get_subscriber_by_email("ann@example.org")
        assert subscriber is not None
    return settings, subscriber.id


def form_token(page_text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page_text)
    assert found, page_text
    return found.group(1)


def test_opening_the_manage_link_changes_nothing_and_a_button_changes_it_at_once(
    manage_site: tuple[Settings, int],
) -> None:
    settings, subscriber_id = manage_site
    token = make_token("manage", subscriber_id, load_secret(settings))
    with TestClient(create_app(settings)) as client:
        for _ in range(2):  # a link scanner, then the reader
            page = client.get(f"/manage/{token}")
            assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
            assert mask_address("ann@example.org") in page.text and "ann@example.org" not in page.text
            assert page.text.count("<button") == 2 and 'id="current">Each article<' in page.text
        with Store.open(settings) as store:
            assert store.get_subscriber(subscriber_id).frequency == "each"  # type: ignore[union-attr]
            assert store.frequency_history(subscriber_id) == []
        chosen = client.post(f"/manage/{token}", data={"frequency": "digest", "csrf_token": form_token(page.text)})
        assert chosen.status_code == 200
        assert 'id="current">Weekly digest<' in chosen.text and "Saved" in chosen.text
    with Store.open(settings) as store:
        assert store.get_subscriber(subscriber_id).frequency == "digest"  # type: ignore[union-attr]
        assert [(old, new, via) for _at, old, new, via in store.frequency_history(subscriber_id)] == [
            ("each", "digest", "manage page")
        ]


def test_a_manage_post_without_the_form_token_changes_nothing(manage_site: tuple[Settings, int]) -> None:
    settings, subscriber_id = manage_site
    token = make_token("manage", subscriber_id, load_secret(settings))
    with TestClient(create_app(settings)) as client:
        refused = client.post(f"/manage/{token}", data={"frequency": "digest"})
        assert refused.status_code == 403 and "press your choice again" in refused.text
        nonsense = client.post(
            f"/manage/{token}",
            data={"frequency": "hourly", "csrf_token": form_token(client.get(f"/manage/{token}").text)},
        )
        assert nonsense.status_code == 400 and "Nothing was changed" in nonsense.text
    with Store.open(settings) as store:
        assert store.get_subscriber(subscriber_id).frequency == "each"  # type: ignore[union-attr]


def test_manage_and_unsubscribe_tokens_never_stand_in_for_each_other(manage_site: tuple[Settings, int]) -> None:
    settings, subscriber_id = manage_site
    secret = load_secret(settings)
    manage = make_token("manage", subscriber_id, secret)
    unsubscribe = make_token("unsubscribe", subscriber_id, secret)
    old = make_token("manage", subscriber_id, secret, datetime.now(UTC) - timedelta(days=91))
    with TestClient(create_app(settings)) as client:
        # A manage token unsubscribes nobody, whoever it names.
        assert client.post(f"/unsubscribe/{manage}", data={"List-Unsubscribe": "One-Click"}).status_code == 400
        page = client.get(f"/manage/{unsubscribe}")
        assert page.status_code == 400 and "This link does not work" in page.text
        expired = client.get(f"/manage/{old}")
        assert expired.status_code == 400 and "This link has expired" in expired.text
        forged = client.get(f"/manage/{manage[:-2]}xx")
        assert forged.status_code == 400 and "This link does not work" in forged.text
        assert client.post(f"/manage/{old}", data={"frequency": "digest"}).status_code == 400
    with Store.open(settings) as store:
        subscriber = store.get_subscriber(subscriber_id)
        assert subscriber is not None and (subscriber.status, subscriber.frequency) == ("active", "each")


def test_the_subscribe_form_offers_the_choice_and_each_article_is_the_default(
    manage_site: tuple[Settings, int],
) -> None:
    settings, _subscriber_id = manage_site
    with TestClient(create_app(settings)) as client:
        form = client.get("/subscribe").text
        assert 'name="frequency" value="each" checked' in form and 'value="digest">' in form
        client.post(
            "/subscribe",
            data={"email": "dan@example.org", "frequency": "digest", "csrf_token": form_token(form), "website": ""},
        )
        client.post("/subscribe", data={"email": "eve@example.org", "csrf_token": form_token(form), "website": ""})
    with Store.open(settings) as store:
        dan, eve = store.get_subscriber_by_email("dan@example.org"), store.get_subscriber_by_email("eve@example.org")
        assert dan is not None and (dan.status, dan.frequency) == ("pending", "digest")
        assert eve is not None and (eve.status, eve.frequency) == ("pending", "each")


@pytest.mark.usefixtures("each_ledger")
def test_send_digest_from_the_command_line_sends_every_group_of_one_digest(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, {"ann@example.org": "digest", "dan@example.org": "digest"}, digest_cron=WEEKLY)
    now = datetime.now(UTC)
    write_post(project, "first-week", now - timedelta(hours=3), title="First week")
    write_post(project, "socket-fit", now - timedelta(hours=2), title="Socket fit")
    with Store.open(settings) as store:
        release_now(settings, store, "first-week", now - timedelta(hours=1))
        choose(store, "dan@example.org", "each", now - timedelta(minutes=50))
        release_now(settings, store, "socket-fit", now - timedelta(minutes=40))
    config = ["--config", str(project / "pipeline.toml")]
    dry = CliRunner().invoke(cli, ["send", "--digest", "--dry-run", *config])
    assert dry.exit_code == 0, dry.output
    assert "to 2 digest readers (each gets what they have not had)" in dry.output
    run = CliRunner().invoke(cli, ["send", "--digest", "--yes", *config])
    assert run.exit_code == 0, run.output
    got = articles_received(project, settings)
    assert got == Counter(
        {
            ("ann@example.org", "first-week"): 1,
            ("ann@example.org", "socket-fit"): 1,
            ("dan@example.org", "first-week"): 1,  # owed while he was on the digest
            ("dan@example.org", "socket-fit"): 1,  # on its own
        }
    )
    with Store.open(settings) as store:
        digests = [c for c in store.list_campaigns() if c.kind == "digest"]
        assert len(digests) == 2 and all(c.status == "finished" for c in digests)

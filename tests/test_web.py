"""The web app over HTTP, with Starlette's test client: a real project folder, a real
build in out/, a real SQLite ledger and a real outbox Maildir. Every route and every
error path of issue 5."""

from __future__ import annotations

import logging
import mailbox
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from httpx import Response
from starlette.testclient import TestClient

from pipeline import urls
from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings, load_settings
from pipeline.ledger.campaigns import Campaign
from pipeline.ledger.store import Store
from pipeline.ledger.subscriber_rows import Subscriber
from pipeline.ledger.tokens import SECRET_ENV, load_secret, make_token
from pipeline.site.build import build
from pipeline.web.app import CSRF_COOKIE, RedactTokens, WebLimits, create_app, mask_address, redact
from tests.conftest import ROOT, make_project, write_post
from tests.live_server import free_port, live_server


def create_campaign(store: Store, newsletter: Newsletter, kind: str, **kwargs: Any) -> tuple[Campaign, bool]:
    """A campaign for ``newsletter``, frozen as the mail layer freezes it."""
    return store.create_campaign(newsletter.key, kind, newsletter.subject, newsletter.to_json(), **kwargs)


NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
POSTS = ROOT / "tests" / "golden" / "basic" / "posts"
SECRET = "a-test-secret-that-is-long-enough-0123456789"
BASE = "https://jamesonprosthetics.com"  # the configured base_url of the sample pipeline.toml


class Clock:
    """A clock the test moves by hand (the rate limiter's window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    project = make_project(tmp_path, posts=POSTS)
    settings = load_settings(project / "pipeline.toml")
    result = build(settings, NOW, jobs=1)
    assert result.ok, result.errors
    return settings


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as store:
        yield store


def make_client(settings: Settings, **limits: float) -> TestClient:
    return TestClient(create_app(settings, limits=WebLimits(**limits)))  # type: ignore[arg-type]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with make_client(settings) as client:
        yield client


def outbox(settings: Settings) -> list[EmailMessage]:
    folder = settings.resolve(Path(settings.delivery.transport.partition(":")[2]))
    if not folder.exists():
        return []
    box = mailbox.Maildir(folder, create=False)
    return [message_from_bytes(box.get_bytes(key), policy=policy.default) for key in sorted(box.keys())]  # type: ignore[misc]


def confirm_token(message: EmailMessage) -> str:
    text = message.get_body(("plain",))
    assert text is not None
    found = re.findall(r"/confirm/([A-Za-z0-9._-]+)", text.get_content())
    assert len(found) == 1
    return str(found[0])


def csrf_token(client: TestClient, path: str = "/subscribe") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def subscribe(client: TestClient, email: str, name: str = "", **extra: str) -> Response:
    form = {"email": email, "name": name, "csrf_token": csrf_token(client), "website": "", **extra}
    return client.post("/subscribe", data=form)


def comparable(response: Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Everything a caller can observe, except the clock."""
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k.lower() != "date")
    return response.status_code, response.content, headers


def add(store: Store, email: str, status: str = "active") -> Subscriber:
    return store.add_subscriber(email, None, status, "cli")


def no_traceback(response: Response) -> None:
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


# --- the URLs the pipeline hands out are all served -------------------------------------------


def test_every_public_url_is_served(client: TestClient, settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org")
    secret = load_secret(settings)
    public = [
        urls.subscribe_url(settings),
        urls.archive_url(settings),
        urls.post_url(settings, "edge-cases"),
        urls.digest_url(settings, "digest-2026-11-27"),
        urls.confirm_url(settings, make_token("confirm", sub.id, secret)),
        urls.unsubscribe_url(settings, make_token("unsubscribe", sub.id, secret)),
        *(urls.feed_url(settings, name) for name in ("feed.xml", "atom.xml", "feed.json")),
    ]
    for url in public:
        assert url.startswith(BASE)
        response = client.get(urlsplit(url).path)
        assert response.status_code == 200, url


# --- the subscribe form -------------------------------------------------------------------------


def test_subscribe_form_is_accessible_and_sets_a_csrf_cookie(client: TestClient) -> None:
    for path in ("/", "/subscribe"):
        client.cookies.clear()
        response = client.get(path)
        assert response.status_code == 200
        html = response.text
        assert '<html lang="en-US">' in html
        assert 'name="viewport"' in html
        assert '<label for="email">' in html and 'id="email"' in html
        assert '<label for="name">' in html and 'id="name"' in html
        assert 'aria-hidden="true"' in html and 'name="website"' in html and 'tabindex="-1"' in html
        assert "1407 Ashley River Road" in html  # the shared footer partial
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{CSRF_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert client.cookies[CSRF_COOKIE] in html
        assert response.headers["cache-control"] == "no-store"


def test_security_headers_on_every_kind_of_response(client: TestClient) -> None:
    for path in ("/", "/archive/", "/archive/edge-cases", "/feed.xml", "/no-such-page", "/confirm/x", "/unsubscribe/x"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


def test_subscribe_confirm_welcome(client: TestClient, settings: Settings, store: Store) -> None:
    response = subscribe(client, "  Ann.Lee@Example.ORG ", name="Ann  Lee")
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert "Ann.Lee" not in response.text and "ann.lee" not in response.text  # nothing echoed
    subscriber = store.get_subscriber_by_email("ann.lee@example.org")
    assert subscriber is not None
    assert (subscriber.status, subscriber.source, subscriber.name) == ("pending", "web", "Ann Lee")

    [message] = outbox(settings)
    assert message["To"] == "Ann.Lee@example.org"
    assert "confirm" in message["Subject"].lower()
    token = confirm_token(message)

    page = client.get(f"/confirm/{token}")  # opening the link only shows the button
    assert page.status_code == 200
    assert store.get_subscriber(subscriber.id).status == "pending"  # type: ignore[union-attr]
    welcome = client.post(f"/confirm/{token}")  # pressing it: no other field needed
    assert welcome.status_code == 200
    assert "you are subscribed" in welcome.text.lower()
    assert "A•••••e@example.org" in welcome.text  # masked, never the full address
    assert welcome.headers["cache-control"] == "no-store"
    assert store.get_subscriber(subscriber.id).status == "active"  # type: ignore[union-attr]

    again = client.post(f"/confirm/{token}")  # idempotent
    assert again.status_code == 200 and "you are subscribed" in again.text.lower()
    assert store.get_subscriber(subscriber.id).status == "active"  # type: ignore[union-attr]
    # Once active, opening the link again says so (there is nothing left to press).
    opened = client.get(f"/confirm/{token}")
    assert opened.status_code == 200 and "you are subscribed" in opened.text.lower() and "<button" not in opened.text


def test_a_mail_scanner_opening_the_confirm_link_confirms_nobody(settings: Settings, store: Store) -> None:
    """Scanners open (GET/HEAD) every link in a message: only a POST to the link confirms."""
    sub = add(store, "ann@example.org", "pending")
    token = make_token("confirm", sub.id, load_secret(settings))
    with make_client(settings) as scanner:  # no cookies, no form
        for _ in range(3):
            page = scanner.get(f"/confirm/{token}")
            assert page.status_code == 200
            assert scanner.head(f"/confirm/{token}").status_code == 200
        assert store.get_subscriber(sub.id).status == "pending"  # type: ignore[union-attr]
        # The page: one form posting to the link itself, one button, no field to fill in, no script.
        html = page.text
        assert html.count("<form") == 1 and html.count("<button") == 1
        assert f'<form method="post" action="/confirm/{token}">' in html
        assert "<input" not in html and "<script" not in html
        assert mask_address("ann@example.org") in html
        assert page.headers["cache-control"] == "no-store"
        assert "script-src" not in page.headers["content-security-policy"]
        confirmed = scanner.post(f"/confirm/{token}")  # the button's request, exactly
        assert confirmed.status_code == 200 and "you are subscribed" in confirmed.text.lower()
        assert "set-cookie" not in confirmed.headers
    assert store.get_subscriber(sub.id).status == "active"  # type: ignore[union-attr]


def test_responses_are_identical_for_known_and_unknown_addresses(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    add(store, "active@example.org", "active")
    add(store, "pending@example.org", "pending")
    add(store, "gone@example.org", "unsubscribed")
    observed = {}
    with make_client(settings, address_requests=1) as client:
        for email in ("new@example.org", "active@example.org", "pending@example.org", "gone@example.org"):
            observed[email] = comparable(subscribe(client, email))
        # A second request for one address is over its limit (nothing is sent): same answer.
        observed["limited"] = comparable(subscribe(client, "NEW@example.org"))
        # A bot filling the honeypot: same answer.
        observed["bot"] = comparable(subscribe(client, "bot@example.org", website="http://spam.example"))
    first = observed["new@example.org"]
    assert first[0] == 200
    for label, seen in observed.items():
        assert seen == first, label
    # What did happen: a confirmation to the new, pending and unsubscribed addresses;
    # nothing to the active one, the rate-limited repeat or the bot.
    sent_to = sorted(m["To"] for m in outbox(settings))
    assert sent_to == ["gone@example.org", "new@example.org", "pending@example.org"]
    assert store.get_subscriber_by_email("bot@example.org") is None
    assert store.get_subscriber_by_email("active@example.org").status == "active"  # type: ignore[union-attr]


def test_the_form_never_changes_an_active_subscriber(client: TestClient, settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org")
    assert subscribe(client, "ann@example.org", name="Somebody Else").status_code == 200
    after = store.get_subscriber(sub.id)
    assert after == sub  # same status, same name (none), same timestamps
    assert outbox(settings) == []


def test_invalid_addresses_get_a_clear_message_in_the_form(client: TestClient, store: Store) -> None:
    for email, expected in (
        ("", "Please enter your e-mail address"),
        ("ann@", "does not look like a complete e-mail address"),
        ("<script>alert(1)</script>@x", "does not look like a complete e-mail address"),
        ("a" * 250 + "@example.org", "too long"),
    ):
        response = subscribe(client, email, name="Ann")
        assert response.status_code == 400, email
        assert expected in response.text
        assert 'role="alert"' in response.text and 'aria-invalid="true"' in response.text
        assert 'value="Ann"' in response.text  # what they typed is kept
        assert "<script>alert(1)</script>" not in response.text
        no_traceback(response)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@x" in subscribe(client, "<script>alert(1)</script>@x").text
    assert store.count_subscribers()["pending"] == 0


def test_csrf_is_required_and_checked(client: TestClient, settings: Settings, store: Store) -> None:
    good = csrf_token(client)
    forged_mac = good.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAA"
    cases = {
        "no field": {"email": "a@example.org"},
        "other value": {"email": "a@example.org", "csrf_token": csrf_token(TestClient(create_app(settings)))},
        "forged": {"email": "a@example.org", "csrf_token": forged_mac},
    }
    for label, form in cases.items():
        response = client.post("/subscribe", data=form)
        assert response.status_code == 403, label
        assert "expired" in response.text and 'value="a@example.org"' in response.text
    # A forged value in both the cookie and the field (a cookie-injection attempt).
    client.cookies.set(CSRF_COOKIE, forged_mac)
    assert client.post("/subscribe", data={"email": "a@example.org", "csrf_token": forged_mac}).status_code == 403
    # No cookie at all: 403, and the answer carries a fresh cookie and field, so pressing again works.
    client.cookies.clear()
    response = client.post("/subscribe", data={"email": "a@example.org", "csrf_token": good})
    assert response.status_code == 403 and CSRF_COOKIE in response.headers["set-cookie"]
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert fresh is not None
    assert client.post("/subscribe", data={"email": "a@example.org", "csrf_token": fresh.group(1)}).status_code == 200
    assert [m["To"] for m in outbox(settings)] == ["a@example.org"]


def test_csrf_tokens_expire_by_the_apps_clock(settings: Settings) -> None:
    """The token's age is read from the app's clock: moved by hand, never waited for."""
    clock = Clock()
    with TestClient(create_app(settings, limits=WebLimits(csrf_max_age=60.0), clock=clock)) as client:
        token = csrf_token(client)
        clock.now += 60
        assert client.post("/subscribe", data={"email": "a@example.org", "csrf_token": token}).status_code == 200
        clock.now += 1
        response = client.post("/subscribe", data={"email": "b@example.org", "csrf_token": token})
        assert response.status_code == 403 and "expired" in response.text
    assert [m["To"] for m in outbox(settings)] == ["a@example.org"]


def test_honeypot_sends_nothing(client: TestClient, settings: Settings, store: Store) -> None:
    response = subscribe(client, "bot@example.org", website="https://cheap-pills.example")
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert outbox(settings) == []
    assert store.get_subscriber_by_email("bot@example.org") is None


def test_per_client_rate_limit(settings: Settings) -> None:
    clock = Clock()
    app = create_app(settings, limits=WebLimits(client_requests=2, client_window=600), clock=clock)
    with TestClient(app) as client:
        assert subscribe(client, "one@example.org").status_code == 200
        assert subscribe(client, "not an address").status_code == 400  # counts too
        limited = subscribe(client, "three@example.org")
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= 601
        assert "try again in about 10 minutes" in limited.text
        clock.now += 601
        assert subscribe(client, "three@example.org").status_code == 200
    assert sorted(m["To"] for m in outbox(settings)) == ["one@example.org", "three@example.org"]


def test_per_address_rate_limit(settings: Settings) -> None:
    clock = Clock()
    app = create_app(settings, limits=WebLimits(address_requests=2, address_window=3600), clock=clock)
    with TestClient(app) as client:
        for spelling in ("ann@example.org", "ANN@example.org", "Ann@Example.org", "ann@EXAMPLE.ORG"):
            assert subscribe(client, spelling).status_code == 200
        assert len(outbox(settings)) == 2
        clock.now += 3601
        assert subscribe(client, "ann@example.org").status_code == 200
    assert len(outbox(settings)) == 3


# --- confirm --------------------------------------------------------------------------------------


def test_forged_and_expired_confirm_links_get_a_friendly_page(
    client: TestClient, settings: Settings, store: Store
) -> None:
    sub = add(store, "pending@example.org", "pending")
    secret = load_secret(settings)
    good = make_token("confirm", sub.id, secret)
    body, _, mac = good.rpartition(".")
    other = add(store, "other@example.org", "pending")
    cases = {
        "damaged": f"{body}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        "other id": f"{other.id:x}.{body.split('.')[1]}.{mac}",
        "cut": good[:12],
        "unsubscribe token": make_token("unsubscribe", sub.id, secret),
        "foreign secret": make_token("confirm", sub.id, b"another-secret-entirely-0123456789"),
        "expired": make_token("confirm", sub.id, secret, datetime.now(UTC) - timedelta(days=8)),
    }
    for label, token in cases.items():
        for response in (client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}")):
            assert response.status_code == 400, label
            no_traceback(response)
            assert 'action="/subscribe"' in response.text  # a way to ask for a new link
            assert "new link" in response.text
            assert response.headers["cache-control"] == "no-store"
            if label == "expired":
                assert "has expired" in response.text
            else:
                assert "does not work" in response.text
    assert store.get_subscriber(sub.id).status == "pending"  # type: ignore[union-attr]
    assert store.get_subscriber(other.id).status == "pending"  # type: ignore[union-attr]
    # The form on that page works: a new link is on its way.
    assert subscribe(client, "pending@example.org").status_code == 200
    assert [m["To"] for m in outbox(settings)] == ["pending@example.org"]


def test_confirm_after_unsubscribing_does_not_resubscribe(client: TestClient, settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org", "pending")
    token = make_token("confirm", sub.id, load_secret(settings))
    store.set_subscriber_status(sub.id, "unsubscribed")
    for response in (client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}")):
        assert response.status_code == 400 and "no longer valid" in response.text
    assert store.get_subscriber(sub.id).status == "unsubscribed"  # type: ignore[union-attr]
    store.delete_subscriber(sub.id)
    assert client.get(f"/confirm/{token}").status_code == 400
    assert client.post(f"/confirm/{token}").status_code == 400


def test_a_link_requested_after_unsubscribing_brings_them_back(
    client: TestClient, settings: Settings, store: Store
) -> None:
    """Leaving and asking to return: status stays unsubscribed until the new link is clicked."""
    sub = add(store, "ann@example.org", "unsubscribed")
    left = store.get_subscriber(sub.id)
    assert left is not None
    left_at = left.unsubscribed_at or left.updated_at
    token = make_token("confirm", sub.id, load_secret(settings), issued_at=left_at + timedelta(seconds=2))
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 200 and page.text.count("<button") == 1, page.text
    assert store.get_subscriber(sub.id).status == "unsubscribed"  # type: ignore[union-attr]
    response = client.post(f"/confirm/{token}")
    assert response.status_code == 200, response.text
    assert store.get_subscriber(sub.id).status == "active"  # type: ignore[union-attr]


# --- unsubscribe -------------------------------------------------------------------------------------


def test_unsubscribe_page_shows_one_button_and_changes_nothing(
    client: TestClient, settings: Settings, store: Store
) -> None:
    sub = add(store, "ann@example.org")
    token = make_token("unsubscribe", sub.id, load_secret(settings))
    for _ in range(2):
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200
        assert page.text.count("<button") == 1 and page.text.count("<form") == 1
        assert f'action="/unsubscribe/{token}"' in page.text
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert "a•••••••@example.org" not in page.text and "a•1@" not in page.text
        assert mask_address("ann@example.org") in page.text
        assert page.headers["cache-control"] == "no-store"
    assert store.get_subscriber(sub.id).status == "active"  # type: ignore[union-attr]


def test_one_click_unsubscribe_rfc_8058(settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org")
    token = make_token("unsubscribe", sub.id, load_secret(settings))
    with make_client(settings) as mail_provider:  # no cookies, no page visited first
        response = mail_provider.post(
            f"/unsubscribe/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        assert "You are unsubscribed" in response.text
        assert store.get_subscriber(sub.id).status == "unsubscribed"  # type: ignore[union-attr]
        first_stamp = store.get_subscriber(sub.id).unsubscribed_at  # type: ignore[union-attr]
        # Again: idempotent, still 200, nothing changes.
        again = mail_provider.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200 and "You are unsubscribed" in again.text
        assert store.get_subscriber(sub.id).unsubscribed_at == first_stamp  # type: ignore[union-attr]
        # The page now says so instead of offering the button.
        page = mail_provider.get(f"/unsubscribe/{token}")
        assert page.status_code == 200 and "<button" not in page.text and "You are unsubscribed" in page.text


def test_one_click_as_multipart_form_data(client: TestClient, settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org")
    token = make_token("unsubscribe", sub.id, load_secret(settings))
    response = client.post(f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert store.get_subscriber(sub.id).status == "unsubscribed"  # type: ignore[union-attr]


def test_a_changed_unsubscribe_token_is_rejected(client: TestClient, settings: Settings, store: Store) -> None:
    ann = add(store, "ann@example.org")
    bob = add(store, "bob@example.org")
    token = make_token("unsubscribe", ann.id, load_secret(settings), NOW)
    version, id_hex, issued, mac = token.split(".")
    later = make_token("unsubscribe", ann.id, load_secret(settings), NOW + timedelta(seconds=1)).split(".")[2]
    changed = [
        f"{version}.{bob.id:x}.{issued}.{mac}",  # someone else's id
        f"{version}.{id_hex}.{later}.{mac}",
        f"{version}.{id_hex}.{issued}.{mac[::-1]}",
        f"{version}.0{id_hex}.{issued}.{mac}",  # same number, other spelling
        token + "x",
        make_token("confirm", ann.id, load_secret(settings)),
    ]
    for bad in changed:
        for response in (
            client.get(f"/unsubscribe/{bad}"),
            client.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"}),
        ):
            assert response.status_code == 400, bad
            assert "does not work" in response.text
            no_traceback(response)
    assert store.get_subscriber(ann.id).status == "active"  # type: ignore[union-attr]
    assert store.get_subscriber(bob.id).status == "active"  # type: ignore[union-attr]


def test_unsubscribe_post_needs_the_one_click_body(client: TestClient, settings: Settings, store: Store) -> None:
    sub = add(store, "ann@example.org")
    token = make_token("unsubscribe", sub.id, load_secret(settings))
    for form in ({}, {"List-Unsubscribe": "Two-Clicks"}, {"list-unsubscribe": "one-click"}):
        assert client.post(f"/unsubscribe/{token}", data=form).status_code == 400
    assert store.get_subscriber(sub.id).status == "active"  # type: ignore[union-attr]


def test_unsubscribe_keeps_bounced_and_handles_forgotten(client: TestClient, settings: Settings, store: Store) -> None:
    bounced = add(store, "bounced@example.org", "bounced")
    secret = load_secret(settings)
    response = client.post(
        f"/unsubscribe/{make_token('unsubscribe', bounced.id, secret)}", data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    assert store.get_subscriber(bounced.id).status == "bounced"  # type: ignore[union-attr]
    forgotten = add(store, "forget@example.org")
    store.delete_subscriber(forgotten.id)
    token = make_token("unsubscribe", forgotten.id, secret)
    assert client.get(f"/unsubscribe/{token}").status_code == 200
    assert client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200


# --- archive -----------------------------------------------------------------------------------------


def newsletter(key: str, subject: str) -> Newsletter:
    return Newsletter(
        key=key,
        subject=subject,
        preheader="",
        html="<p>x</p>",
        text="x",
        web_html="",
        web_url=f"{BASE}/archive/{key}",
        date=NOW,
        slugs=(key,),
    )


def test_archive_lists_sent_newsletters_newest_first(client: TestClient, store: Store) -> None:
    assert "We have not sent a newsletter yet" in client.get("/archive/").text
    create_campaign(
        store,
        newsletter("why-your-socket-fit-changes-in-the-first-year", "Socket fit"),
        "post",
        now=NOW - timedelta(days=60),
    )
    create_campaign(
        store, newsletter("edge-cases", "<script>alert('x')</script> & more"), "post", now=NOW - timedelta(days=1)
    )
    create_campaign(store, newsletter("digest-2026-11-27", "This month's digest"), "digest", now=NOW)
    create_campaign(store, newsletter("not-built", "Not built"), "post", now=NOW)  # no web page: not listed
    response = client.get("/archive/")
    assert response.status_code == 200
    html = response.text
    links = re.findall(r'<a href="/archive/([^"]+)">', html)
    assert links == ["digest-2026-11-27", "edge-cases", "why-your-socket-fit-changes-in-the-first-year"]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html and "<script>" not in html
    assert '<time datetime="2026-09-28">September 28, 2026</time>' in html
    # Every listed link opens.
    for slug in links:
        assert client.get(f"/archive/{slug}").status_code == 200
    # Without the slash: a permanent redirect.
    redirect = client.get("/archive", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"].endswith("/archive/")


def test_archive_page_is_the_built_web_version(client: TestClient, settings: Settings) -> None:
    response = client.get("/archive/botox-for-residual-and-phantom-limb-pain")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    built = (settings.out_dir / "archive" / "botox-for-residual-and-phantom-limb-pain.html").read_bytes()
    assert response.content == built
    assert b"/unsubscribe/" not in built and urls.TOKEN_PLACEHOLDER.encode() not in built
    assert response.headers["etag"] and response.headers["last-modified"]
    again = client.get(
        "/archive/botox-for-residual-and-phantom-limb-pain", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/archive/no-such-post",
        "/archive/Edge-Cases",
        "/archive/edge-cases.html",
        "/archive/..%2Fpipeline.toml",
        "/archive/%2e%2e",
        "/archive/.cache",
        "/archive/edge-cases/extra",
    ],
)
def test_archive_unknown_or_hostile_slugs_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "Page not found" in response.text
    no_traceback(response)


# --- feeds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("feed.xml", "application/rss+xml; charset=utf-8"),
        ("atom.xml", "application/atom+xml; charset=utf-8"),
        ("feed.json", "application/feed+json; charset=utf-8"),
    ],
)
def test_feeds_with_validators_and_304(client: TestClient, settings: Settings, name: str, media_type: str) -> None:
    response = client.get(f"/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (settings.out_dir / name).read_bytes()
    etag, modified = response.headers["etag"], response.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert modified.endswith(" GMT")

    def get(**headers: str) -> Response:
        return client.get(f"/{name}", headers=headers)

    assert get(**{"if-none-match": etag}).status_code == 304
    assert get(**{"if-none-match": f'"nope", W/{etag}'}).status_code == 304
    assert get(**{"if-none-match": "*"}).status_code == 304
    assert get(**{"if-none-match": '"nope"'}).status_code == 200
    assert get(**{"if-modified-since": modified}).status_code == 304
    assert get(**{"if-modified-since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert get(**{"if-modified-since": "not a date"}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    assert get(**{"if-none-match": '"nope"', "if-modified-since": modified}).status_code == 200
    not_modified = get(**{"if-none-match": etag})
    assert not_modified.content == b"" and not_modified.headers["etag"] == etag
    head = client.head(f"/{name}")
    assert head.status_code == 200 and head.headers["etag"] == etag

    # A rebuild that changes the file changes the validators.
    path = settings.out_dir / name
    path.write_bytes(path.read_bytes() + b"\n")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    changed = get(**{"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag

    path.unlink()
    assert client.get(f"/{name}").status_code == 404


# --- limits, methods, errors --------------------------------------------------------------------------------


def test_request_bodies_are_capped(settings: Settings, store: Store) -> None:
    with make_client(settings, max_body_bytes=1024) as client:
        token = csrf_token(client)
        big = {"email": "a@example.org", "csrf_token": token, "name": "x" * 5000}
        response = client.post("/subscribe", data=big)
        assert response.status_code == 413
        assert "Too much data" in response.text
        assert response.headers["x-content-type-options"] == "nosniff"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            yield f"email=a%40example.org&csrf_token={token}&name=".encode()
            for _ in range(10):
                yield b"x" * 500

        streamed = client.post(
            "/subscribe", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert streamed.status_code == 413
        assert client.post("/subscribe", content=b"x", headers={"content-length": "abc"}).status_code == 413
    assert store.get_subscriber_by_email("a@example.org") is None
    assert outbox(settings) == []


def test_wrong_methods_and_unknown_pages(client: TestClient) -> None:
    response = client.put("/subscribe", data={"email": "a@example.org"})
    assert response.status_code == 405
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]
    assert client.delete("/feed.xml").status_code == 405
    assert client.post("/archive/", data={}).status_code == 405
    missing = client.get("/wp-login.php")
    assert missing.status_code == 404 and "Page not found" in missing.text


def test_a_bug_shows_a_plain_500_page(settings: Settings) -> None:
    (settings.templates_dir / "web" / "check_inbox.html").write_text("{{ no_such_variable }}", encoding="utf-8")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = subscribe(client, "ann@example.org")
    assert response.status_code == 500
    assert "Sorry, something broke" in response.text
    no_traceback(response)
    assert "no_such_variable" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]


# --- logs -----------------------------------------------------------------------------------------------------


def test_redact_removes_tokens_from_paths() -> None:
    assert redact("GET /unsubscribe/1a.6789abcd.Zx_-9 HTTP/1.1") == "GET /unsubscribe/[redacted] HTTP/1.1"
    assert redact("/confirm/abc.def.ghi?x=1") == "/confirm/[redacted]?x=1"
    assert redact("/archive/edge-cases") == "/archive/edge-cases"


def test_access_log_records_never_contain_tokens(caplog: pytest.LogCaptureFixture) -> None:
    from uvicorn.logging import AccessFormatter

    token = "1a.6789abcd.Zx_-9AbCdEfGhIjKlMnOp"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/unsubscribe/{token}", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert token not in line
    assert line == '127.0.0.1:5000 - "POST /unsubscribe/[redacted] HTTP/1.1" 200 OK'


def test_app_logs_never_contain_tokens_or_addresses(
    client: TestClient, settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subscribe(client, "ann@example.org")
    token = confirm_token(outbox(settings)[0])
    client.get(f"/confirm/{token}")
    client.post(f"/confirm/{token}")
    sub = store.get_subscriber_by_email("ann@example.org")
    assert sub is not None
    unsubscribe = make_token("unsubscribe", sub.id, load_secret(settings))
    client.post(f"/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"})
    # The server side's records (httpx, the test's own client, logs its requests too).
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert f"subscriber {sub.id} is active" in text
    assert token not in text and unsubscribe not in text and "ann@example.org" not in text


def test_pipeline_serve_answers_and_its_access_log_has_no_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real command under uvicorn: the access log shows the request, never the token."""
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the server process inherits it
    project = make_project(tmp_path, posts=POSTS)
    settings = load_settings(project / "pipeline.toml")
    assert build(settings, NOW, jobs=1).ok
    with Store.open(settings) as store:
        sub = add(store, "ann@example.org")
    unsubscribe = make_token("unsubscribe", sub.id, load_secret(settings))
    confirm = make_token("confirm", sub.id, load_secret(settings))
    with live_server(project, free_port()) as server, httpx.Client(base_url=server.url) as http:
        assert http.get(f"/confirm/{confirm}").status_code == 200
        assert http.post(f"/confirm/{confirm}").status_code == 200
        assert http.get(f"/unsubscribe/{unsubscribe}").status_code == 200
        one_click = http.post(f"/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        assert "server" not in one_click.headers
        feed = http.get("/feed.xml")
        assert http.get("/feed.xml", headers={"if-none-match": feed.headers["etag"]}).status_code == 304
        assert http.get("/confirm/forged.token.here").status_code == 400
    log = server.log_text()
    assert '"GET /confirm/[redacted] HTTP/1.1" 200' in log
    assert '"POST /confirm/[redacted] HTTP/1.1" 200' in log
    assert '"POST /unsubscribe/[redacted] HTTP/1.1" 200' in log
    assert '"GET /feed.xml HTTP/1.1" 304' in log
    assert f"unsubscribe: subscriber {sub.id} unsubscribed" in log  # the app's own log reaches the console
    for secret_part in (unsubscribe, confirm, "forged.token.here"):
        assert secret_part not in log


def test_no_shipped_post_links_to_a_page_the_app_does_not_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every link on the web version of every post in posts/ that points at our own site is served
    (the Botox article once sent readers to /contact, a 404); mail links reach the clinic."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    project = make_project(tmp_path, posts=ROOT / "posts")
    settings = load_settings(project / "pipeline.toml")
    result = build(settings, datetime(2027, 2, 1, tzinfo=UTC), jobs=1)
    assert result.ok and len(result.released) == len(list((ROOT / "posts").glob("*.md"))), result.errors
    pages = sorted((settings.out_dir / "archive").glob("*.html"))
    assert len(pages) >= len(result.released)
    checked: set[str] = set()
    with make_client(settings) as client:
        for page in pages:
            assert client.get(f"/archive/{page.stem}").status_code == 200
            for href in re.findall(r'href="([^"]*)"', page.read_text(encoding="utf-8")):
                href = href.replace("&amp;", "&")
                if href.startswith(("mailto:", "tel:")):
                    assert href in (f"mailto:{settings.clinic.email}", "tel:+18439361642"), (page.name, href)
                    continue
                if href.startswith(BASE) or not urlsplit(href).scheme:
                    path = urlsplit(href).path or "/"
                    if path not in checked:
                        assert client.get(path).status_code == 200, (page.name, href)
                        checked.add(path)
    assert "/subscribe" in checked


# --- the one rate limiter ---------------------------------------------------------------------------------


def test_rate_limiter_counts_a_sliding_window_by_the_injected_clock() -> None:
    from pipeline.ratelimit import RateLimiter

    clock = Clock()
    limiter = RateLimiter(2, 10.0, clock=clock)
    assert limiter.hit("a") is None and limiter.hit("a") is None
    assert limiter.peek("a") == 10.0 and limiter.hit("a") == 10.0  # refused hits are not counted
    assert limiter.hit("b") is None  # keys are apart
    clock.now += 4
    assert limiter.hit("a") == 6.0
    clock.now += 6
    assert limiter.peek("a") is None and limiter.hit("a") is None
    limiter.forget("a")
    assert limiter.hit("a") is None and limiter.hit("a") is None


def test_rate_limiter_paces_a_send_loop_without_real_sleeping() -> None:
    """``RateLimiter(1, 1 / rate)``: ``wait`` sleeps (here: moves the clock) until each slot."""
    from pipeline.ratelimit import RateLimiter

    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    pacing = RateLimiter(1, 1 / 4, clock=clock, sleep=sleep)  # 4 messages a second
    started = clock.now
    for _ in range(9):
        pacing.wait()
    assert clock.now - started == pytest.approx(2.0)  # 9 messages: the first at once, then every 0.25 s
    assert slept == pytest.approx([0.25] * 8)


def test_a_share_card_is_drawn_when_first_asked_for_and_kept(settings: Settings) -> None:
    """The archive page's og:image: drawn from the page's own title on the first request,
    kept in state/cards/, answered 304 to a reader that has it; no page, no card."""
    from pipeline.channels.social.card import render_card

    write_post(
        settings.posts_dir, "2026-11-03-cards.md", "---\ntitle: Cards & sockets\ndate: 2026-11-03 09:00\n---\nBody.\n"
    )
    assert build(settings, NOW).errors == []
    assert not list((settings.out_dir / "archive").glob("*.png"))  # the build draws none
    with TestClient(create_app(settings)) as client:
        first = client.get("/archive/cards.png")
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        assert first.content == render_card("Cards & sockets", settings)
        assert [p.name for p in (settings.state_dir / "cards").iterdir()] == [first.headers["etag"].strip('"') + ".png"]
        again = client.get("/archive/cards.png", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert client.get("/archive/no-such-post.png").status_code == 404

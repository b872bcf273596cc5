"""The "manage your e-mail" page in a real browser (issue 14).

Playwright drives Debian's Chromium against a real ``pipeline serve`` process on
127.0.0.1. A newsletter goes out through the release path and the real send loop into
the outbox Maildir; the reader opens the manage link from that e-mail, sees their
choice, switches to the weekly digest with one press, and sees it at once. A forged
link, an expired one and an unsubscribe link put in its place are refused, and none
changes anything. Screenshots go to ``test-artifacts/manage/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import add_subscriber
from pipeline.ledger.tokens import SECRET_ENV, load_secret, make_token
from pipeline.schedule.release import release_post
from tests.conftest import make_project
from tests.live_server import LiveServer, free_port, live_server, set_base_url
from tests.test_browser import ARTIFACTS, VIEWPORTS, launch_chromium, require_chromium, wait_for_mail
from tests.test_scheduler import configure, write_post

pytestmark = pytest.mark.browser

READERS = {device: f"{device}.reader@example.org" for device in VIEWPORTS}


@pytest.fixture(scope="module")
def mailed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Settings]]:
    """A served site whose readers (one per viewport, each article) got one newsletter."""
    require_chromium()
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, "browser-test-secret-0123456789abcdef")  # shared by the server and this process
    project = make_project(tmp_path_factory.mktemp("manage"))
    port = free_port()
    set_base_url(project / "pipeline.toml", f"http://127.0.0.1:{port}")
    settings = load_settings(configure(project, digest_cron="0 9 * * mon"))
    now = datetime.now(UTC)
    write_post(project, "knee-care", now - timedelta(minutes=5), title="Knee care", extra="channels: {social: false}\n")
    with Store.open(settings) as store:
        store.first_run_at(now - timedelta(days=1))
        for address in READERS.values():
            add_subscriber(store, settings, address)
        outcome = release_post(settings, "knee-care", now, store=store)
        assert outcome.status == "released" and outcome.delivery is not None and outcome.delivery.sent == 2
    try:
        with live_server(project, port) as server:
            yield server, settings
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def browser(mailed: tuple[LiveServer, Settings]) -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


def manage_links(message: EmailMessage) -> tuple[str, str]:
    """The manage link of the plain-text part and of the HTML part (they must agree)."""
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    pattern = r"http://127\.0\.0\.1:\d+/manage/[A-Za-z0-9._-]+"
    (in_text,) = re.findall(pattern, text.get_content())
    (in_html,) = re.findall(pattern, html.get_content())
    return in_text, in_html


def frequency_of(settings: Settings, address: str) -> tuple[str, int]:
    with Store.open(settings) as store:
        subscriber = store.get_subscriber_by_email(address)
        assert subscriber is not None
        return subscriber.frequency, len(store.frequency_history(subscriber.id))


@pytest.mark.parametrize("device", sorted(VIEWPORTS))
def test_a_reader_switches_to_the_digest_from_the_link_in_their_e_mail(
    mailed: tuple[LiveServer, Settings], browser: Any, device: str
) -> None:
    from playwright.sync_api import expect

    server, settings = mailed
    shots = ARTIFACTS / "manage"
    shots.mkdir(parents=True, exist_ok=True)
    address = READERS[device]
    in_text, in_html = manage_links(wait_for_mail(settings, address, "Knee care"))
    assert in_text == in_html and in_text.startswith(server.url + "/manage/")
    context = browser.new_context(**VIEWPORTS[device])
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{device}-{name}.png"), full_page=True)

    try:
        # Opening the link (as a mail scanner also does) shows the choice and changes nothing.
        page.goto(in_text)
        expect(page.get_by_role("heading", level=1)).to_have_text("Manage your e-mail")
        expect(page.locator("p.lead")).to_contain_text("@example.org")
        assert address not in page.content()  # half-masked
        expect(page.locator("#current")).to_have_text("Each article")
        expect(page.get_by_role("button")).to_have_count(2)
        shot("1-manage")
        assert frequency_of(settings, address) == ("each", 0)

        # One press: the new choice is shown at once and kept in the ledger, with its log line.
        page.get_by_role("button", name="Weekly digest").click()
        expect(page.get_by_role("status")).to_contain_text("Saved: from now on you get the weekly digest")
        expect(page.locator("#current")).to_have_text("Weekly digest")
        expect(page.get_by_role("button", name="Weekly digest (your choice)")).to_be_visible()
        shot("2-saved")
        assert frequency_of(settings, address) == ("digest", 1)
        page.goto(in_text)  # opened again later: still the digest
        expect(page.locator("#current")).to_have_text("Weekly digest")

        # A forged link, an expired one, and an unsubscribe token in its place: refused, nothing changes.
        secret = load_secret(settings)
        with Store.open(settings) as store:
            subscriber = store.get_subscriber_by_email(address)
            assert subscriber is not None
        token = in_text.rsplit("/", 1)[1]
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        page.goto(f"{server.url}/manage/{forged}")
        expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
        expect(page.get_by_role("button")).to_have_count(0)
        shot("3-forged")
        expired = make_token("manage", subscriber.id, secret, datetime.now(UTC) - timedelta(days=91))
        page.goto(f"{server.url}/manage/{expired}")
        expect(page.get_by_role("heading", level=1)).to_have_text("This link has expired")
        expect(page.get_by_role("button")).to_have_count(0)
        shot("4-expired")
        page.goto(f"{server.url}/manage/{make_token('unsubscribe', subscriber.id, secret)}")
        expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
        assert frequency_of(settings, address) == ("digest", 1)
        assert problems == [], problems  # no CSP violation, no script error
    finally:
        context.close()
    log = server.log_text()
    assert "/manage/[redacted]" in log and token not in log

"""A real person's path through the web app, in a real browser.

Playwright drives Debian's Chromium against a real ``pipeline serve`` process on
127.0.0.1: subscribe (first with a typo), read the confirmation link from the outbox
Maildir, open it and press its button, receive a newsletter through the real send loop, read it in the
archive, and unsubscribe with the button from the link in that newsletter. Every
step is photographed at phone and desktop widths into ``test-artifacts/``.

Without /usr/bin/chromium the test is skipped, unless REQUIRE_BROWSER=1 (CI), where
a missing browser is a failure.
"""

from __future__ import annotations

import mailbox
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings, load_settings
from pipeline.content.edit import set_key
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.mail.sender import deliver
from pipeline.mail.transports import transport_from_spec
from pipeline.schedule.release import release_post
from pipeline.site.build import build
from tests.conftest import ROOT, make_project
from tests.live_server import LiveServer, free_port, live_server, set_base_url

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
POSTS = ROOT / "tests" / "golden" / "basic" / "posts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launch_chromium(*extra_args: str) -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a browser it downloads)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield chromium
        finally:
            chromium.close()


VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    },
    "desktop": {"viewport": {"width": 1280, "height": 900}},
}
# One post per run: a campaign is sent once per newsletter.
SLUGS = {"phone": "botox-for-residual-and-phantom-limb-pain", "desktop": "caring-for-the-skin-of-your-residual-limb"}

pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (install Debian's chromium package: apt-get install -y chromium)"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Settings]]:
    require_chromium()
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, "browser-test-secret-0123456789abcdef")  # shared by the server and this process
    project = make_project(tmp_path_factory.mktemp("site"), posts=POSTS)
    for path in (project / "posts").glob("*.md"):
        # The server's address is an IP, which X does not link: a snippet would count it
        # letter by letter and not fit. This test is about mail and pages, not snippets.
        path.write_bytes(set_key(path.read_bytes(), "channels", "{social: false}", path=path))
    port = free_port()
    set_base_url(project / "pipeline.toml", f"http://127.0.0.1:{port}")
    settings = load_settings(project / "pipeline.toml")
    result = build(settings, NOW, jobs=1)
    assert result.ok, result.errors
    try:
        with live_server(project, port) as server:
            yield server, settings
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def browser(site: tuple[LiveServer, Settings]) -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


def outbox_messages(settings: Settings) -> list[EmailMessage]:
    folder = settings.resolve(Path(settings.delivery.transport.partition(":")[2]))
    if not folder.exists():
        return []
    box = mailbox.Maildir(folder, create=False)
    return [message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.iterkeys()]  # type: ignore[misc]


def wait_for_mail(settings: Settings, to: str, subject_contains: str, timeout: float = 20) -> EmailMessage:
    """The confirmation is sent after the response (a background task): poll the Maildir."""
    deadline = time.monotonic() + timeout
    while True:
        for message in outbox_messages(settings):
            if parseaddr(str(message["To"]))[1] == to and subject_contains.lower() in str(message["Subject"]).lower():
                return message
        if time.monotonic() > deadline:
            raise AssertionError(f"no message to {to} about {subject_contains!r} in the outbox")
        time.sleep(0.1)


def link_in(message: EmailMessage, pattern: str) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.findall(pattern, body.get_content())
    assert found, f"no link matching {pattern!r}"
    return str(found[0])


@pytest.mark.parametrize("device", sorted(VIEWPORTS))
def test_subscribe_confirm_read_and_unsubscribe(site: tuple[LiveServer, Settings], browser: Any, device: str) -> None:
    from playwright.sync_api import expect

    server, settings = site
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    address = f"{device}.reader@example.org"
    context = browser.new_context(**VIEWPORTS[device])
    page = context.new_page()
    problems: list[str] = []
    # Chromium reports a page answered 400 (a form error) as a console error too; what
    # matters here is a CSP violation or a script error.
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{device}-{name}.png"), full_page=True)

    try:
        # The form, then a typo: the message appears in the form, next to the field.
        page.goto(server.url + "/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Get our articles by e-mail")
        shot("1-subscribe")
        page.get_by_label("Your e-mail address").fill(f"{device}.reader@")
        page.get_by_label("Your name").fill("Robin Reader")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("alert")).to_contain_text("does not look like a complete e-mail address")
        expect(page.get_by_label("Your name")).to_have_value("Robin Reader")
        shot("2-subscribe-error")

        page.get_by_label("Your e-mail address").fill(address)
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        shot("3-check-inbox")

        # The confirmation e-mail, read from the outbox, links back to this server.
        confirmation = wait_for_mail(settings, address, "confirm")
        confirm_url = link_in(confirmation, r"(http://127\.0\.0\.1:\d+/confirm/\S+)")
        assert confirm_url.startswith(server.url)
        page.goto(confirm_url)
        # Opening the link (as a mail scanner also does) only shows the button.
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
        expect(page.get_by_role("button")).to_have_count(1)
        with Store.open(settings) as store:
            subscriber = store.get_subscriber_by_email(address)
            assert subscriber is not None and subscriber.status == "pending"
        shot("4-confirm")
        page.get_by_role("button", name="Yes, send me the articles").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, you are subscribed")
        expect(page).to_have_url(confirm_url)
        shot("4-welcome")
        with Store.open(settings) as store:
            subscriber = store.get_subscriber_by_email(address)
            assert subscriber is not None and subscriber.status == "active"

            # A newsletter goes out through the release path and the real send loop, to the outbox.
            sent = release_post(settings, SLUGS[device], NOW, store=store, deliver_now=False, explicit=True)
            assert sent.campaign_id is not None, sent.message
            newsletter = Newsletter.from_json(store.campaign_content(sent.campaign_id))
            summary = deliver(store, settings, transport_from_spec(settings.delivery.transport, settings))
            assert (summary.sent, summary.ok) == (1, True)
        issue = wait_for_mail(settings, address, newsletter.subject[:20])

        # The archive lists it; its web version opens and looks like the newsletter.
        page.goto(server.url + "/archive/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Newsletter archive")
        shot("5-archive")
        page.get_by_role("link", name=newsletter.subject).click()
        expect(page).to_have_url(f"{server.url}/archive/{SLUGS[device]}")
        assert "/unsubscribe/" not in page.content()
        shot("6-archived-newsletter")

        # Unsubscribe with the link from that newsletter, and its one button.
        unsubscribe_url = link_in(issue, r"(http://127\.0\.0\.1:\d+/unsubscribe/[A-Za-z0-9._-]+)")
        page.goto(unsubscribe_url)
        expect(page.get_by_role("button")).to_have_count(1)
        shot("7-unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
        shot("8-unsubscribed")
        with Store.open(settings) as store:
            subscriber = store.get_subscriber_by_email(address)
            assert subscriber is not None and subscriber.status == "unsubscribed"

        # A damaged confirmation link: a friendly page with a way to ask for a new one.
        page.goto(confirm_url[:-3] + "xyz")
        expect(page.get_by_role("heading", level=1)).to_have_text("This confirmation link does not work")
        expect(page.get_by_label("Your e-mail address")).to_be_visible()
        shot("9-confirm-problem")
        # ... and asking for one works: a second confirmation arrives.
        page.get_by_label("Your e-mail address").fill(address)
        page.get_by_role("button", name="Send me a new link").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        deadline = time.monotonic() + 20
        while len([m for m in outbox_messages(settings) if parseaddr(str(m["To"]))[1] == address]) < 3:
            assert time.monotonic() < deadline, "no second confirmation e-mail"
            time.sleep(0.1)

        assert problems == [], problems  # no CSP violation, no script error, on any page
    finally:
        context.close()
    log = server.log_text()
    assert "/unsubscribe/[redacted]" in log and "/confirm/[redacted]" in log
    assert unsubscribe_url.rsplit("/", 1)[1] not in log
    assert confirm_url.rsplit("/", 1)[1] not in log

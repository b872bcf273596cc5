"""The staff desk end to end, in a real browser, with the real scheduler.

Playwright drives Debian's Chromium against a real ``pipeline serve`` process and a
real ``python scheduler.py`` process on one project (SQLite ledger, outbox Maildir),
with ``require_approval = true``: an editor writes a post with a source and a bad
date, sees the error by the field, fixes it, saves, previews the e-mail and the
snippets, and schedules it 10 s ahead; the queue shows it held; an approver signs in
and approves; the running scheduler releases it; the outbox holds one message per
active subscriber; the post's history shows every step with names. axe-core (bundled
by axe-playwright-python: no network) checks every desk page, and every page is
photographed at 390 and 800 px into ``test-artifacts/desk/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.web.desk.auth import SESSION_COOKIE
from tests.conftest import make_project
from tests.live_server import LiveServer, free_port, live_server, set_base_url
from tests.test_browser import ARTIFACTS, launch_chromium, require_chromium
from tests.test_scheduler import Scheduler, configure, mails

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a long enough staff password"
READERS = ("ann@example.org", "bob@example.org", "cy@example.org")
SLUG = "walking-on-uneven-ground"
TITLE = "Walking on uneven ground"
SHOTS = ARTIFACTS / "desk"
WIDTHS = {"390": {"width": 390, "height": 844}, "800": {"width": 800, "height": 900}}


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, Settings, Scheduler]]:
    require_chromium()
    monkeypatch.setenv(SECRET_ENV, "desk-browser-test-secret-0123456789abcdef")  # shared by both processes
    project = make_project(tmp_path)
    port = free_port()
    set_base_url(project / "pipeline.toml", f"http://127.0.0.1:{port}")
    settings = load_settings(configure(project, require_approval=True, rescan_seconds=0.5))
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        for address in READERS:
            store.add_subscriber(address)
        store.add_subscriber("gone@example.org", status="unsubscribed")
        store.add_staff("eve@clinic.example", "Eve Editor", "editor", PASSWORD, now=now)
        store.add_staff("dr.ali@clinic.example", "Dr. Ali Approver", "approver", PASSWORD, now=now)
        store.add_staff("ada@clinic.example", "Ada Admin", "admin", PASSWORD, now=now)
    scheduler = Scheduler(project)
    try:
        scheduler.wait_for("scheduler running", timeout=30)
        with live_server(project, port) as server:
            yield server, settings, scheduler
    finally:
        if scheduler.process.poll() is None:
            scheduler.kill()


@pytest.fixture
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


class Checks:
    """axe-core on each page, and the console: no CSP violation, no script error."""

    def __init__(self) -> None:
        from axe_playwright_python.sync_playwright import Axe

        self.axe = Axe()
        self.problems: list[str] = []
        self.report: dict[str, list[str]] = {}

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda error: self.problems.append(str(error)))

    def axe_check(self, page: Any, name: str) -> None:
        results = self.axe.run(page, options={"resultTypes": ["violations"], "iframes": False})
        found = results.response["violations"]
        self.report[name] = [f"{v['id']} ({v['impact']})" for v in found]
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: " + results.generate_report()


def sign_in(browser: Any, server: LiveServer, email: str, checks: Checks, width: str = "800") -> Any:
    from playwright.sync_api import expect

    context = browser.new_context(viewport=WIDTHS[width])
    page = context.new_page()
    checks.watch(page)
    page.goto(server.url + "/desk/")
    expect(page).to_have_url(server.url + "/desk/login")  # no session: to the login page
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Queue")
    return page


def test_an_editor_writes_an_approver_approves_and_the_scheduler_releases(
    desk: tuple[LiveServer, Settings, Scheduler], browser: Any
) -> None:
    from playwright.sync_api import expect

    server, settings, scheduler = desk
    SHOTS.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    zone = ZoneInfo(settings.clinic.timezone)

    # --- the editor writes the post; a bad date is shown by its field --------------------------
    editor = sign_in(browser, server, "eve@clinic.example", checks)
    editor.get_by_role("link", name="New post").first.click()
    editor.get_by_label("Title", exact=True).fill(TITLE)
    editor.get_by_label("Web address (slug)").fill(SLUG)
    editor.get_by_label("Date and time").fill("2026-11-31 09:00")  # November has 30 days
    editor.get_by_label("Source 1 title").fill("Gait on uneven surfaces, a review")
    editor.get_by_label("Source 1 address").fill("https://pubmed.ncbi.nlm.nih.gov/22236475/")
    editor.get_by_label("Article (Markdown)").fill("Take **shorter steps** on gravel.\n\nLook ahead, not down.")
    expect(editor.locator("#body-preview strong")).to_have_text("shorter steps")  # live preview, under the CSP
    editor.get_by_role("button", name="Save as draft").click()
    error = editor.locator("#date-error")
    expect(error).to_contain_text("'2026-11-31 09:00' is not an ISO 8601 date; write it like 2026-11-03 09:00")
    expect(editor.get_by_label("Date and time")).to_have_attribute("aria-invalid", "true")
    expect(editor.get_by_label("Source 1 title")).to_have_value("Gait on uneven surfaces, a review")  # kept
    checks.axe_check(editor, "new post with an error")
    editor.screenshot(path=str(SHOTS / "800-2-new-post-error.png"), full_page=True)
    tomorrow = (datetime.now(zone) + timedelta(days=1)).strftime("%Y-%m-%d 09:00")
    editor.get_by_label("Date and time").fill(tomorrow)
    editor.get_by_role("button", name="Save as draft").click()
    expect(editor.get_by_role("status")).to_contain_text("Saved as a draft")
    expect(editor.get_by_role("heading", level=1)).to_have_text(TITLE)

    # --- previews the e-mail and the snippets ------------------------------------------------
    editor.get_by_role("link", name="Preview the e-mail").click()
    expect(editor.get_by_role("heading", level=1)).to_have_text(f"Preview: {TITLE}")
    expect(editor.locator("dl.inbox").first).to_contain_text(TITLE)
    expect(editor.frame_locator('iframe[title="The e-mail at phone width"]').locator("body")).to_contain_text(
        "Look ahead"
    )
    expect(editor.locator("article.snippet")).to_have_count(7)
    # A snippet is the summary's whole sentences (the first paragraph here), never "Title: ...".
    expect(editor.locator("#snippet-text-x")).to_contain_text("Take shorter steps on gravel.")
    expect(editor.locator("article.snippet").first).to_contain_text(" of ")
    checks.axe_check(editor, "preview")
    editor.get_by_role("link", name="Back to the post").click()

    # --- schedules it 10 s ahead -------------------------------------------------------------
    due = (datetime.now(UTC) + timedelta(seconds=10)).replace(microsecond=0)
    editor.get_by_label(f"Release at ({settings.clinic.timezone})").fill(
        due.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")
    )
    editor.get_by_role("button", name="Schedule").click()
    expect(editor.get_by_role("status")).to_contain_text("Scheduled")
    checks.axe_check(editor, "post page")

    # --- the queue shows it held ---------------------------------------------------------------
    scheduler.wait_for(rf"HELD: {SLUG}", timeout=40)
    editor.get_by_role("link", name="Queue").click()
    held = editor.locator("section", has=editor.get_by_role("heading", name="Held for approval or overdue"))
    expect(held).to_contain_text(TITLE)
    expect(held).to_contain_text("not approved")
    checks.axe_check(editor, "queue")
    assert mails(settings.root) == []  # nothing went out

    # --- an approver signs in and approves ---------------------------------------------------
    approver = sign_in(browser, server, "dr.ali@clinic.example", checks)
    approver.get_by_role("link", name=TITLE).click()
    approver.get_by_role("button", name="Approve as it reads now").click()
    expect(approver.get_by_role("status")).to_contain_text("Approved")

    # --- the running scheduler releases it: one message per active subscriber -----------------
    scheduler.wait_for(rf"released {SLUG}", timeout=40)
    deadline = time.monotonic() + 40
    while len(mails(settings.root)) < len(READERS):
        assert time.monotonic() < deadline, f"only {len(mails(settings.root))} messages in the outbox"
        time.sleep(0.1)
    scheduler.wait_for(rf"newsletter {SLUG}: sent {len(READERS)} of {len(READERS)}", timeout=40)
    assert sorted(to for to, subject in mails(settings.root)) == sorted(READERS)

    # --- the history names every step --------------------------------------------------------
    approver.reload()
    rows = approver.locator("table.history tbody tr")
    history = [" | ".join(rows.nth(i).locator("td").all_inner_texts()[1:3]) for i in range(rows.count())]
    assert history == [
        "the scheduler | release",
        "Dr. Ali Approver | approve",
        "Eve Editor | schedule",
        "Eve Editor | create",
    ], history
    expect(approver.locator("section.status")).to_contain_text(f"newsletter: sent {len(READERS)} of {len(READERS)}")
    assert checks.problems == [], checks.problems

    # --- every desk page at 390 and 800 px: photographed, and checked by axe ------------------
    admin = sign_in(browser, server, "ada@clinic.example", checks)
    pages = {
        "1-login": "/desk/login",
        "3-queue": "/desk/",
        "4-post": f"/desk/posts/{SLUG}",
        "5-preview": f"/desk/posts/{SLUG}/preview",
        "6-new-post": "/desk/posts/new",
        "7-campaigns": "/desk/campaigns",
        "8-subscribers": "/desk/subscribers?q=example",
    }
    cookies = admin.context.cookies()
    for width, viewport in WIDTHS.items():
        context = browser.new_context(viewport=viewport, is_mobile=width == "390", has_touch=width == "390")
        page = context.new_page()
        checks.watch(page)
        for name, path in pages.items():
            if name != "1-login" and not any(c["name"] == SESSION_COOKIE for c in context.cookies()):
                context.add_cookies(cookies)  # the admin's session
            page.goto(server.url + path)
            expect(page).to_have_url(server.url + path)  # not sent to the login page
            expect(page.locator("h1")).to_be_visible()
            page.wait_for_load_state("networkidle")
            checks.axe_check(page, f"{path} at {width} px")
            page.screenshot(path=str(SHOTS / f"{width}-{name}.png"), full_page=True)
            # Usable at 390 px: nothing wider than the screen (the preview's 800 px frame shrinks).
            overflow = page.evaluate("document.documentElement.scrollWidth") - viewport["width"]
            wide = page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.scrollWidth > e.clientWidth + 1 && "
                "getComputedStyle(e).overflowX === 'visible').slice(0, 5).map(e => e.tagName + '.' + e.className)"
            )
            assert overflow <= 0, f"{path} scrolls sideways at {width} px: {wide}"
        context.close()
    (SHOTS / "axe.json").write_text(json.dumps(checks.report, indent=1), encoding="utf-8")
    assert checks.problems == [], checks.problems
    assert os.path.exists(SHOTS / "390-4-post.png")

    # The check itself can fail: axe finds what it should on a page that breaks the rules.
    context = browser.new_context()
    page = context.new_page()
    page.set_content('<!doctype html><html><body><img src="x.png"><input type="text"></body></html>')
    with pytest.raises(AssertionError, match="image-alt"):
        checks.axe_check(page, "a broken page")
    context.close()

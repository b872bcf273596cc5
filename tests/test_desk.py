"""The staff desk over HTTP (Starlette's test client): a real project folder, a real
SQLite ledger with real Argon2id accounts, real post files, a real outbox Maildir.
Security first: sessions, CSRF, roles, the login lockout; then writing and saving."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpx import Response
from starlette.testclient import TestClient

from pipeline.config import Settings, load_settings
from pipeline.ledger.digest_rows import DigestGroup
from pipeline.ledger.staff import StaffMember
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.schedule.gate import approval_problem
from pipeline.site.build import find_post
from pipeline.web.app import create_app
from pipeline.web.desk.auth import SESSION_COOKIE
from pipeline.web.state import WebLimits
from tests.conftest import ROOT, make_project
from tests.test_scheduler import configure
from tests.test_web import Clock, outbox

SECRET = "a-desk-test-secret-that-is-long-enough-0123"
PASSWORD = "correct horse battery staple"
POSTS = ROOT / "tests" / "golden" / "basic" / "posts"
FUTURE = "2027-01-11 09:00"
HAND_WRITTEN = """---
# Written by hand in git: this comment must survive a save from the desk.
title: A hand-written post   # the title
date: 2030-05-04 09:00
slug: hand-written
draft: true
tags: [socket fit]
sources:
  - title: "A study"
    url: https://example.org/study
---
The first paragraph.

The second paragraph.
"""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    project = make_project(tmp_path, posts=POSTS)
    (project / "posts" / "hand-written.md").write_text(HAND_WRITTEN, encoding="utf-8")
    return load_settings(configure(project, require_approval=True))


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as store:
        yield store


@pytest.fixture
def people(store: Store) -> dict[str, StaffMember]:
    now = datetime.now(UTC)
    return {
        role: store.add_staff(f"{role}@clinic.example", f"{role.title()} Person", role, PASSWORD, now=now)
        for role in ("editor", "approver", "admin")
    }


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.now = datetime.now(UTC).timestamp()
    return clock


@pytest.fixture
def app_client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock), base_url="https://testserver") as client:
        yield client


def fresh_client(app_client: TestClient) -> TestClient:
    """Another browser on the same app (its own cookies)."""
    return TestClient(app_client.app, base_url="https://testserver")


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found, f"no field {name!r}"
    return found.group(1)


def html_text(fragment: str) -> str:
    import html

    return html.unescape(fragment)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> Response:
    page = client.get("/desk/login")
    return client.post(
        "/desk/login",
        data={"email": email, "password": password, "csrf": field(page.text, "csrf")},
        follow_redirects=False,
    )


def as_role(app_client: TestClient, people: dict[str, StaffMember], role: str) -> TestClient:
    client = fresh_client(app_client)
    response = sign_in(client, people[role].email)
    assert response.status_code == 303, response.text
    return client


def desk_csrf(client: TestClient, path: str = "/desk/") -> str:
    return field(client.get(path).text, "csrf")


def post_form(client: TestClient, slug: str) -> dict[str, object]:
    """Every field of the post's form as the page fills it in."""
    html = client.get(f"/desk/posts/{slug}").text
    form: dict[str, object] = {"csrf": field(html, "csrf"), "base_hash": field(html, "base_hash")}
    for name in ("title", "date", "tags", "image", "image_alt", "subject", "preheader"):
        form[name] = field(html, name).replace("&#34;", '"').replace("&amp;", "&")
    form["summary"] = re.search(r'<textarea id="summary" name="summary"[^>]*>(.*?)</textarea>', html, re.S).group(1)  # type: ignore[union-attr]
    form["body"] = re.search(r'<textarea id="body" name="body"[^>]*>(.*?)</textarea>', html, re.S).group(1)  # type: ignore[union-attr]
    form["source_title"] = re.findall(r'name="source_title" value="([^"]*)"', html)
    form["source_url"] = re.findall(r'name="source_url" value="([^"]*)"', html)
    form["channel"] = re.findall(r'name="channel" value="([a-z]+)" checked', html)
    return form


# --- sessions -------------------------------------------------------------------------------


def test_no_session_redirects_to_login(app_client: TestClient) -> None:
    for path in ("/desk/", "/desk/posts/new", "/desk/posts/edge-cases", "/desk/campaigns", "/desk/subscribers"):
        response = app_client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/desk/login"
    login = app_client.get("/desk/login")
    assert login.status_code == 200
    html = login.text
    assert 'name="email"' in html and 'name="password"' in html and 'type="hidden" name="csrf"' in html
    # A POST without a session changes nothing.
    assert app_client.post("/desk/posts/edge-cases/approve", data={"csrf": "x"}).status_code == 403


def test_signing_in_and_the_session_cookies_flags(
    app_client: TestClient, settings: Settings, people: dict[str, StaffMember]
) -> None:
    response = sign_in(app_client, "Editor@Clinic.Example")  # addresses are matched case-insensitively
    assert response.status_code == 303 and response.headers["location"] == "/desk/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/desk" in flags
    assert "secure" in flags  # clinic.base_url is https
    assert "max-age=28800" in flags  # 8 hours
    queue = app_client.get("/desk/")
    assert queue.status_code == 200 and "Editor Person" in queue.text
    # Over plain http (a base_url of http://...), no Secure flag.
    text = (settings.root / "pipeline.toml").read_text()
    (settings.root / "pipeline.toml").write_text(
        text.replace("https://jamesonprosthetics.com", "http://127.0.0.1:8000")
    )
    plain = load_settings(settings.root / "pipeline.toml")
    with TestClient(create_app(plain)) as client:
        cookie = next(
            c for c in sign_in(client, "editor@clinic.example").headers.get_list("set-cookie") if SESSION_COOKIE in c
        )
        assert "secure" not in [p.strip().lower() for p in cookie.split(";")]


def test_sessions_expire_after_8_hours_and_end_at_logout_and_password_change(
    app_client: TestClient, store: Store, people: dict[str, StaffMember], clock: Clock
) -> None:
    client = as_role(app_client, people, "editor")
    other = as_role(app_client, people, "editor")
    assert client.get("/desk/").status_code == 200
    # Sign out: that session ends (the row is gone), the other stays.
    assert client.post("/desk/logout", data={"csrf": desk_csrf(client)}, follow_redirects=False).status_code == 303
    assert client.get("/desk/", follow_redirects=False).status_code == 303
    assert other.get("/desk/").status_code == 200
    # A stolen cookie is useless after logout: replay the old one.
    replay = as_role(app_client, people, "editor")
    old = replay.cookies[SESSION_COOKIE]
    replay.post("/desk/logout", data={"csrf": desk_csrf(replay)})
    replay.cookies.set(SESSION_COOKIE, old, path="/desk")
    assert replay.get("/desk/", follow_redirects=False).status_code == 303
    # A password change ends every session of the account.
    store.set_staff_password("editor@clinic.example", "another long password", now=datetime.now(UTC))
    assert other.get("/desk/", follow_redirects=False).status_code == 303
    # And 8 hours after signing in, a session is over.
    late = fresh_client(app_client)
    assert sign_in(late, "approver@clinic.example").status_code == 303
    clock.now += 8 * 3600 - 5
    assert late.get("/desk/").status_code == 200
    clock.now += 10
    assert late.get("/desk/", follow_redirects=False).status_code == 303


def test_lockout_after_five_failures_answers_as_for_an_unknown_account(
    app_client: TestClient, people: dict[str, StaffMember], clock: Clock
) -> None:
    client = fresh_client(app_client)
    page = client.get("/desk/login")
    csrf = field(page.text, "csrf")

    def attempt(email: str, password: str) -> Response:
        return client.post(
            "/desk/login", data={"email": email, "password": password, "csrf": csrf}, follow_redirects=False
        )

    unknown = attempt("nobody@clinic.example", PASSWORD)
    assert unknown.status_code == 401
    for _ in range(5):
        assert attempt("editor@clinic.example", "wrong password!!").status_code == 401
    locked = attempt("editor@clinic.example", PASSWORD)  # the right password, but locked
    assert locked.status_code == 401
    assert SESSION_COOKIE not in locked.headers.get("set-cookie", "")

    def seen(response: Response) -> tuple[int, bytes, list[tuple[str, str]]]:
        return (
            response.status_code,
            response.content,
            sorted((k, v) for k, v in response.headers.items() if k != "date"),
        )

    assert seen(locked) == seen(unknown)
    assert "editor@clinic.example" not in locked.text
    clock.now += 15 * 60 - 1
    assert attempt("editor@clinic.example", PASSWORD).status_code == 401  # still waiting
    clock.now += 2
    assert attempt("editor@clinic.example", PASSWORD).status_code == 303  # 15 minutes later: in


def test_failed_logins_count_against_the_client_address(settings: Settings, people: dict[str, StaffMember]) -> None:
    clock = Clock()
    app = create_app(settings, limits=WebLimits(client_requests=3, client_window=600), clock=clock)
    with TestClient(app, base_url="https://testserver") as client:
        csrf = field(client.get("/desk/login").text, "csrf")
        for number in range(3):
            data = {"email": f"x{number}@clinic.example", "password": "nope nope nope", "csrf": csrf}
            assert client.post("/desk/login", data=data).status_code == 401
        data = {"email": "editor@clinic.example", "password": PASSWORD, "csrf": csrf}
        limited = client.post("/desk/login", data=data)
        assert limited.status_code == 429 and "retry-after" in limited.headers
        clock.now += 601
        assert client.post("/desk/login", data=data, follow_redirects=False).status_code == 303


# --- CSRF and roles -------------------------------------------------------------------------


def test_missing_or_wrong_csrf_is_403_and_changes_nothing(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    admin = as_role(app_client, people, "admin")
    elsewhere = as_role(app_client, people, "admin")
    other_session = desk_csrf(elsewhere)
    good = desk_csrf(admin)
    before = {p.name: p.read_bytes() for p in settings.posts_dir.iterdir()}
    posts = {
        "/desk/posts/hand-written": {"title": "Changed", "date": "2030-05-04 09:00", "body": "x"},
        "/desk/posts/new": {"title": "New", "slug": "new-one", "date": FUTURE, "body": "x"},
        "/desk/posts/hand-written/schedule": {"at": "2030-05-04T10:00"},
        "/desk/posts/hand-written/unschedule": {},
        "/desk/posts/hand-written/approve": {"content_hash": find_post(settings, "hand-written").content_hash},
        "/desk/posts/hand-written/proof": {},
        "/desk/posts/edge-cases/send": {},
        "/desk/subscribers/add": {"email": "new@example.org", "how": "add", "consent": "asked"},
        "/desk/logout": {},
    }
    for path, data in posts.items():
        for label, token in (("missing", None), ("other session", other_session), ("forged", good[:-2] + "xx")):
            form = dict(data) if token is None else {**data, "csrf": token}
            response = admin.post(path, data=form, follow_redirects=False)
            assert response.status_code == 403, (path, label)
            assert "Cache-Control" in response.headers or response.headers["cache-control"] == "no-store"
    assert {p.name: p.read_bytes() for p in settings.posts_dir.iterdir()} == before
    assert store.get_approval("hand-written") is None
    assert store.get_subscriber_by_email("new@example.org") is None
    assert outbox(settings) == [] and store.list_campaigns() == []
    assert admin.get("/desk/").status_code == 200  # still signed in: the forged logout did nothing


def test_an_editor_approving_gets_403(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    page = editor.get("/desk/posts/hand-written").text
    assert "Approve as it reads now" not in page  # not offered ...
    post = find_post(settings, "hand-written")
    response = editor.post(
        "/desk/posts/hand-written/approve", data={"csrf": field(page, "csrf"), "content_hash": post.content_hash}
    )
    assert response.status_code == 403  # ... and refused by the server all the same
    assert "may not approve" in response.text
    assert store.get_approval("hand-written") is None
    # Admin-only pages and actions too.
    assert editor.get("/desk/subscribers").status_code == 403
    assert editor.get("/desk/posts/edge-cases/send").status_code == 403
    assert editor.post("/desk/posts/edge-cases/send", data={"csrf": field(page, "csrf")}).status_code == 403
    assert editor.get("/desk/audit.csv").status_code == 403
    assert store.list_campaigns() == []


def test_desk_responses_are_no_store_and_allow_only_the_desks_own_script(
    app_client: TestClient, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    for path in (
        "/desk/",
        "/desk/posts/new",
        "/desk/posts/hand-written",
        "/desk/posts/hand-written/preview",
        "/desk/login",
    ):
        response = editor.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store", path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert "<script>" not in response.text and ' style="' not in response.text  # nothing inline
    frame = editor.get("/desk/posts/hand-written/frame/email")
    assert frame.headers["content-security-policy"].startswith("sandbox;")
    assert "script-src" not in frame.headers["content-security-policy"]
    assert editor.get("/desk/static/desk.js").headers["content-type"].startswith("text/javascript")
    public = editor.get("/subscribe").headers["content-security-policy"]
    assert "script-src" not in public and "default-src 'none'" in public


# --- writing and saving -----------------------------------------------------------------------


def test_every_problem_is_shown_by_its_field_in_the_clis_words_and_the_text_is_kept(
    app_client: TestClient, settings: Settings, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    form = {
        "csrf": desk_csrf(editor, "/desk/posts/new"),
        "title": "Walking on <b>uneven</b> ground",
        "slug": "uneven-ground",
        "date": "2026-11-31 09:00",
        "source_title": ["A study of gait", ""],
        "source_url": ["pubmed.ncbi.nlm.nih.gov/22236475/", ""],
        "channel": ["feed", "email", "social"],
        "body": "Take shorter steps on gravel.\r\n\r\nLook ahead, not down.",
    }
    response = editor.post("/desk/posts/new", data=form)
    assert response.status_code == 400
    html = response.text
    date_error = re.search(r'<p class="error" id="date-error">([^<]*)</p>', html)
    assert date_error is not None
    assert "'2026-11-31 09:00' is not an ISO 8601 date; write it like 2026-11-03 09:00" in html_text(
        date_error.group(1)
    )
    assert (
        'id="date" name="date" value="2026-11-31 09:00"' in html and 'aria-describedby="date-hint date-error"' in html
    )
    source_error = re.search(r'<p class="error" id="sources-1-error">([^<]*)</p>', html)
    assert source_error is not None
    assert "has no https:// in front" in html_text(source_error.group(1))
    assert "write https://pubmed.ncbi.nlm.nih.gov/22236475/" in html_text(source_error.group(1))
    assert 'value="A study of gait"' in html and "Take shorter steps on gravel." in html  # kept
    assert not (settings.posts_dir / "uneven-ground.md").exists()

    form["date"] = "2026-12-01 09:00"
    form["source_url"] = ["https://pubmed.ncbi.nlm.nih.gov/22236475/", ""]
    saved = editor.post("/desk/posts/new", data=form, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/desk/posts/uneven-ground?note=created"
    post = find_post(settings, "uneven-ground")
    assert post.draft and post.slug == "uneven-ground" and post.title == "Walking on uneven ground"
    assert [s.url for s in post.sources] == ["https://pubmed.ncbi.nlm.nih.gov/22236475/"]
    assert "\r" not in (settings.posts_dir / "uneven-ground.md").read_text()
    again = editor.post("/desk/posts/new", data={**form, "csrf": desk_csrf(editor, "/desk/posts/new")})
    assert again.status_code == 400 and "is already used by" in again.text


def test_saving_edits_only_the_lines_that_changed(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    path = settings.posts_dir / "hand-written.md"
    form = post_form(editor, "hand-written")
    form["title"] = "A hand-written post, edited"
    form["body"] = "The first paragraph.\r\n\r\nThe second paragraph, longer now.\r\n"
    response = editor.post("/desk/posts/hand-written", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    expected = HAND_WRITTEN.replace(
        "title: A hand-written post   #", 'title: "A hand-written post, edited"   #'
    ).replace("The second paragraph.", "The second paragraph, longer now.")
    assert path.read_text() == expected  # comments, order and every other line as they were
    [entry] = store.audit_entries(slug="hand-written")
    assert (entry.action, entry.actor) == ("save", "Editor Person")
    assert entry.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_concurrent_edit_is_refused_with_both_versions(
    app_client: TestClient, settings: Settings, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    path = settings.posts_dir / "hand-written.md"
    form = post_form(editor, "hand-written")  # the form is opened ...
    theirs = HAND_WRITTEN.replace("The first paragraph.", "Someone else's first paragraph.")
    path.write_text(theirs)  # ... someone saves the file in git meanwhile ...
    form["body"] = "My own first paragraph."
    response = editor.post("/desk/posts/hand-written", data=form)  # ... and this save is refused
    assert response.status_code == 409
    assert path.read_text() == theirs
    assert "Someone else&#39;s first paragraph." in response.text  # their version
    assert "My own first paragraph." in response.text  # and mine, kept in the form
    # Having seen both, the editor may keep theirs' over: the button names the version read.
    form["replace_hash"] = hashlib.sha256(theirs.encode()).hexdigest()
    assert editor.post("/desk/posts/hand-written", data=form, follow_redirects=False).status_code == 303
    assert "My own first paragraph." in path.read_text()


def test_an_approval_is_voided_by_an_edit(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    approver = as_role(app_client, people, "approver")
    page = approver.get("/desk/posts/hand-written").text
    approved = approver.post(
        "/desk/posts/hand-written/approve",
        data={"csrf": field(page, "csrf"), "content_hash": field(page, "content_hash")},
        follow_redirects=False,
    )
    assert approved.status_code == 303
    post = find_post(settings, "hand-written")
    approval = store.get_approval("hand-written")
    assert approval is not None and approval.by == "Approver Person" and approval.covers(post.content_hash)
    assert "Approved by Approver Person" in approver.get("/desk/posts/hand-written").text

    editor = as_role(app_client, people, "editor")
    form = post_form(editor, "hand-written")
    form["summary"] = "One more sentence."
    assert editor.post("/desk/posts/hand-written", data=form, follow_redirects=False).status_code == 303
    edited = find_post(settings, "hand-written")
    problem = approval_problem(edited, store.get_approval("hand-written"), settings)
    assert problem is not None and "is void" in problem
    page = approver.get("/desk/posts/hand-written").text
    assert "is void: the post changed after it" in page and "Approve as it reads now" in page
    # An approval of a version the approver did not see is refused.
    stale = approver.post(
        "/desk/posts/hand-written/approve", data={"csrf": field(page, "csrf"), "content_hash": post.content_hash}
    )
    assert stale.status_code == 400 and "changed after you opened it" in stale.text
    actions = [(e.action, e.actor) for e in store.audit_entries(slug="hand-written")]
    assert actions == [("save", "Editor Person"), ("approve", "Approver Person")]


# --- actions ----------------------------------------------------------------------------------


def test_schedule_refuses_dst_gaps_and_repeats_with_both_offsets(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    csrf = desk_csrf(editor)
    gap = editor.post("/desk/posts/hand-written/schedule", data={"csrf": csrf, "at": "2030-03-10T02:30"})
    assert gap.status_code == 400 and "does not exist in America/New_York" in gap.text and "-04:00" in gap.text
    repeat = editor.post("/desk/posts/hand-written/schedule", data={"csrf": csrf, "at": "2030-11-03T01:30"})
    assert repeat.status_code == 400 and "happens twice" in repeat.text
    assert 'value="2030-11-03T01:30-04:00"' in repeat.text and 'value="2030-11-03T01:30-05:00"' in repeat.text
    assert find_post(settings, "hand-written").draft  # nothing changed
    chosen = editor.post(
        "/desk/posts/hand-written/schedule", data={"csrf": csrf, "at": "2030-11-03T01:30-05:00"}, follow_redirects=False
    )
    assert chosen.status_code == 303
    post = find_post(settings, "hand-written")
    assert not post.draft and post.date == datetime(2030, 11, 3, 6, 30, tzinfo=UTC)
    assert "date: 2030-11-03T01:30-05:00" in (settings.posts_dir / "hand-written.md").read_text()
    assert (
        editor.post("/desk/posts/hand-written/unschedule", data={"csrf": csrf}, follow_redirects=False).status_code
        == 303
    )
    assert find_post(settings, "hand-written").draft
    assert [e.action for e in store.audit_entries(slug="hand-written")] == ["unschedule", "schedule"]


def test_preview_shows_the_inbox_line_frames_text_feed_and_measured_snippets(
    app_client: TestClient, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    response = editor.get("/desk/posts/hand-written/preview")  # a draft
    assert response.status_code == 200
    html = response.text
    assert "Jameson Prosthetics &lt;news@jamesonprosthetics.com&gt;" in html
    assert html.count('sandbox=""') == 4 and 'width="390"' in html and 'width="800"' in html
    assert "The second paragraph." in html  # the plain-text part
    for platform in ("x", "mastodon", "bluesky", "threads", "linkedin", "facebook", "instagram"):
        assert f'data-copy="snippet-text-{platform}"' in html
    assert re.search(r"\d+ of 280 ", html)  # X: measured length against its limit
    for part in ("email", "web", "feed"):
        frame = editor.get(f"/desk/posts/hand-written/frame/{part}")
        assert frame.status_code == 200 and "The first paragraph." in frame.text
        assert frame.headers["x-frame-options"] == "SAMEORIGIN"


def test_proof_goes_to_the_staff_members_own_address(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    editor = as_role(app_client, people, "editor")
    response = editor.post("/desk/posts/hand-written/proof", data={"csrf": desk_csrf(editor)}, follow_redirects=False)
    assert response.status_code == 303
    [message] = outbox(settings)
    assert message["To"] == "editor@clinic.example" and message["Subject"].startswith("[Proof] ")
    assert store.list_campaigns() == []  # a proof touches no campaign
    assert [e.action for e in store.audit_entries(slug="hand-written")] == ["proof"]


def test_send_now_plans_like_the_cli_and_delivers_in_the_background(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    for number in range(3):
        store.add_subscriber(f"reader{number}@example.org")
    slug = "why-your-socket-fit-changes-in-the-first-year"
    approver = as_role(app_client, people, "approver")
    page = approver.get(f"/desk/posts/{slug}").text
    approver.post(
        f"/desk/posts/{slug}/approve", data={"csrf": field(page, "csrf"), "content_hash": field(page, "content_hash")}
    )
    admin = as_role(app_client, people, "admin")
    confirm = admin.get(f"/desk/posts/{slug}/send")
    assert confirm.status_code == 200 and "3 active subscribers" in confirm.text
    sent = admin.post(f"/desk/posts/{slug}/send", data={"csrf": field(confirm.text, "csrf")}, follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"] == "/desk/campaigns?note=sending"
    app_client.app.state.desk.sends.join(timeout=60)  # type: ignore[attr-defined]
    assert sorted(m["To"] for m in outbox(settings)) == [f"reader{n}@example.org" for n in range(3)]
    campaigns = admin.get("/desk/campaigns").text
    assert "Sent 3 of 3" in campaigns
    # A second send is refused with the reason: nobody gets it twice.
    again = admin.get(f"/desk/posts/{slug}/send")
    assert "nobody gets it twice" in again.text
    # A released, mailed post cannot be unscheduled.
    refused = admin.post(f"/desk/posts/{slug}/unschedule", data={"csrf": field(again.text, "csrf")})
    assert refused.status_code == 400 and "was already released" in refused.text and "e-mailed" in refused.text
    assert [e.action for e in store.audit_entries(slug=slug)] == ["send", "approve"]


def test_subscribers_page_for_admins(
    app_client: TestClient, settings: Settings, store: Store, people: dict[str, StaffMember]
) -> None:
    admin = as_role(app_client, people, "admin")
    csrf = desk_csrf(admin, "/desk/subscribers")
    missing = admin.post("/desk/subscribers/add", data={"csrf": csrf, "email": "ann@example.org", "how": "add"})
    assert missing.status_code == 400 and "say how they agreed" in missing.text
    added = admin.post(
        "/desk/subscribers/add",
        data={"csrf": csrf, "email": "=ann@example.org", "how": "add", "consent": "asked at the desk, 3 Nov"},
        follow_redirects=False,
    )
    assert added.status_code == 303
    assert store.get_subscriber_by_email("=ann@example.org").status == "active"  # type: ignore[union-attr]
    invited = admin.post("/desk/subscribers/add", data={"csrf": csrf, "email": "bob@example.org", "how": "invite"})
    assert invited.status_code == 200 and "Invitation sent" in invited.text
    assert [m["To"] for m in outbox(settings)] == ["bob@example.org"]
    found = admin.get("/desk/subscribers?q=ANN")
    assert "=ann@example.org" in found.text and "bob@example.org" not in found.text
    assert "<strong>1</strong> active" in found.text and "<strong>1</strong> pending" in found.text
    admin.post("/desk/subscribers/unsubscribe", data={"csrf": csrf, "email": "=ann@example.org"})
    assert store.get_subscriber_by_email("=ann@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    export = admin.get("/desk/subscribers/export.csv")
    assert export.headers["content-type"].startswith("text/csv")
    assert "'=ann@example.org" in export.text  # formula-guarded
    details = [e.detail for e in store.audit_entries()]
    assert any("consent: asked at the desk, 3 Nov" in d for d in details)
    log = admin.get("/desk/audit.csv")
    assert log.status_code == 200 and log.text.splitlines()[0].startswith("at_utc,actor")
    assert "'=ann@example.org" in log.text


def test_the_staff_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    monkeypatch.setenv(SECRET_ENV, SECRET)
    project = make_project(tmp_path)
    config = str(project / "pipeline.toml")
    runner = CliRunner()

    def run(*args: str, password: str | None = None) -> tuple[int, str]:
        result = runner.invoke(cli, [*args, "--config", config], input=password)
        return result.exit_code, result.output

    code, said = run(
        "staff",
        "add",
        "Ada@Example.org",
        "--name",
        "Ada Admin",
        "--role",
        "admin",
        "--password-stdin",
        password="short\n",
    )
    assert code == 1 and "the password is too short (5 characters)" in said and "Traceback" not in said
    code, said = run(
        "staff",
        "add",
        "Ada@Example.org",
        "--name",
        "Ada Admin",
        "--role",
        "admin",
        "--password-stdin",
        password=PASSWORD + "\n",
    )
    assert code == 0 and "admin account for Ada Admin" in said
    code, said = run(
        "staff",
        "add",
        "ada@example.org",
        "--name",
        "Ada",
        "--role",
        "editor",
        "--password-stdin",
        password=PASSWORD + "\n",
    )
    assert code == 1 and "already has a staff account" in said
    code, said = run("staff", "add", "x@example.org", "--name", "X", "--role", "editor")  # no terminal, no stdin flag
    assert code == 1 and "--password-stdin" in said
    code, said = run("staff", "list")
    assert code == 0 and "Ada Admin" in said and "admin" in said
    settings = load_settings(config)
    with Store.open(settings) as store:
        member = store.check_staff_password("ada@example.org", PASSWORD)
        assert member is not None and member.role == "admin"
        session = store.start_session(member.id, now=datetime.now(UTC), lifetime=timedelta(hours=8))
        assert store.get_staff_by_email("ADA@example.org") is not None
    code, said = run("staff", "password", "ada@example.org", "--password-stdin", password="a brand new password\n")
    assert code == 0 and "every session of the account has ended" in said
    with Store.open(settings) as store:
        assert store.session_staff(session, now=datetime.now(UTC)) is None
        assert store.check_staff_password("ada@example.org", PASSWORD) is None
        assert store.check_staff_password("ada@example.org", "a brand new password") is not None
    code, said = run("staff", "remove", "ada@example.org")
    assert code == 0
    with Store.open(settings) as store:
        assert store.list_staff() == []
        assert [e.action for e in store.audit_entries()] == ["staff remove", "staff password", "staff add"]


def test_the_desk_shows_how_often_each_subscriber_is_mailed_and_where_a_send_went(
    app_client: TestClient, store: Store, people: dict[str, StaffMember]
) -> None:
    """Issue 14: each subscriber's frequency, the counts per group, and each campaign's group."""
    ann = store.add_subscriber("ann@example.org")
    store.add_subscriber("dan@example.org", frequency="digest")
    store.add_subscriber("eve@example.org", frequency="digest")
    store.add_subscriber("old@example.org", status="unsubscribed", frequency="digest")  # not counted: not active
    for key, kind, audience in (("first", "post", "all"), ("second", "post", "each")):
        store.create_campaign(key, kind, key.capitalize(), "{}", audience=audience)
    digest = store.create_digest_campaigns([DigestGroup("digest-2026-12-07", "Digest", "{}", ("second",), (ann.id,))])[
        0
    ]
    admin = as_role(app_client, people, "admin")
    page = admin.get("/desk/subscribers?q=example.org").text
    assert "<strong>1</strong> each article" in page and "<strong>2</strong> weekly digest" in page
    rows = re.findall(r"<tr><td>([^<]+@example\.org)</td><td></td><td>(\w+)</td><td>([\w ]+)</td>", page)
    assert rows == [
        ("ann@example.org", "active", "each article"),
        ("dan@example.org", "active", "weekly digest"),
        ("eve@example.org", "active", "weekly digest"),
        ("old@example.org", "unsubscribed", "weekly digest"),
    ]
    campaigns = admin.get("/desk/campaigns").text
    said = dict(re.findall(r"<h2 id=\"campaign-\d+\">(\w+)</h2>.*?Sent to: ([^<]+)</p>", campaigns, re.DOTALL))
    assert said == {
        "First": "every active subscriber",
        "Second": "subscribers who get each article (the others get it in their weekly digest)",
        "Digest": "weekly digest readers (each gets the articles they have not had)",
    }
    assert store.delivery_counts(digest.id)["pending"] == 1

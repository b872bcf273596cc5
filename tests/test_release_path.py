"""One release path, one gate: `pipeline send`, `send --digest`, `send --resume` and the
scheduler's release job decide the same way and leave the same records (issue 9).

Real ledger (SQLite), real CLI processes, the outbox transport (a Maildir we count
messages in); prompts are answered in a real pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.content.posts import parse_post
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import add_subscriber
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.schedule import gate, release
from pipeline.schedule.digest import send_digest
from tests.conftest import make_project
from tests.test_scheduler import at, configure, mails, mails_about, write_post

SECRET = "test-secret-0123456789abcdef0123456789"
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def clinic(tmp_path: Path, readers: int = 3, **scheduler: object) -> tuple[Path, Settings]:
    project = make_project(tmp_path)
    settings = load_settings(configure(project, **scheduler))
    with Store.open(settings) as store:
        store.first_run_at(datetime.now(UTC) - timedelta(days=1))  # posts from now on are not backfill
        for number in range(readers):
            add_subscriber(store, settings, f"reader{number}@example.org")
    return project, settings


def pipeline(project: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` in the project folder, with no terminal."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=project,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, SECRET_ENV: SECRET},
    )


def in_terminal(project: Path, *args: str, answer: str, timeout: float = 60) -> tuple[int, str]:
    """`python -m pipeline ARGS` in a pseudo-terminal; ``answer`` is typed at the [y/N] prompt."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=project,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, SECRET_ENV: SECRET, "COLUMNS": "200", "TERM": "dumb"},
        close_fds=True,
    )
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"timed out; output so far: {output.decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                output += data
                if not answered and b"[y/N]" in output:
                    os.write(master, answer.encode() + b"\n")
                    answered = True
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
    return process.wait(timeout=10), output.decode(errors="replace").replace("\r\n", "\n")


def held_project(tmp_path: Path) -> tuple[Path, Settings]:
    """require_approval on, the scheduler's first run recorded a day ago, and a due post
    nobody approved."""
    project, settings = clinic(tmp_path, require_approval=True)
    write_post(project, "held-back", at(-60), title="Held back")
    return project, settings


# --- one gate ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("each_ledger")
def test_send_refuses_a_post_held_for_approval_and_mails_nobody(tmp_path: Path) -> None:
    project, _settings = held_project(tmp_path)
    run = pipeline(project, "send", "held-back", "--yes")
    assert run.returncode == 1
    assert "held-back cannot be sent: not approved" in run.stderr
    assert "pipeline approve held-back --by NAME" in run.stderr and "Traceback" not in run.stderr
    assert mails(project) == []


@pytest.mark.usefixtures("each_ledger")
def test_send_of_an_approved_post_then_an_edit_voids_the_approval(tmp_path: Path) -> None:
    project, settings = held_project(tmp_path)
    path = project / "posts" / "held-back.md"
    with Store.open(settings) as store:
        gate.approve(store, parse_post(path.read_bytes(), str(path), settings), "Dr. Lee", datetime.now(UTC))
    path.write_text(path.read_text().replace("News for", "Edited news for"))
    run = pipeline(project, "send", "held-back", "--yes")
    assert run.returncode == 1 and "the approval by Dr. Lee" in run.stderr and "is void" in run.stderr
    assert mails(project) == []


@pytest.mark.usefixtures("each_ledger")
def test_digest_never_mails_a_held_post(tmp_path: Path) -> None:
    project, settings = held_project(tmp_path)
    since = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    run = pipeline(project, "send", "--digest", "--since", since, "--yes")
    assert run.returncode == 0, run.stderr
    assert "nothing was e-mailed since" in run.stdout
    assert mails(project) == []
    with Store.open(settings) as store:
        assert store.list_campaigns() == []


@pytest.mark.usefixtures("each_ledger")
def test_send_refuses_a_post_dated_in_the_future_and_has_no_clock_trick(tmp_path: Path) -> None:
    project, _settings = clinic(tmp_path)
    write_post(project, "next-week", at(7 * 86400), title="Next week")
    run = pipeline(project, "send", "next-week", "--yes")
    assert run.returncode == 1 and "next-week cannot be sent: it is dated" in run.stderr
    assert "send-test" in run.stderr  # the proof is the way to see it now
    run = pipeline(project, "send", "next-week", "--yes", "--now", "2035-01-01")
    assert run.returncode == 2 and "No such option '--now'" in run.stderr
    assert mails(project) == []


@pytest.mark.usefixtures("each_ledger")
def test_send_refuses_a_draft(tmp_path: Path) -> None:
    project, _settings = clinic(tmp_path)
    write_post(project, "unfinished", at(-60), title="Unfinished", extra="draft: true\n")
    run = pipeline(project, "send", "unfinished", "--yes")
    assert run.returncode == 1 and "it is a draft" in run.stderr
    assert mails(project) == []


# --- confirmation, --yes, --dry-run -----------------------------------------------------------------


@pytest.mark.usefixtures("each_ledger")
def test_send_asks_in_a_terminal_and_no_sends_nothing(tmp_path: Path) -> None:
    project, _settings = clinic(tmp_path, readers=3)
    write_post(project, "asked", at(-60), title="Asked first")
    code, output = in_terminal(project, "send", "asked", answer="n")
    assert "Send 'Asked first' to 3 active subscribers via outbox " in output and "? [y/N]" in output
    assert code == 1 and "nothing sent" in output
    assert mails(project) == []

    code, output = in_terminal(project, "send", "asked", answer="y")
    assert code == 0, output
    assert mails_about(project, "Asked first") == [f"reader{n}@example.org" for n in range(3)]
    assert "written to the outbox" in output and "nothing was delivered to anyone" in output


@pytest.mark.usefixtures("each_ledger")
def test_send_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    project, _settings = clinic(tmp_path)
    write_post(project, "scripted", at(-60), title="Scripted")
    run = pipeline(project, "send", "scripted", stdin="y\n")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: send: not sent: there is no terminal to confirm in "
        "(pass --yes to send without a question, or --dry-run to see what would be sent)"
    ]
    assert mails(project) == []


@pytest.mark.usefixtures("each_ledger")
def test_dry_run_says_what_would_be_sent_and_sends_nothing(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=2)
    write_post(project, "rehearsed", at(-60), title="Rehearsed")
    run = pipeline(project, "send", "rehearsed", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("dry run: Send 'Rehearsed' to 2 active subscribers via outbox ")
    assert run.stdout.rstrip().endswith("nothing sent")
    assert mails(project) == []
    with Store.open(settings) as store:
        assert store.list_campaigns() == [] and store.get_release("rehearsed") is None


@pytest.mark.usefixtures("each_ledger")
def test_an_old_post_may_be_sent_explicitly_and_the_prompt_says_how_old(tmp_path: Path) -> None:
    """The scheduler never mails a backfill post; staff may, knowingly."""
    project, settings = clinic(tmp_path, readers=2)
    with Store.open(settings) as store:
        store.first_run_at(datetime.now(UTC) - timedelta(days=1))
    write_post(project, "from-the-archive", at(-40 * 86400), title="From the archive")
    with Store.open(settings) as store:
        outcome = release.release_post(settings, "from-the-archive", datetime.now(UTC), store=store)
    assert outcome.status == "backfill" and mails(project) == []

    code, output = in_terminal(project, "send", "from-the-archive", answer="y")
    assert code == 0, output
    assert "Send 'From the archive' (dated " in output and ", 40 days ago) to 2 active subscribers" in output
    assert len(mails_about(project, "From the archive")) == 2
    with Store.open(settings) as store:
        record = store.get_release("from-the-archive")
        assert record is not None and record.skipped == ("social",)
        assert "email" in record.channels


@pytest.mark.usefixtures("each_ledger")
def test_send_of_a_due_post_is_its_release_and_the_scheduler_does_not_send_it_again(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=2)
    write_post(project, "early-bird", at(-30), title="Early bird")
    run = pipeline(project, "send", "early-bird", "--yes")
    assert run.returncode == 0, run.stderr
    with Store.open(settings) as store:
        record = store.get_release("early-bird")
        assert record is not None and record.channels == ("feed", "email", "social")
        again = release.release_post(settings, "early-bird", datetime.now(UTC), store=store)
        assert again.status == "already"
    assert "Early bird" in (project / "out" / "feed.xml").read_text()
    run = pipeline(project, "send", "early-bird", "--yes")
    assert run.returncode == 0 and "was already e-mailed" in run.stdout and "nobody gets it twice" in run.stdout
    assert len(mails_about(project, "Early bird")) == 2


# --- the digest picks by release records ------------------------------------------------------------


WEEKLY = "0 9 * * mon"


def on_the_digest(settings: Settings, *emails: str) -> None:
    with Store.open(settings) as store:
        for email in emails:
            subscriber = store.get_subscriber_by_email(email)
            assert subscriber is not None
            store.set_subscriber_frequency(subscriber.id, "digest", via="test")


@pytest.mark.usefixtures("each_ledger")
def test_digest_holds_what_was_mailed_not_what_is_dated_in_the_window(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=1, digest_cron=WEEKLY)
    on_the_digest(settings, "reader0@example.org")
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        store.first_run_at(now - timedelta(days=30))
    write_post(project, "mailed-today", at(-60), title="Mailed today")
    write_post(project, "never-released", at(-120), title="Never released")  # dated in the window, no record
    with Store.open(settings) as store:
        assert release.release_post(settings, "mailed-today", now, store=store).status == "released"
        digest = send_digest(settings, now + timedelta(minutes=1), store=store, since=now - timedelta(hours=1))
    assert digest.status == "released"
    assert digest.message.endswith(": mailed-today")
    (subject,) = [s for _to, s in mails(project) if s.startswith("New from")]
    assert "1 article" in subject


@pytest.mark.usefixtures("each_ledger")
def test_a_second_digest_the_same_day_says_why_it_sent_nothing(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=1, digest_cron=WEEKLY)
    on_the_digest(settings, "reader0@example.org")
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        store.first_run_at(now - timedelta(days=1))
    write_post(project, "digested", at(-60), title="Digested")
    assert release.release_post(settings, "digested", now).status == "released"
    first = pipeline(project, "send", "--digest", "--yes")
    assert first.returncode == 0, first.stderr
    second = pipeline(project, "send", "--digest", "--yes")
    assert second.returncode == 0
    assert "was already started" in second.stdout and "one digest a day: nothing sent" in second.stdout
    assert len([s for _to, s in mails(project) if s.startswith("New from")]) == 1


# --- intent first: a crash between the release and its campaign ------------------------------------


@pytest.mark.usefixtures("each_ledger")
def test_a_newsletter_owed_by_a_release_is_sent_by_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after recording the release and before creating its campaign:
    `send --resume` finds the owed newsletter instead of saying every campaign is finished."""
    project, settings = clinic(tmp_path, readers=2)
    write_post(project, "interrupted", at(-30), title="Interrupted")

    class Killed(BaseException):
        pass

    def die(*_args: object, **_kwargs: object) -> int:
        raise Killed

    monkeypatch.setattr(release, "start_campaign", die)
    with Store.open(settings) as store, pytest.raises(Killed):
        release.release_post(settings, "interrupted", datetime.now(UTC), store=store)
    monkeypatch.undo()
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with Store.open(settings) as store:
        assert [m.slug for m in store.mailings(owed=True)] == ["interrupted"]
        assert store.list_campaigns() == []

    dry = pipeline(project, "send", "--resume", "--dry-run")
    assert "make and send the newsletter owed by 1 release(s) (interrupted)" in dry.stdout.lower()
    run = pipeline(project, "send", "--resume", "--yes")
    assert run.returncode == 0, run.stderr
    assert mails_about(project, "Interrupted") == ["reader0@example.org", "reader1@example.org"]
    with Store.open(settings) as store:
        assert store.mailings(owed=True) == []
    again = pipeline(project, "send", "--resume", "--yes")
    assert "nothing to resume" in again.stdout
    assert len(mails_about(project, "Interrupted")) == 2


# --- proofs at any time -----------------------------------------------------------------------------


@pytest.mark.usefixtures("each_ledger")
@pytest.mark.parametrize("extra, when", [("draft: true\n", -60), ("", 30 * 86400)], ids=["draft", "future"])
def test_proofs_work_on_drafts_and_future_posts(tmp_path: Path, extra: str, when: int) -> None:
    project, settings = clinic(tmp_path)
    write_post(project, "not-yet", at(when), title="Not yet", extra=extra)
    run = pipeline(project, "send-test", "not-yet", "--to", "dr.lee@example.org")
    assert run.returncode == 0, run.stderr
    assert "written to the outbox (not delivered)" in run.stdout
    assert mails(project) == [("dr.lee@example.org", "[Proof] Not yet")]
    doctor = pipeline(project, "doctor", "not-yet")
    assert "newsletter for not-yet" in doctor.stdout, doctor.stderr
    preview = pipeline(project, "preview", "not-yet")
    assert preview.returncode == 0, preview.stderr
    with Store.open(settings) as store:
        assert store.list_campaigns() == [] and store.get_release("not-yet") is None


# --- a link in a newsletter already sent never breaks -------------------------------------------------


@pytest.mark.usefixtures("each_ledger")
def test_archive_page_of_a_mailed_post_stays_online(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=1)
    path = write_post(project, "was-mailed", at(-60), title="Was mailed")
    assert release.release_post(settings, "was-mailed", datetime.now(UTC)).status == "released"
    page = project / "out" / "archive" / "was-mailed.html"
    mailed_page = page.read_bytes()
    assert b"Was mailed" in mailed_page

    unqueue = pipeline(project, "unqueue", "was-mailed")
    assert unqueue.returncode == 1
    assert "it was e-mailed to subscribers, so its archive page stays online" in unqueue.stderr

    path.write_text(path.read_text().replace("title: Was mailed", "title: Was mailed\ndraft: true"))
    build = pipeline(project, "build")
    assert build.returncode == 0, build.stderr
    assert "kept online: archive/was-mailed.html" in build.stdout
    assert page.read_bytes() == mailed_page

    path.unlink()
    assert pipeline(project, "build").returncode == 0
    assert page.read_bytes() == mailed_page

    shutil.rmtree(project / "out")  # out/ lost: the page comes back from the ledger
    assert pipeline(project, "build").returncode == 0
    assert page.read_bytes() == mailed_page


@pytest.mark.usefixtures("each_ledger")
def test_a_post_never_mailed_is_unpublished_as_before(tmp_path: Path) -> None:
    project, settings = clinic(tmp_path, readers=0)
    path = write_post(project, "feed-only", at(-60), title="Feed only", extra="channels: {email: false}\n")
    assert release.release_post(settings, "feed-only", datetime.now(UTC)).status == "released"
    path.unlink()
    assert pipeline(project, "build").returncode == 0
    assert not (project / "out" / "archive" / "feed-only.html").exists()


# --- records as tables --------------------------------------------------------------------------------


def test_a_ledger_made_before_release_tables_is_upgraded(tmp_path: Path) -> None:
    """(SQLite only: the ledger under test is a file.) tests/data/ledger-0001.sqlite was made by the code before migration 0002: a backfill
    release, a full release with its campaign, a hold and an approval, as JSON in meta."""
    project = make_project(tmp_path)
    settings = load_settings(project / "pipeline.toml")
    (project / "state").mkdir()
    shutil.copy(DATA / "ledger-0001.sqlite", project / "state" / "pipeline.db")
    with Store.open(settings) as store:
        releases = store.list_releases()
        assert set(releases) == {"old-news", "fresh-news"}
        assert releases["old-news"].backfill is not None and releases["old-news"].skipped == ("email", "social")
        assert releases["old-news"].channels == ("feed",)
        assert releases["fresh-news"].channels == ("feed", "email", "social")
        assert releases["fresh-news"].content_hash == store.list_approvals()["fresh-news"].content_hash
        assert set(store.list_holds()) == {"held-news"}
        assert store.list_holds()["held-news"].reason == "not approved"
        approval = store.get_approval("fresh-news")
        assert approval is not None and approval.by == "Dr. Lee"
        mailing = store.get_mailing("fresh-news")
        assert mailing is not None and mailing.campaign_id is not None
        assert store.recorded_first_run() == datetime(2026, 11, 18, 14, 0, tzinfo=UTC)
    with sqlite3.connect(project / "state" / "pipeline.db") as conn:
        left = [key for (key,) in conn.execute("SELECT key FROM meta")]
    assert left == ["first_run_at"]

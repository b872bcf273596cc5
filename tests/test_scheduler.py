"""The scheduler, run for real: a `python scheduler.py` process, the real clock, a real
SQLite ledger and job store, and the outbox transport (a Maildir we count mails in).

Times are a few seconds ahead; the scheduler rescans posts/ every 0.5 s.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from msgspec.structs import replace
from sqlalchemy import update

from pipeline.cli.schedule import COMMANDS
from pipeline.config import Settings, load_settings
from pipeline.content.posts import parse_post
from pipeline.errors import PipelineError
from pipeline.ledger import schema
from pipeline.ledger.locks import DatabaseLock
from pipeline.ledger.releases import FIRST_RUN_KEY
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import add_subscriber
from pipeline.mail.transports import transport_from_spec
from pipeline.schedule import gate, release
from pipeline.schedule.digest import send_digest
from pipeline.schedule.runner import JOBSTORE_TABLE, digest_trigger
from tests.conftest import ROOT, make_project

ZONE_NAME = "America/New_York"
READY = "scheduler running"
SUBSCRIBERS = 3


# Every test here runs on SQLite and on a real PostgreSQL server.
pytestmark = pytest.mark.usefixtures("each_ledger")


# --- helpers ----------------------------------------------------------------------------------


def configure(project: Path, **scheduler: object) -> Path:
    """Set [scheduler] and [delivery] keys in the project's pipeline.toml."""
    path = project / "pipeline.toml"
    text = path.read_text()
    values = {"rescan_seconds": 0.5, **scheduler}
    for key, value in values.items():
        literal = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else value
        text, count = re.subn(rf"(?m)^#?\s*{key} = .*$", f"{key} = {literal}", text)
        assert count == 1, key
    path.write_text(text)
    return path


def project_with_readers(tmp_path: Path, readers: int = SUBSCRIBERS, **scheduler: object) -> tuple[Path, Settings]:
    project = make_project(tmp_path)
    settings = load_settings(configure(project, **scheduler))
    with Store.open(settings) as store:
        if readers <= 10:
            for number in range(readers):
                add_subscriber(store, settings, f"reader{number}@example.org")
        else:
            rows = [{"email": f"reader{n}@example.org", "status": "active", "source": "test"} for n in range(readers)]
            store.add_subscribers_bulk(rows)
    return project, settings


def at(seconds: float) -> datetime:
    """A whole second, ``seconds`` from now (post dates have second precision)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def write_post(project: Path, slug: str, when: datetime | str, *, title: str | None = None, extra: str = "") -> Path:
    from zoneinfo import ZoneInfo

    date = when if isinstance(when, str) else when.astimezone(ZoneInfo(ZONE_NAME)).isoformat()
    path = project / "posts" / f"{slug}.md"
    text = f"---\ntitle: {title or slug.replace('-', ' ').capitalize()}\ndate: {date}\n{extra}---\nNews for {slug}.\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomically, as an editor's save would
    return path


def mails(project: Path, outbox: str = "state/outbox") -> list[tuple[str, str]]:
    """(To, Subject) of every message in the outbox."""
    folder = project / outbox / "new"
    if not folder.exists():
        return []
    parser = email.parser.BytesHeaderParser()
    found = []
    for path in folder.iterdir():
        headers = parser.parsebytes(path.read_bytes())
        found.append((str(headers["To"]), str(headers["Subject"])))
    return found


def mails_about(project: Path, title: str) -> list[str]:
    return sorted(to for to, subject in mails(project) if subject == title)


def publications(settings: Settings, slug: str) -> dict[str, datetime]:
    with Store.open(settings) as store:
        return {p.channel: p.recorded_at for p in store.list_publications() if p.slug == slug}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Scheduler:
    """A `python scheduler.py` process whose log lines we can wait for."""

    def __init__(self, project: Path, *args: str) -> None:
        self.project = project
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            # --verbose: the debug lines include one per rescan, which wait_for_rescans counts.
            [
                sys.executable,
                str(ROOT / "scheduler.py"),
                "--config",
                str(project / "pipeline.toml"),
                "--verbose",
                *args,
            ],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, *, start: int = 0) -> str:
        """The first log line (from index ``start``) matching the regex ``pattern``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matches {pattern!r}; the log:\n{self.log}")
                self._changed.wait(min(remaining, 0.2))

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_for_rescans(self, passes: int, timeout: float = 20.0) -> None:
        """Until ``passes`` more rescans have finished: anything they would do (a second
        release, say) has been done and logged by then."""
        start = len(self.lines)
        for _ in range(passes):
            self.wait_for("rescan done", timeout, start=start)
            start = next(i for i in range(start, len(self.lines)) if "rescan done" in self.lines[i]) + 1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def running() -> Iterator[list[Scheduler]]:
    """Schedulers started by a test; any still running at the end are killed."""
    started: list[Scheduler] = []
    yield started
    for scheduler in started:
        if scheduler.process.poll() is None:
            scheduler.kill()


def start(running: list[Scheduler], project: Path, *args: str) -> Scheduler:
    scheduler = Scheduler(project, *args)
    running.append(scheduler)
    scheduler.wait_for(READY, timeout=30)
    return scheduler


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=60, check=False
    )


# --- the real scheduler --------------------------------------------------------------------------


def test_releases_on_time_once_picks_up_new_posts_and_never_releases_a_moved_post_early(
    tmp_path: Path, running: list[Scheduler]
) -> None:
    project, settings = project_with_readers(tmp_path)
    # Far enough ahead that a slow start (a loaded CI machine) still finds it in the future.
    first = write_post(project, "first-post", at(15), title="First post")
    first_date = parse_post(first.read_bytes(), str(first), settings).date
    scheduler = start(running, project)
    assert "queued first-post" in scheduler.log

    # Added while it runs: picked up by the rescan.
    added_date = at(3)
    write_post(project, "added-later", added_date, title="Added later")
    # Queued, then moved a minute later before its time: must not go out at the old time.
    old_date = at(3)
    moved = write_post(project, "moved-later", old_date, title="Moved later")
    scheduler.wait_for("queued moved-later")
    write_post(project, "moved-later", at(60), title="Moved later")
    # (Were the old job to fire first, the release reads the file and finds the new date.)
    scheduler.wait_for("moved moved-later from|moved-later not released yet")
    # A local time that happens twice is refused with the fix, and never scheduled.
    write_post(project, "ambiguous", "2026-11-01 01:30")

    scheduler.wait_for("released added-later")
    scheduler.wait_for("released first-post")
    wait_until(lambda: len(mails_about(project, "First post")) == SUBSCRIBERS, 10, "the first post's mails")
    wait_until(lambda: len(mails_about(project, "Added later")) == SUBSCRIBERS, 10, "the added post's mails")
    wait_until(lambda: datetime.now(UTC) > old_date + timedelta(seconds=1.5), 10, "the moved post's old time")
    scheduler.wait_for_rescans(3)  # any second release would show by then

    for slug, date in (("first-post", first_date), ("added-later", added_date)):
        recorded = publications(settings, slug)
        assert set(recorded) == {"feed", "email", "social"}
        lateness = (recorded["feed"] - date).total_seconds()
        assert 0 <= lateness < 2, f"{slug} released {lateness:.2f} s after its time"
        assert scheduler.count(f"released {slug}") == 1
    assert mails_about(project, "First post") == [f"reader{n}@example.org" for n in range(SUBSCRIBERS)]
    assert len(mails_about(project, "Added later")) == SUBSCRIBERS
    assert (project / "out" / "newsletter" / "first-post.html").exists()
    assert "First post" in (project / "out" / "feed.xml").read_text()

    assert publications(settings, "moved-later") == {}
    assert mails_about(project, "Moved later") == []
    assert "Moved later" not in (project / "out" / "feed.xml").read_text()
    assert moved.exists()

    dst = scheduler.wait_for("ambiguous")
    assert "posts/ambiguous.md:3: date: 2026-11-01 01:30 happens twice in America/New_York" in dst
    assert "2026-11-01T01:30:00-04:00 for the first" in dst
    assert "not scheduled" in dst
    assert scheduler.count(r"queued ambiguous|released ambiguous") == 0

    assert scheduler.stop() == 0
    assert "scheduler stopped" in scheduler.lines[-1]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[-+]\d\d:\d\d ", scheduler.lines[0]), "zone-aware timestamps"


def test_a_release_missed_while_killed_runs_once_at_restart(tmp_path: Path, running: list[Scheduler]) -> None:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    project, settings = project_with_readers(tmp_path)
    scheduler = start(running, project)
    due = at(3)
    write_post(project, "missed", due, title="Missed while down")
    scheduler.wait_for("queued missed")
    scheduler.kill()  # SIGKILL: no clean-up, the lock file and the stored job stay behind

    jobs = SQLAlchemyJobStore(url=settings.database_url, tablename=JOBSTORE_TABLE)
    jobs.start(None, "default")
    job = jobs.lookup_job("release:missed")
    jobs.shutdown()
    assert job is not None and job.next_run_time == due
    assert job.misfire_grace_time is None and job.coalesce is True  # APScheduler's default would drop it

    wait_until(lambda: datetime.now(UTC) > due + timedelta(seconds=1), 10, "the release time to pass")
    assert publications(settings, "missed") == {}

    restarted = start(running, project)  # the dead process's lock does not stop it
    line = restarted.wait_for("released missed")
    assert "late" in line or "after its time" in line
    wait_until(lambda: len(mails_about(project, "Missed while down")) == SUBSCRIBERS, 10, "the mails")
    restarted.wait_for_rescans(3)  # any second release would show by then
    assert len(mails_about(project, "Missed while down")) == SUBSCRIBERS
    assert restarted.count("released missed") == 1
    assert "was missed by" not in restarted.log
    assert set(publications(settings, "missed")) == {"feed", "email", "social"}
    assert restarted.stop() == 0


def test_a_second_scheduler_refuses_to_start(tmp_path: Path, running: list[Scheduler]) -> None:
    project, _settings = project_with_readers(tmp_path, readers=0, digest_cron="0 9 * * mon")
    first = start(running, project)
    assert re.search(r"digest: '0 9 \* \* mon', next at \d{4}-\d\d-\d\d 09:00 E[SD]T", first.log)
    second = subprocess.run(
        [sys.executable, str(ROOT / "scheduler.py"), "--config", str(project / "pipeline.toml")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    refused = f"error: another scheduler is already running on this database (host {socket.gethostname()}, PID {first.process.pid},"
    assert refused in second.stderr and second.stderr.count("\n") == 1
    assert "Traceback" not in second.stderr
    assert first.process.poll() is None
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C: a clean stop too

    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scheduler.py"),
            "--config",
            str(project / "pipeline.toml"),
            "--transport",
            "pigeon",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 3  # configuration
    assert "error: transport: unknown transport 'pigeon'" in bad.stderr and "Traceback" not in bad.stderr


def share_database(project: Path, url: str) -> None:
    """Point the project's [database] url at ``url`` (another project's ledger)."""
    path = project / "pipeline.toml"
    text, count = re.subn(r"(?m)^url = .*$", f"url = {json.dumps(url)}", path.read_text())
    assert count == 1
    path.write_text(text)


def test_one_scheduler_per_database_whatever_its_state_folder(tmp_path: Path, running: list[Scheduler]) -> None:
    """Two schedulers with their own state/ folders on one database: the second exits 1
    naming the first's host and PID. A clean stop frees the lock; a killed holder's lock
    is taken over at once on the same host."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_project, first_settings = project_with_readers(tmp_path / "a", readers=0)
    second_project = make_project(tmp_path / "b")
    configure(second_project)
    share_database(second_project, first_settings.database_url)
    host = socket.gethostname()

    first = start(running, first_project)
    second = Scheduler(second_project)
    running.append(second)
    answer = second.wait_for(rf"^error: |{READY}", timeout=60)  # old code: it ran too
    assert answer.startswith(
        f"error: another scheduler is already running on this database (host {host}, PID {first.process.pid}, "
    ), second.log
    assert second.process.wait(timeout=30) == 1
    assert "kill " + str(first.process.pid) in second.log and "Traceback" not in second.log
    assert first.process.poll() is None

    assert first.stop() == 0  # a clean stop releases the lock
    second = start(running, second_project)
    second.kill()  # SIGKILL: its lock row stays behind, naming a dead process
    third = start(running, first_project)
    taken = third.wait_for("took over the scheduler lock")
    assert f"(host {host}, PID {second.process.pid}): that process is gone" in taken
    assert third.stop() == 0


def test_a_scheduler_that_loses_its_database_lock_stops(tmp_path: Path, running: list[Scheduler]) -> None:
    """The heartbeat renews the lock; when another scheduler has taken it over (after this
    one's heartbeat expired), this one says so and exits 1 rather than run on beside it."""
    project, settings = project_with_readers(tmp_path, readers=0, lock_seconds=2)
    scheduler = start(running, project)
    with Store.open(settings) as store:
        lock = DatabaseLock(store, seconds=2)
        held = lock.holder()
        assert held is not None and held.pid == scheduler.process.pid
        wait_until(lambda: (lock.holder() or held).heartbeat_at > held.heartbeat_at, 10, "a heartbeat")
        with store.engine.begin() as conn:  # what a scheduler on another machine would write
            conn.execute(
                update(schema.scheduler_lock).values(
                    holder="elsewhere.example:4242:abc",
                    host="elsewhere.example",
                    pid=4242,
                    expires_at=datetime.now(UTC) + timedelta(minutes=5),
                )
            )
    assert scheduler.process.wait(timeout=30) == 1
    scheduler._reader.join(5)
    line = scheduler.wait_for("lost the scheduler lock")
    assert "held by host elsewhere.example, PID 4242" in line and "stopping" in line
    assert "scheduler stopped" in scheduler.lines[-1] and "Traceback" not in scheduler.log


def test_backfilled_posts_go_to_the_feed_and_are_never_emailed(tmp_path: Path, running: list[Scheduler]) -> None:
    project, settings = project_with_readers(tmp_path)
    with Store.open(settings) as store:  # the pipeline first ran ten days ago
        store.set_meta(FIRST_RUN_KEY, (datetime.now(UTC) - timedelta(days=10)).isoformat())
    write_post(project, "from-2020", datetime(2020, 5, 4, 13, 0, tzinfo=UTC), title="From 2020")
    write_post(project, "three-days-late", at(-3 * 86400), title="Three days late")
    write_post(project, "just-due", at(-60), title="Just due")

    scheduler = start(running, project)
    scheduler.wait_for("released just-due")
    wait_until(lambda: len(mails_about(project, "Just due")) == SUBSCRIBERS, 10, "the due post's mails")
    scheduler.wait_for_rescans(3)  # anything else it would release or mail shows by then

    old = scheduler.wait_for("backfill: from-2020")
    assert "before the pipeline first ran" in old and "not e-mailed and not queued for social" in old
    late = scheduler.wait_for("backfill: three-days-late")
    assert "late (more than scheduler.backfill_hours = 48)" in late
    for slug in ("from-2020", "three-days-late"):
        assert set(publications(settings, slug)) == {"feed"}
    assert {subject for _to, subject in mails(project)} == {"Just due"}
    feed = (project / "out" / "feed.xml").read_text()
    assert "From 2020" in feed and "Three days late" in feed
    with Store.open(settings) as store:
        assert [c.key for c in store.list_campaigns()] == ["just-due"]
    assert scheduler.stop() == 0


def test_approval_gate_holds_unapproved_and_changed_posts(tmp_path: Path, running: list[Scheduler]) -> None:
    project, settings = project_with_readers(tmp_path, require_approval=True)
    config = str(project / "pipeline.toml")
    scheduler = start(running, project)
    due = at(4)
    write_post(project, "unapproved", due, title="Unapproved")
    approved = write_post(project, "approved", due, title="Approved")
    edited = write_post(project, "edited-after", due, title="Edited after approval")
    scheduler.wait_for("queued edited-after")
    with Store.open(settings) as store:
        for path in (approved, edited):
            gate.approve(store, parse_post(path.read_bytes(), str(path), settings), "Dr. Lee", datetime.now(UTC))
    edited.write_text(edited.read_text() + "\nA late correction.\n")

    held = scheduler.wait_for("HELD: unapproved")
    assert "not approved" in held and "pipeline approve unapproved --by NAME" in held
    void = scheduler.wait_for("HELD: edited-after")
    assert "approval by Dr. Lee" in void and "is void: the post changed after it" in void
    scheduler.wait_for("released approved")
    wait_until(lambda: len(mails_about(project, "Approved")) == SUBSCRIBERS, 10, "the approved post's mails")

    queue = cli("queue", "--config", config)
    assert queue.returncode == 0, queue.stderr
    assert "HELD" in queue.stdout and "unapproved" in queue.stdout and "edited-after" in queue.stdout
    assert publications(settings, "unapproved") == {} and mails_about(project, "Unapproved") == []

    start_line = len(scheduler.lines)
    approval = cli("approve", "unapproved", "--by", "Dr. Ana Ruiz", "--config", config)
    assert approval.returncode == 0, approval.stderr
    assert "approved by Dr. Ana Ruiz" in approval.stdout
    scheduler.wait_for("approved by Dr. Ana Ruiz: releasing unapproved", start=start_line)
    scheduler.wait_for("released unapproved", start=start_line)
    wait_until(lambda: len(mails_about(project, "Unapproved")) == SUBSCRIBERS, 10, "the mails once approved")
    assert mails_about(project, "Edited after approval") == []
    with Store.open(settings) as store:
        assert set(store.list_holds()) == {"edited-after"}
    assert scheduler.stop() == 0


def test_sigterm_lets_the_release_in_progress_finish_then_exits_0(tmp_path: Path, running: list[Scheduler]) -> None:
    readers = 120
    project, _settings = project_with_readers(tmp_path, readers=readers)
    configure(project, rate_per_second=60)  # about 2 s of sending
    scheduler = start(running, project, "--transport", "outbox:state/elsewhere")
    assert "state/elsewhere)" in scheduler.wait_for(READY)
    write_post(project, "long-send", at(2), title="Long send")
    scheduler.wait_for("released long-send")
    assert scheduler.stop() == 0
    assert len([s for _to, s in mails(project, "state/elsewhere") if s == "Long send"]) == readers
    assert mails(project) == []
    log = scheduler.log
    assert log.index("SIGTERM received") < log.index(f"sent {readers} of {readers}") < log.index("scheduler stopped")


# --- the release itself, in-process (a real ledger, no clock games) ------------------------------


def test_releasing_twice_is_a_no_op(settings: Settings, project: Path) -> None:
    with Store.open(settings) as store:
        add_subscriber(store, settings, "ann@example.org")
    write_post(project, "twice", at(-30), title="Twice")
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        store.first_run_at(now - timedelta(days=1))
        first = release.release_post(settings, "twice", now, store=store)
        second = release.release_post(settings, "twice", now + timedelta(seconds=5), store=store)
        assert (first.status, second.status) == ("released", "already")
        assert len(store.list_campaigns()) == 1
    assert mails_about(project, "Twice") == ["ann@example.org"]


def test_a_held_post_stays_out_of_the_feed_while_another_is_released(settings: Settings, project: Path) -> None:
    gated = replace(settings, scheduler=replace(settings.scheduler, require_approval=True))
    write_post(project, "held-back", at(-30), title="Held back")
    approved = write_post(project, "cleared", at(-30), title="Cleared")
    now = datetime.now(UTC)
    with Store.open(gated) as store:
        store.first_run_at(now - timedelta(days=1))
        gate.approve(store, parse_post(approved.read_bytes(), str(approved), gated), "Dr. Lee", now)
        outcomes = release.release_posts(gated, ["held-back", "cleared"], now, store=store)
    assert [o.status for o in outcomes] == ["held", "released"]
    feed = (project / "out" / "feed.xml").read_text()
    assert "Cleared" in feed
    assert "Held back" not in feed


def test_a_post_moved_later_is_not_released_by_its_old_job(settings: Settings, project: Path) -> None:
    write_post(project, "later", at(3600))
    outcome = release.release_post(settings, "later", datetime.now(UTC))
    assert outcome.status == "not-due"
    assert publications(settings, "later") == {}


def test_digest_sends_what_was_released_since_the_last_one(project: Path) -> None:
    settings = load_settings(configure(project, digest_cron="0 9 * * mon"))
    # A fixed clock, at the clinic's noon: "one digest a day" is a day in its time zone,
    # and with the wall clock a run two minutes before its midnight saw two days.
    now = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    with Store.open(settings) as store:
        add_subscriber(store, settings, "ann@example.org", frequency="digest")
        add_subscriber(store, settings, "ben@example.org")  # each article
        store.first_run_at(now - timedelta(days=2))
        for slug in ("one", "two"):
            write_post(project, slug, now - timedelta(minutes=2), title=slug.capitalize())
            assert release.release_post(settings, slug, now, store=store).status == "released"
        digest = send_digest(settings, now + timedelta(minutes=1), store=store)
        assert digest.status == "released" and digest.campaign_id is not None
        assert "one" in digest.message and "two" in digest.message
        made = store.get_campaign(digest.campaign_id)
        assert made is not None and made.audience == "digest"
        digest_subject = made.subject
        again = send_digest(settings, now + timedelta(minutes=2), store=store)
        assert again.status == "already" and "already started" in again.message and "one digest a day" in again.message
        tomorrow = send_digest(settings, now + timedelta(days=1), store=store)
        assert tomorrow.status == "nothing" and "nothing was e-mailed since" in tomorrow.message
        assert len(store.list_campaigns()) == 3
    # Ben got both articles on their own, Ann one digest holding both.
    assert sorted(mails(project)) == [
        ("ann@example.org", digest_subject),
        ("ben@example.org", "One"),
        ("ben@example.org", "Two"),
    ]


def test_a_job_whose_end_is_reported_before_its_start_is_not_left_running(settings: Settings) -> None:
    """APScheduler reports a pass's submissions after the pass's job-store writes, so a
    quick job (a held release) can be reported executed first. It must not count as
    running for ever: a rescan would then never queue it again (seen on PostgreSQL)."""
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED, JobExecutionEvent, JobSubmissionEvent

    from pipeline.schedule.jobs import Runtime
    from pipeline.schedule.runner import _track

    with Store.open(settings) as store:
        rt = Runtime("pipeline.toml", settings, store, transport_from_spec("outbox:state/outbox", settings))
    when = datetime.now(UTC)
    _track(rt, JobExecutionEvent(EVENT_JOB_EXECUTED, "release:quick", "default", when))
    _track(rt, JobSubmissionEvent(EVENT_JOB_SUBMITTED, "release:quick", "default", [when]))
    assert rt.active == set()
    _track(rt, JobSubmissionEvent(EVENT_JOB_SUBMITTED, "release:slow", "default", [when]))
    assert rt.active == {"release:slow"}
    _track(rt, JobExecutionEvent(EVENT_JOB_EXECUTED, "release:slow", "default", when))
    assert rt.active == set()


def test_a_bad_digest_cron_is_a_clear_error(settings: Settings) -> None:
    bad = replace(settings, scheduler=replace(settings.scheduler, digest_cron="0 9 * *"))
    with pytest.raises(PipelineError) as caught:
        digest_trigger(bad)
    assert "scheduler.digest_cron" in str(caught.value) and "'0 9 * * mon'" in str(caught.value)
    good = replace(settings, scheduler=replace(settings.scheduler, digest_cron="0 9 * * mon"))
    trigger = digest_trigger(good)
    assert trigger is not None
    assert (
        trigger.get_next_fire_time(None, datetime(2026, 11, 27, tzinfo=UTC)).isoformat() == "2026-11-30T09:00:00-05:00"
    )


# --- unqueue / requeue: one line changes, every other byte stays --------------------------------------

ORIGINAL = (
    b"---\r\n"
    b"title: Edited in place   \r\n"
    b"# a comment staff wrote\r\n"
    b"date: 2026-12-01 09:00  # Tuesday\r\n"
    b"tags: [a, b]\r\n"
    b"---\r\n"
    b"Body with trailing spaces   \r\n"
    b"and no final newline"
)


def invoke(*args: str) -> tuple[int, str]:
    commands = {c.name: c for c in COMMANDS}
    result = CliRunner().invoke(commands[args[0]], list(args[1:]))
    return result.exit_code, result.output


def test_requeue_and_unqueue_change_one_line_only(settings: Settings, project: Path) -> None:
    path = project / "posts" / "edited.md"
    path.write_bytes(ORIGINAL)
    config = str(project / "pipeline.toml")

    code, output = invoke("requeue", "edited", "--at", "2027-02-03 10:15", "--config", config)
    assert code == 0, output
    assert path.read_bytes() == ORIGINAL.replace(b"2026-12-01 09:00", b"2027-02-03 10:15")

    code, output = invoke("unqueue", "edited", "--config", config)
    assert code == 0, output
    assert "will not be released" in output
    expected = ORIGINAL.replace(b"2026-12-01 09:00", b"2027-02-03 10:15").replace(
        b"# Tuesday\r\n", b"# Tuesday\r\ndraft: true\r\n"
    )
    assert path.read_bytes() == expected

    code, output = invoke("requeue", "edited", "--at", "2027-02-04T08:00:00Z", "--config", config)
    assert code == 0, output
    assert path.read_bytes() == expected.replace(b"2027-02-03 10:15", b"2027-02-04 03:00").replace(
        b"draft: true", b"draft: false"
    )
    assert "queued for 2027-02-04 03:00 EST" in output


def test_requeue_refuses_a_dst_ambiguous_time_as_the_error_documents(settings: Settings, project: Path) -> None:
    path = project / "posts" / "edited.md"
    path.write_bytes(ORIGINAL)
    config = str(project / "pipeline.toml")

    code, output = invoke("requeue", "edited", "--at", "2026-11-01 01:30", "--config", config)
    assert code == 1
    assert "--at: 2026-11-01 01:30 happens twice in America/New_York (the clocks fall back)" in output
    assert "2026-11-01T01:30:00-04:00 for the first, 2026-11-01T01:30:00-05:00 for the second" in output
    assert path.read_bytes() == ORIGINAL

    code, output = invoke("requeue", "edited", "--at", "2026-03-08 02:30", "--config", config)
    assert code == 1 and "does not exist in America/New_York" in output
    assert path.read_bytes() == ORIGINAL

    # Doing what the message says works, and the file keeps the offset (the wall time alone is ambiguous).
    code, output = invoke("requeue", "edited", "--at", "2026-11-01T01:30:00-05:00", "--config", config)
    assert code == 0, output
    assert b"date: 2026-11-01T01:30-05:00  # Tuesday\r\n" in path.read_bytes()
    post = parse_post(path.read_bytes(), str(path), settings)
    assert post.date == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_unqueue_refuses_a_released_post(settings: Settings, project: Path) -> None:
    write_post(project, "gone-out", at(-30))
    release.release_post(settings, "gone-out", datetime.now(UTC))
    code, output = invoke("unqueue", "gone-out", "--config", str(project / "pipeline.toml"))
    assert code == 1 and "was already released" in output

"""Routine faults through the real CLI: one line naming what and where, a distinct exit
status, no traceback (unless --debug); a bug still gets its traceback."""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config import Settings
from pipeline.errors import ExitCode
from tests.conftest import GOOD_POST, write_post
from tests.fault_tools import ROOT, assert_one_line, can_mount, fill, remount, run, small_disk, snapshot

NOW = "2026-11-27T12:00"
SCHEDULER = (str(ROOT / "scheduler.py"),)
SQLITE_URL = 'url = "sqlite:///state/pipeline.db"'


def configure(project: Path, old: str, new: str) -> None:
    toml = project / "pipeline.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once it is closed


def test_an_unreachable_postgresql_server_is_one_line_without_the_password(project: Path) -> None:
    pytest.importorskip("psycopg")
    port = closed_port()
    configure(project, SQLITE_URL, f'url = "postgresql+psycopg://clinic:s3cret-pw@127.0.0.1:{port}/ledger"')
    for program, args in ((("-m", "pipeline"), ("subscribers", "count")), (SCHEDULER, ())):
        result = run(project, *args, program=program)
        assert_one_line(
            result,
            ExitCode.DATABASE,
            f"postgresql+psycopg://clinic:***@127.0.0.1:{port}/ledger: cannot use the database",
            "Connection refused",
        )
        assert "s3cret-pw" not in result.stderr


def test_a_locked_sqlite_database_is_one_line(project: Path) -> None:
    configure(project, SQLITE_URL, SQLITE_URL + "\nbusy_timeout_seconds = 0.5")
    assert run(project, "subscribers", "count").returncode == 0  # the database exists
    holder = sqlite3.connect(project / "state/pipeline.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
    try:
        result = run(project, "subscribers", "add", "ann@example.org")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_line(result, ExitCode.DATABASE, "state/pipeline.db: the database is locked by another process")
    assert run(project, "subscribers", "add", "ann@example.org").returncode == 0  # and once it is free, it works


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (
            "postgresql+nosuchdriver://clinic:s3cret-pw@db.example.org/ledger",
            "unknown database driver in postgresql+nosuchdriver://clinic:***@db.example.org/ledger",
        ),
        ("not a url", "'not a url' is not a database URL"),
    ],
)
def test_a_bad_database_url_is_a_configuration_error(project: Path, url: str, fragment: str) -> None:
    configure(project, SQLITE_URL, f'url = "{url}"')
    for program, args in ((("-m", "pipeline"), ("subscribers", "count")), (SCHEDULER, ())):
        result = run(project, *args, program=program)
        assert_one_line(result, ExitCode.CONFIG, "database.url: ", fragment)
        assert "s3cret-pw" not in result.stderr


def test_an_unwritable_state_folder_is_one_line_and_leaves_out_as_it_was(project: Path) -> None:
    write_post(project / "posts", "2026-11-03-a-good-post.md", GOOD_POST)
    assert run(project, "build", "--now", NOW).returncode == 0
    before = snapshot(project / "out")
    write_post(project / "posts", "2026-11-04-another.md", GOOD_POST.replace("A good post", "Another"))
    state = project / "state"
    state.chmod(0o555)
    try:
        build = run(project, "build", "--now", NOW, obey_modes=True)
        assert_one_line(build, ExitCode.FILES, "state: cannot write build-cache.pickle: permission denied")
        assert snapshot(project / "out") == before
        add = run(project, "subscribers", "add", "ann@example.org", obey_modes=True)
        assert_one_line(add, ExitCode.FILES, "state/pipeline.db: cannot open the database file")
        scheduler = run(project, program=SCHEDULER, obey_modes=True)
        # The scheduler opens the ledger before it takes its locks: the database file is what it meets first.
        assert_one_line(scheduler, ExitCode.FILES, "state/pipeline.db: cannot open the database file", "ls -ld")
    finally:
        state.chmod(0o755)


def test_an_unreadable_or_missing_posts_folder_is_an_error_not_an_empty_site(project: Path) -> None:
    posts = project / "posts"
    write_post(posts, "2026-11-03-a-good-post.md", GOOD_POST)
    posts.chmod(0)
    try:
        for args in (("validate",), ("build", "--now", NOW), ("queue",)):
            result = run(project, *args, obey_modes=True)
            assert_one_line(result, ExitCode.FILES, "posts: cannot read the posts folder: permission denied")
    finally:
        posts.chmod(0o755)
    (posts / "2026-11-03-a-good-post.md").unlink()
    posts.rmdir()
    assert_one_line(run(project, "validate"), ExitCode.FILES, "posts: the posts folder does not exist")


def test_an_unreadable_secret_file_is_one_line(project: Path) -> None:
    write_post(project / "posts", "2026-11-03-a-good-post.md", GOOD_POST)
    secret = project / "state/secret"
    secret.parent.mkdir()
    secret.write_text("ab" * 32 + "\n")
    secret.chmod(0)
    try:
        result = run(project, "send-test", "a-good-post", "--to", "staff@example.org", obey_modes=True)
    finally:
        secret.chmod(0o600)
    assert_one_line(result, ExitCode.FILES, "state/secret: permission denied")


def test_a_malformed_transport_spec_is_a_configuration_error(project: Path) -> None:
    write_post(project / "posts", "2026-11-03-a-good-post.md", GOOD_POST)
    expected = "transport: cannot read 'smtp://[::1': Invalid IPv6 URL"
    proof = ("send-test", "a-good-post", "--to", "staff@example.org")
    assert_one_line(run(project, *proof, "--transport", "smtp://[::1"), ExitCode.CONFIG, expected)
    assert_one_line(run(project, "--transport", "smtp://[::1", program=SCHEDULER), ExitCode.CONFIG, expected)
    configure(project, 'transport = "outbox:state/outbox"', 'transport = "smtp://[::1"')
    assert_one_line(run(project, *proof), ExitCode.CONFIG, expected)


@pytest.mark.parametrize("command", [("new", "Socket liners in summer heat"), ("--help",)])
def test_output_into_a_closed_pipe_ends_quietly_not_as_a_bug(project: Path, command: tuple[str, ...]) -> None:
    """`pipeline ... | head` whose reader stopped reading: no traceback and no "bug", but
    click's own answer to a closed pipe, as for any click program: exit 1, quietly (the
    reader is gone, and the command's work was done or is left whole)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command writes: its first write meets a closed pipe
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *command],
            cwd=project,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_a_mail_relay_that_cannot_be_reached_is_a_mail_fault(project: Path) -> None:
    write_post(project / "posts", "2026-11-03-a-good-post.md", GOOD_POST)
    relay = f"smtp://127.0.0.1:{closed_port()}"
    result = run(project, "send-test", "a-good-post", "--to", "staff@example.org", "--transport", relay)
    assert_one_line(result, ExitCode.MAIL, f"transport: lost the connection to {relay}", "Connection refused")


@pytest.mark.skipif(not can_mount(), reason="mounting a small tmpfs needs root with CAP_SYS_ADMIN")
def test_a_read_only_or_full_disk_under_out_or_the_ledger_is_one_line(project: Path) -> None:
    configure(project, 'out = "out"', 'out = "disk/out"')
    configure(project, SQLITE_URL, 'url = "sqlite:///disk/ledger.db"')
    posts = project / "posts"
    write_post(posts, "2026-11-03-a-good-post.md", GOOD_POST)
    rows = "email,name\n" + "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(3000))
    (project / "readers.csv").write_text(rows)
    with small_disk(project / "disk", "4m") as disk:
        assert run(project, "build", "--now", NOW).returncode == 0
        assert run(project, "subscribers", "add", "ann@example.org").returncode == 0
        before = snapshot(disk / "out")
        write_post(posts, "2026-11-04-another.md", GOOD_POST.replace("A good post", "Another"))

        remount(disk, "ro")
        build = run(project, "build", "--now", NOW)
        assert_one_line(build, ExitCode.FILES, "disk/out: ", "the disk is read-only")
        assert snapshot(disk / "out") == before
        add = run(project, "subscribers", "add", "bob@example.org")
        assert_one_line(add, ExitCode.FILES, "disk/ledger.db: the disk is read-only")

        remount(disk, "rw")
        fill(disk)
        build = run(project, "build", "--now", NOW)
        assert_one_line(build, ExitCode.FILES, "disk/out: ", "no space left on the disk")
        assert snapshot(disk / "out") == before
        imported = run(project, "subscribers", "import", "readers.csv")
        assert_one_line(imported, ExitCode.FILES, "disk/ledger.db: no space left on the disk")


def test_a_scheduler_job_that_meets_a_locked_database_logs_one_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.ledger.store import Store
    from pipeline.schedule.jobs import guard as _guard

    with Store.open_url(settings.database_url, busy_timeout=0.2) as store:
        holder = sqlite3.connect(settings.state_dir / "pipeline.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with caplog.at_level(logging.ERROR, logger="pipeline.scheduler"), _guard("delivery"):
                store.set_meta("probe", "1")  # a job's write while another process holds the lock
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    (record,) = caplog.records
    assert record.getMessage().startswith("delivery: ")
    assert "the database is locked by another process" in record.getMessage()
    assert not record.exc_info  # one line, not a traceback


def test_debug_shows_the_traceback_with_the_line(project: Path) -> None:
    configure(project, SQLITE_URL, 'url = "not a url"')
    for result in (
        run(project, "--debug", "subscribers", "count"),
        run(project, "subscribers", "count", env={"PIPELINE_DEBUG": "1"}),
        run(project, program=SCHEDULER, env={"PIPELINE_DEBUG": "1"}),
    ):
        assert result.returncode == ExitCode.CONFIG
        assert result.stderr.startswith("Traceback")
        assert result.stderr.splitlines()[-1].startswith("error: database.url: 'not a url' is not a database URL")


def test_a_bug_is_a_traceback_that_says_so(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.cli.publish

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline.cli.publish, "load_posts", broken)  # a bug, put where validate runs
    result = CliRunner().invoke(cli, ["validate", "--config", str(project / "pipeline.toml")])
    assert result.exit_code == ExitCode.BUG
    assert "Traceback" in result.stderr and "ZeroDivisionError: division by zero" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: this is a bug in the pipeline, not something you did (ZeroDivisionError); "
        "please report it with the traceback above"
    )


def test_the_readme_lists_every_exit_status() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## When something goes wrong") :]
    listed = {int(code) for code in re.findall(r"^\| `(\d+)` \|", table, flags=re.MULTILINE)}
    assert listed == {int(code) for code in ExitCode}

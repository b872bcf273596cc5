"""The build as staff run it: bad posts reported, good ones built, cache, pruning, CLI."""

from __future__ import annotations

import csv
import gc
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from pipeline.channels.templating import make_environment
from pipeline.cli.main import cli
from pipeline.config import Settings
from pipeline.site.build import build
from tests.conftest import GOOD_POST, write_post

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


# Every build warns of each handle pipeline.toml marks unconfirmed, first (tests/test_social_compose.py).
HANDLE_WARNINGS = [
    f"warning: pipeline.toml: social.handles.{platform}.confirmed: {platform} handle {handle} is not confirmed: "
    "no snippet names it (once the clinic has checked that the account is theirs, set confirmed = true)"
    for platform, handle in (
        ("x", "@JamesonProsth"),
        ("mastodon", "@JamesonProsthetics@mastodon.social"),
        ("bluesky", "@jamesonprosthetics.bsky.social"),
        ("threads", "@jamesonprosthetics"),
        ("linkedin", "@JamesonProsthetics"),
        ("instagram", "@jamesonprosthetics"),
    )
]


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=project, capture_output=True, text=True, timeout=120
    )


def test_one_bad_post_never_blocks_the_others(project: Path) -> None:
    posts = project / "posts"
    write_post(posts, "2026-11-03-good.md", GOOD_POST)
    write_post(posts, "2026-11-04-bad.md", "---\ntitle: Bad\ndate: 2026-13-45\n---\nBody\n")
    write_post(posts, "2026-11-05-worse.md", "no front matter at all\n")
    run = run_cli(project, "build", "--now", "2026-11-27T12:00")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [
        *HANDLE_WARNINGS,
        "error: posts/2026-11-04-bad.md:3: date: '2026-13-45' is not an ISO 8601 date; write it like 2026-11-03 09:00 or 2026-11-03T09:00-05:00",
        "error: posts/2026-11-05-worse.md:1: front matter: missing front matter (the first line must be '---', followed by title: and date: and a closing '---')",
    ]
    assert (project / "out/newsletter/good.html").exists()
    assert "good" in (project / "out/feed.xml").read_text()


def test_validate_reports_every_problem_and_exit_code(project: Path) -> None:
    posts = project / "posts"
    write_post(posts, "a.md", GOOD_POST)
    write_post(posts, "b.md", GOOD_POST.replace("title: A good post", "title: Other\nslug: a"))
    write_post(posts, "c.md", GOOD_POST.replace("tags:", "tgas:"))
    run = run_cli(project, "validate")
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: posts/b.md:3: slug: slug 'a' is already used by posts/a.md")
    assert lines[1] == "error: posts/c.md:4: tgas: unknown key 'tgas' (did you mean 'tags'?)"
    (posts / "b.md").unlink()
    (posts / "c.md").unlink()
    run = run_cli(project, "validate")
    assert run.returncode == 0, run.stderr
    assert "1 posts and" in run.stdout


def test_template_error_names_template_file_and_line(project: Path) -> None:
    write_post(project / "posts", "a.md", GOOD_POST)
    template = project / "templates/partials/footer.txt"
    template.write_text("{{ clinic.name }}\n{{ clinic.nmae }}\n")
    run = run_cli(project, "build", "--now", "2026-11-27T12:00")
    assert run.returncode == 1
    assert "templates/partials/footer.txt:2: template:" in run.stderr
    assert "nmae" in run.stderr and "Traceback" not in run.stderr


def test_bad_config_is_one_line_per_problem(project: Path) -> None:
    toml = project / "pipeline.toml"
    toml.write_text(
        toml.read_text()
        .replace('timezone = "America/New_York"', 'timezone = "America/Charleston"')
        .replace("max_items = 20", "max_itmes = 20")
    )
    run = run_cli(project, "build")
    assert run.returncode == 3  # configuration
    assert "pipeline.toml:14: clinic.timezone: unknown time zone 'America/Charleston'" in run.stderr
    assert "feed.max_itmes: unknown setting (did you mean 'max_items'?)" in run.stderr
    assert "Traceback" not in run.stderr


def test_no_op_and_one_post_rebuilds_reuse_the_cache(settings: Settings) -> None:
    for n in range(1, 6):
        write_post(settings.posts_dir, f"2026-11-0{n}-p{n}.md", GOOD_POST.replace("A good post", f"Post {n}"))
    first = build(settings, NOW)
    assert first.rendered == 5 and first.errors == []
    mtimes = {p: p.stat().st_mtime_ns for p in settings.out_dir.rglob("*") if p.is_file()}
    second = build(settings, NOW)
    assert second.rendered == 0 and second.reused == 5 and second.written == []
    assert mtimes == {p: p.stat().st_mtime_ns for p in settings.out_dir.rglob("*") if p.is_file()}
    path = settings.posts_dir / "2026-11-03-p3.md"
    path.write_text(path.read_text().replace("Body text", "Changed body text"))
    third = build(settings, NOW)
    assert third.rendered == 1
    assert "Changed body text" in (settings.out_dir / "newsletter/p3.txt").read_text()
    assert "newsletter/p1.html" not in third.written


def test_outputs_of_a_post_that_is_drafted_or_deleted_are_removed(settings: Settings) -> None:
    path = write_post(settings.posts_dir, "2026-11-03-a.md", GOOD_POST)
    write_post(settings.posts_dir, "2026-11-04-b.md", GOOD_POST.replace("A good post", "B"))
    build(settings, NOW)
    assert (settings.out_dir / "newsletter/a.html").exists()
    (settings.out_dir / "robots.txt").write_text("kept")  # not ours: never touched
    path.write_text(GOOD_POST.replace("tags:", "draft: true\ntags:"))
    result = build(settings, NOW)
    assert "newsletter/a.html" in result.removed
    assert not (settings.out_dir / "newsletter/a.html").exists()
    assert (settings.out_dir / "newsletter/b.html").exists()
    assert (settings.out_dir / "robots.txt").read_text() == "kept"


def test_future_post_is_queued_not_released(settings: Settings) -> None:
    write_post(settings.posts_dir, "2027-01-01-later.md", GOOD_POST.replace("2026-11-03", "2027-01-01"))
    result = build(settings, NOW)
    assert [p.slug for p in result.queued] == ["later"] and result.released == []
    assert not (settings.out_dir / "newsletter/later.html").exists()
    queue = (settings.out_dir / "social/queue.csv").read_text()
    assert queue.count("later") >= 7 and "2027-01-01T14:00:00Z" in queue
    after = build(settings, datetime(2027, 1, 1, 14, 0, tzinfo=UTC))
    assert [p.slug for p in after.released] == ["later"]
    assert (settings.out_dir / "newsletter/later.html").exists()


def test_parallel_build_matches_serial_build(settings: Settings, tmp_path: Path) -> None:
    for n in range(80):
        write_post(settings.posts_dir, f"p{n:03d}.md", GOOD_POST.replace("A good post", f"Post {n}"))
    serial = build(settings, NOW, jobs=1)
    serial_files = {p.relative_to(settings.out_dir): p.read_bytes() for p in settings.out_dir.rglob("*") if p.is_file()}
    parallel_settings = settings.with_paths(out=tmp_path / "out2", state=tmp_path / "state2")
    parallel = build(parallel_settings, NOW, jobs=2)
    parallel_files = {
        p.relative_to(parallel_settings.out_dir): p.read_bytes()
        for p in parallel_settings.out_dir.rglob("*")
        if p.is_file()
    }
    assert serial.rendered == parallel.rendered == 80
    assert serial_files == parallel_files


def test_a_build_leaves_the_garbage_collector_as_it_found_it(settings: Settings) -> None:
    """The cache is kept out of the cycle collector's sight only while a build runs: a
    scheduler calls build() for weeks, and nothing may stay frozen or switched off."""
    for n in range(70):  # enough for the process pool, whose results are also kept aside
        write_post(settings.posts_dir, f"p{n:03d}.md", GOOD_POST.replace("A good post", f"Post {n}"))
    assert build(settings, NOW, jobs=2).errors == []  # a first build, which imports the renderers
    # Start the count from nothing frozen. It is not 0 at start-up on every Python (3.12.1
    # starts at 375, and its first import of pkg_resources puts them back after an unfreeze).
    gc.unfreeze()
    assert build(settings, NOW, jobs=2).errors == []  # one that loads its cache
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()  # a caller's (frozen objects that die on their own leave the count)
    try:
        build(settings, NOW, jobs=2)
        assert gc.get_freeze_count() > 0, "what a caller froze stays frozen"
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        build(settings, NOW)
        assert not gc.isenabled(), "a caller's choice to pause the collector is kept"
    finally:
        gc.enable()


_READ_CACHE = """
import gc, sys
from pipeline.config import load_settings
from pipeline.site.cache import PostCache
settings = load_settings(sys.argv[1])
before = gc.get_freeze_count()
cache = PostCache(settings, for_the_process=sys.argv[2] == "once")
cache.current()
print(len(cache.entries), gc.get_freeze_count() - before, gc.isenabled())
"""


def test_a_command_that_builds_once_freezes_the_cache_it_reads_and_a_scheduler_never_does(
    settings: Settings,
) -> None:
    """`pipeline build` reads the cache and exits: its objects are frozen, so the cycle
    collector never walks them again (a third of a no-op build of a large archive). The
    scheduler's cache (the default) is only read with the collector paused."""
    for n in range(12):
        write_post(settings.posts_dir, f"p{n:03d}.md", GOOD_POST.replace("A good post", f"Post {n}"))
    assert build(settings, NOW).errors == []
    config = str(settings.root / "pipeline.toml")
    counts = {}
    for kind in ("once", "scheduler"):
        run = subprocess.run(
            [sys.executable, "-c", _READ_CACHE, config, kind], capture_output=True, text=True, timeout=60, check=True
        )
        entries, frozen, enabled = run.stdout.split()
        assert (int(entries), enabled) == (12, "True")
        counts[kind] = int(frozen)
    assert counts["scheduler"] == 0
    assert counts["once"] > 12 * 10  # every entry's post, its strings and outputs: some tens of objects each


def test_a_post_deleted_while_the_build_runs_is_reported_not_a_crash(settings: Settings) -> None:
    from pipeline.site.worker import Run, Task, make, run_tasks

    run = Run(settings, NOW, None, str(settings.out_dir / ".staging"))
    gone = str(settings.posts_dir / "2026-11-03-gone.md")
    task = Task(gone, "posts/2026-11-03-gone.md", (1, 1, 1), None)  # listed, then deleted
    [made] = run_tasks([task], run, make_environment(settings), jobs=1)
    entry = made.entry
    assert entry.post is None and entry.error is not None
    assert str(entry.error).startswith("posts/2026-11-03-gone.md: could not be read: No such file or directory")
    assert entry.stat == (0, 0, 0)  # never matches a real file: read again by the next build
    assert str(make(task).entry.error) == str(entry.error)  # the same, run directly


def test_new_writes_a_draft_that_is_never_released_with_its_placeholders(project: Path) -> None:
    run = run_cli(project, "new", "Walking on sand: tips", "--at", "2027-03-02 09:00:30")
    assert run.returncode == 0, run.stderr
    first, *steps = run.stdout.splitlines()
    path = project / first
    assert path.name == "2027-03-02-walking-on-sand-tips.md"
    text = path.read_text()
    assert 'title: "Walking on sand: tips"' in text
    assert "\ndate: 2027-03-02 09:00:30\n" in text  # the seconds are kept
    assert "\nslug: walking-on-sand-tips\n" in text  # a rename keeps the archive URL and feed id
    assert "\ndraft: true\n" in text
    # What to do next, for staff: edit, check, then remove the draft line (no approval step when it is off).
    assert steps[0] == "Next:"
    assert any(first in step and "replace the placeholder" in step for step in steps)
    assert any("delete the line 'draft: true'" in step and "2027-03-02 09:00:30 EST" in step for step in steps)
    assert not any("approve" in step for step in steps)
    assert run_cli(project, "validate").returncode == 0  # a draft may hold placeholders

    # Nobody edits it, but someone removes the draft line: refused, never released or mailed.
    lines = text.splitlines(keepends=True)
    path.write_text("".join(line for line in lines if line != "draft: true\n"))
    summary_line = next(n for n, line in enumerate(lines, start=1) if line.startswith("summary:")) - 1
    body_line = len(lines) - 1
    checked = run_cli(project, "validate")
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        f"error: posts/2027-03-02-walking-on-sand-tips.md:{summary_line}: summary: still holds the placeholder text "
        "of `pipeline new` (replace it with one or two sentences about the article, or delete the summary line)",
        f"error: posts/2027-03-02-walking-on-sand-tips.md:{body_line}: body: still holds the placeholder text "
        "of `pipeline new` (replace the placeholder with the article, or keep 'draft: true' until it is written)",
    ]
    built = run_cli(project, "build", "--now", "2027-03-03T12:00")
    assert built.returncode == 1 and "0 released, 0 queued, 1 invalid" in built.stdout
    assert not (project / "out/newsletter/walking-on-sand-tips.html").exists()
    assert "walking-on-sand-tips" not in (project / "out/feed.xml").read_text()

    again = run_cli(project, "new", "Walking on sand: tips", "--at", "2027-03-02 09:00")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_new_names_at_in_its_errors_and_mentions_approval_when_on(project: Path) -> None:
    bad = run_cli(project, "new", "A post", "--at", "next tuesday")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --at: 'next tuesday' is not an ISO 8601 date")
    assert "--now" not in bad.stderr
    gap = run_cli(project, "new", "A post", "--at", "2027-03-14 02:30")
    assert gap.returncode == 1 and gap.stderr.startswith("error: --at: 2027-03-14 02:30 does not exist")
    fraction = run_cli(project, "new", "A post", "--at", "2027-03-02 09:00:30.5")
    assert fraction.returncode == 1 and fraction.stderr.startswith(
        "error: --at: '2027-03-02 09:00:30.5' has a fraction"
    )
    assert list((project / "posts").iterdir()) == []
    config = project / "pipeline.toml"
    config.write_text(config.read_text().replace("require_approval = false", "require_approval = true"))
    run = run_cli(project, "new", "A post", "--at", "2027-03-02 09:00")
    assert run.returncode == 0, run.stderr
    assert "pipeline approve a-post --by NAME" in run.stdout
    assert "\ndate: 2027-03-02 09:00\n" in (project / run.stdout.splitlines()[0]).read_text()


def test_preview_writes_html_and_prints_snippets(project: Path) -> None:
    write_post(project / "posts", "2027-01-01-later.md", GOOD_POST.replace("2026-11-03", "2027-01-01"))
    run = run_cli(project, "preview", "later")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].endswith("out/preview/later.html")
    assert (project / "out/preview/later.html").exists()
    assert "mastodon" in run.stdout
    missing = run_cli(project, "preview", "nope")
    assert missing.returncode == 1 and "no post with slug 'nope'" in missing.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help, f"{name} has no help text"
        assert "Usage:" in result.output


def test_python_dash_m_and_console_script_agree(project: Path) -> None:
    run = run_cli(project, "--help")
    assert run.returncode == 0 and "build" in run.stdout
    script = Path(sys.executable).parent / "pipeline"
    if script.exists():
        assert subprocess.run(
            [str(script), "--version"], capture_output=True, text=True, env=os.environ
        ).stdout.startswith("pipeline")


def test_approval_gate_keeps_unapproved_posts_out_of_every_output(settings: Settings) -> None:
    from pipeline.site.build import ApprovalGate

    write_post(settings.posts_dir, "2026-11-03-old.md", GOOD_POST.replace("A good post", "Old"))
    write_post(
        settings.posts_dir,
        "2026-11-20-new.md",
        GOOD_POST.replace("2026-11-03", "2026-11-20").replace("A good post", "New"),
    )
    since = datetime(2026, 11, 10, tzinfo=UTC)
    closed = ApprovalGate(since=since, approved=frozenset())
    result = build(settings, NOW, gate=closed)
    assert [p.slug for p in result.released] == ["old"]  # dated before the first run: exempt
    assert [p.slug for p in result.withheld] == ["new"]
    assert "new" not in (settings.out_dir / "feed.xml").read_text()
    assert not (settings.out_dir / "archive/new.html").exists()
    post = next(p for p in result.withheld)
    opened = ApprovalGate(since=since, approved=frozenset({("new", post.content_hash)}))
    result = build(settings, NOW, gate=opened)
    assert [p.slug for p in result.released] == ["old", "new"] and result.withheld == []
    assert "/archive/new" in (settings.out_dir / "feed.xml").read_text()
    assert (settings.out_dir / "archive/new.html").exists()
    # An approval of another version of the file does not count.
    stale = ApprovalGate(since=since, approved=frozenset({("new", "0" * 64)}))
    assert [p.slug for p in build(settings, NOW, gate=stale).withheld] == ["new"]
    assert not (settings.out_dir / "archive/new.html").exists()


def test_a_deleted_output_is_written_again(settings: Settings) -> None:
    write_post(settings.posts_dir, "2026-11-03-a.md", GOOD_POST)
    build(settings, NOW)
    (settings.out_dir / "newsletter/a.html").unlink()
    (settings.out_dir / "feed.xml").unlink()
    result = build(settings, NOW)
    assert result.rendered == 1
    assert (settings.out_dir / "newsletter/a.html").exists() and (settings.out_dir / "feed.xml").exists()
    assert build(settings, NOW).written == []


def test_social_queue_cells_never_start_a_formula(settings: Settings) -> None:
    """A spreadsheet runs a cell starting with =, +, - or @: every such cell is guarded."""
    post = (
        "---\n"
        'title: "=1+1 myths about sockets"\n'
        "date: 2027-01-01 09:00\n"
        "social:\n"
        '  x: "=HYPERLINK(\\"https://evil.example/\\", \\"Click\\")"\n'
        "  mastodon: \"+cmd|' /C calc'!A0\"\n"
        '  bluesky: "-2+3 ways to care for your skin"\n'
        '  threads: "@everyone read this"\n'
        'summary: "=1+1 myths about sockets, answered."\n'
        "---\n"
        "Body.\n"
    )
    write_post(settings.posts_dir, "2027-01-01-myths.md", post)
    build(settings, NOW)
    rows = list(csv.DictReader(io.StringIO((settings.out_dir / "social/queue.csv").read_text(encoding="utf-8"))))
    assert len(rows) == 7
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    text = {row["platform"]: row["text"] for row in rows}
    assert text["x"].startswith("'=HYPERLINK(")
    assert text["mastodon"].startswith("'+cmd|")
    assert text["bluesky"].startswith("'-2+3 ways")
    assert text["threads"].startswith("'@everyone")
    assert text["facebook"].startswith("'=1+1 myths")  # the summary, in the default text
    assert {row["handle"] for row in rows if row["platform"] == "x"} == {"'@JamesonProsth"}


MANY_MISTAKES = """---
title: Three mistakes
date: next tuesday
sources:
  - https://example.org/fine
  - pubmed.ncbi.nlm.nih.gov/22236475/
  - not a url
---
Body.
"""


def test_validate_prints_every_problem_of_a_file(project: Path) -> None:
    write_post(project / "posts", "2026-11-03-good.md", GOOD_POST)
    write_post(project / "posts", "2026-11-04-many.md", MANY_MISTAKES)
    run = run_cli(project, "validate")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [
        "error: posts/2026-11-04-many.md:3: date: 'next tuesday' is not an ISO 8601 date; "
        "write it like 2026-11-03 09:00 or 2026-11-03T09:00-05:00",
        "error: posts/2026-11-04-many.md:6: sources[2]: 'pubmed.ncbi.nlm.nih.gov/22236475/' has no https:// in front "
        "(it would link to a page on our own site) (write https://pubmed.ncbi.nlm.nih.gov/22236475/)",
        "error: posts/2026-11-04-many.md:7: sources[3]: 'not a url' is not a web address "
        "(write the full address, starting with https://)",
    ]
    # The build: the same lines, and still one invalid post that does not stop the good one.
    built = run_cli(project, "build", "--now", "2026-11-27T12:00")
    assert built.returncode == 1
    assert built.stderr.splitlines() == HANDLE_WARNINGS + run.stderr.splitlines()
    assert "1 released, 0 queued, 1 invalid" in built.stdout
    assert (project / "out/newsletter/good.html").exists()


def test_markup_in_a_title_is_a_warning_at_build_and_validate(project: Path) -> None:
    post = GOOD_POST.replace("title: A good post", 'title: "Pain <em>relief</em> & <script>x</script>"')
    write_post(project / "posts", "2026-11-03-good.md", post)
    warning = (
        "warning: posts/2026-11-03-good.md:2: title: HTML markup removed from the title: "
        "'Pain <em>relief</em> & <script>x</script>' is now 'Pain relief & x' "
        "(write the title as plain text, without tags)"
    )
    checked = run_cli(project, "validate")
    assert checked.returncode == 0 and checked.stderr.splitlines() == [warning]
    assert "1 posts and" in checked.stdout
    for _ in range(2):  # reported by every build, the cached one too
        built = run_cli(project, "build", "--now", "2026-11-27T12:00")
        assert built.returncode == 0 and built.stderr.splitlines() == [warning, *HANDLE_WARNINGS]
    assert "<title>Pain relief &amp; x</title>" in (project / "out/feed.xml").read_text()

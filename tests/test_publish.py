"""A build that fails, cold or incremental, leaves out/ exactly as it was (byte for byte,
same files); a crash in the middle of publishing is completed by the next build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import ExitCode
from pipeline.site.publish import JOURNAL, STAGING, recover
from tests.conftest import write_post
from tests.fault_tools import ROOT, assert_one_line, can_mount, fill, run, small_disk, snapshot

NOW = "2026-11-27T12:00"
FAULTY = (str(ROOT / "tests/faulty_pipeline.py"),)
BODY = " ".join(["Socket fit changes as the residual limb settles."] * 40)


def post(n: int, *, title: str | None = None) -> str:
    return f"---\ntitle: {title or f'Post {n}'}\ndate: 2026-10-{n % 28 + 1:02d} 09:{n % 60:02d}\ntags: [research]\n---\n{BODY}\n"


def write_posts(project: Path, numbers: range) -> None:
    for n in numbers:
        write_post(project / "posts", f"p{n:02d}.md", post(n))


def change_everything(project: Path) -> None:
    """An edit that re-renders every post, a new post, a deleted one and a retitled one:
    a rebuild then writes, replaces and removes files, and changes every feed."""
    footer = project / "templates/partials/footer.html"
    footer.write_text(footer.read_text() + "<p>Open on Saturdays.</p>\n")
    write_post(project / "posts", "p90.md", post(90))
    (project / "posts/p02.md").unlink()
    write_post(project / "posts", "p05.md", post(5, title="Post five, retitled"))


def build(project: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    if fault is None:
        return run(project, "build", "--now", NOW, *args)
    return run(project, "build", "--now", NOW, *args, program=FAULTY, env={"FAULT": fault})


def fresh_build(project: Path, tmp_path: Path) -> dict[str, str]:
    """What out/ must hold: the same posts and templates built cold into another folder."""
    other = tmp_path / "fresh"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns("out", "state", "disk"))
    assert build(other, "--out", str(other / "fresh-out")).returncode == 0
    return snapshot(other / "fresh-out")


@pytest.mark.parametrize(
    "fail_on",
    [
        "p07",  # a post's files, while posts are rendered
        "feed.json",  # the shared files, once every post is written (the feeds stayed old)
        "build-cache",  # the cache in state/, just before publishing
    ],
)
def test_a_full_disk_during_an_incremental_build_leaves_out_as_it_was(
    project: Path, tmp_path: Path, fail_on: str
) -> None:
    write_posts(project, range(1, 13))
    assert build(project).returncode == 0
    before = snapshot(project / "out")
    change_everything(project)

    failed = build(project, fault=f"enospc:{fail_on}")
    assert_one_line(failed, ExitCode.FILES, "no space left on the disk", fail_on)
    assert snapshot(project / "out") == before

    if fail_on == "feed.json":  # with space again, the build goes through, as if out/ had been empty
        assert build(project).returncode == 0
        assert snapshot(project / "out") == fresh_build(project, tmp_path)


@pytest.mark.parametrize("fail_on", ["p40", "atom.xml"])
def test_a_full_disk_during_a_cold_build_leaves_out_as_it_was(project: Path, fail_on: str) -> None:
    write_posts(project, range(1, 65))  # enough for the worker processes (they inherit the fault)
    failed = build(project, "--jobs", "2", fault=f"enospc:{fail_on}")
    assert_one_line(failed, ExitCode.FILES, "out: cannot write", "so nothing was published", "no space left")
    assert not (project / "out").exists()

    if fail_on == "p40":
        (project / "out").mkdir()
        (project / "out/robots.txt").write_text("User-agent: *\n")  # the clinic's own file
        before = snapshot(project / "out")
        failed = build(project, "--jobs", "2", fault=f"enospc:{fail_on}")
        assert failed.returncode == ExitCode.FILES
        assert snapshot(project / "out") == before


@pytest.mark.skipif(not can_mount(), reason="mounting a small tmpfs needs root with CAP_SYS_ADMIN")
def test_a_real_full_disk_leaves_out_as_it_was(project: Path, tmp_path: Path) -> None:
    toml = project / "pipeline.toml"
    toml.write_text(toml.read_text().replace('out = "out"', 'out = "disk/out"'))
    write_posts(project, range(1, 161))  # about four files of at least a page each per post
    with small_disk(project / "disk", "2m") as disk:
        cold = build(project)  # the site needs more than the disk has
        assert_one_line(cold, ExitCode.FILES, "disk/out: cannot write", "no space left on the disk")
        assert not (disk / "out").exists()

        shutil.rmtree(project / "posts")
        (project / "posts").mkdir()
        write_posts(project, range(1, 13))
        assert build(project).returncode == 0
        before = snapshot(disk / "out")
        change_everything(project)
        fill(disk, leave_bytes=64 * 1024)  # room for a few files, not for the rebuild
        failed = build(project)
        assert_one_line(failed, ExitCode.FILES, "disk/out: cannot write", "no space left on the disk")
        assert snapshot(disk / "out") == before

        (disk / "filler").unlink()
        assert build(project).returncode == 0
        expected = fresh_build(project, tmp_path)
        assert snapshot(disk / "out") == expected


def test_a_crash_in_the_middle_of_publishing_is_rolled_forward(project: Path, tmp_path: Path) -> None:
    write_posts(project, range(1, 13))
    assert build(project).returncode == 0
    before = snapshot(project / "out")
    change_everything(project)
    expected = fresh_build(project, tmp_path)

    crashed = build(project, fault="crash-after:8")  # dies at its 8th rename into out/
    assert crashed.returncode == 99
    half = {rel: digest for rel, digest in snapshot(project / "out").items() if not rel.startswith(STAGING)}
    assert half != before and half != expected  # really caught in the middle
    assert (project / "out" / STAGING / JOURNAL).is_file()

    recover(project / "out")  # what the next build does first, before it renders anything
    assert snapshot(project / "out") == expected
    assert build(project).returncode == 0
    assert snapshot(project / "out") == expected


def test_a_crash_before_publishing_leaves_out_as_it_was_and_is_cleaned_up(project: Path, tmp_path: Path) -> None:
    write_posts(project, range(1, 13))
    assert build(project).returncode == 0
    before = snapshot(project / "out")
    change_everything(project)
    staged = project / "out" / STAGING / "archive"  # as a build killed while rendering leaves it
    staged.mkdir(parents=True)
    (staged / "half-written.html").write_text("<html")
    recover(project / "out")
    assert snapshot(project / "out") == before
    assert build(project).returncode == 0
    assert snapshot(project / "out") == fresh_build(project, tmp_path)

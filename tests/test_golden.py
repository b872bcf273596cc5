"""Whole-build golden files: the fixed posts in tests/golden/<case>/posts with a fixed
--now must produce exactly the files in tests/golden/<case>/expected.

When a template changes on purpose, regenerate and review the diff by eye:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.content.commonmark import FORCE_ENV
from tests.conftest import make_project

GOLDEN = Path(__file__).parent / "golden"
CASES = {"basic": "2026-11-27T12:00"}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Both CommonMark parsers give the same files (pipeline/content/commonmark.py): the Rust
# one where it has a wheel, the reference one elsewhere (CPython 3.13).
PARSERS = ("default", "markdown-it-py")


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_build_matches_golden_files(case: str, parser: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, posts=GOLDEN / case / "posts")
    command = [sys.executable, "-m", "pipeline", "build", "--now", CASES[case], "--quiet"]
    env = (
        {**os.environ, FORCE_ENV: parser}
        if parser != "default"
        else {k: v for k, v in os.environ.items() if k != FORCE_ENV}
    )
    run = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    produced = files_under(project / "out")
    expected_dir = GOLDEN / case / "expected"
    if os.environ.get("UPDATE_GOLDEN") and parser == "default":
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, data in produced.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_bytes(data)
        pytest.skip("golden files regenerated: review the diff")
    expected = files_under(expected_dir)
    assert sorted(produced) == sorted(expected)
    for rel in expected:
        assert produced[rel] == expected[rel], f"{rel} differs from tests/golden/{case}/expected/{rel}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_messages_match_golden_files(case: str, tmp_path: Path) -> None:
    """The whole message a subscriber gets (token left as a placeholder), for each e-mailed
    post and the digest of the golden case: the mail layer's bytes, reviewed like the site's."""

    from pipeline.channels.newsletter import render_digest, render_post_newsletter
    from pipeline.channels.templating import make_environment
    from pipeline.config import load_settings
    from pipeline.content.dates import parse_datetime
    from pipeline.mail.message import MessageTemplate
    from pipeline.site.build import load_posts

    project = make_project(tmp_path, posts=GOLDEN / case / "posts")
    settings = load_settings(project / "pipeline.toml")
    now = parse_datetime(CASES[case], settings.clinic.zone)  # as `pipeline build --now` reads it
    env = make_environment(settings)
    posts, errors = load_posts(settings)
    assert errors == []
    released = [p for p in posts if p.is_released(now) and "email" in p.channels]
    produced = {
        f"{p.slug}.eml": MessageTemplate(render_post_newsletter(p, settings, env), settings).preview() for p in released
    }
    recent = [p for p in released if (now - p.date).days < 7]
    produced["digest.eml"] = MessageTemplate(render_digest(recent, settings, env, now=now), settings).preview()
    expected_dir = GOLDEN / case / "messages"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for name, data in produced.items():
            (expected_dir / name).write_bytes(data)
        pytest.skip("golden messages regenerated: review the diff")
    expected = files_under(expected_dir)
    assert sorted(produced) == sorted(expected)
    for name in expected:
        assert produced[name] == expected[name], f"{name} differs from tests/golden/{case}/messages/{name}"


def test_share_cards_match_golden_files(tmp_path: Path) -> None:
    """The card the web app draws for a post without its own image, byte for byte."""
    from pipeline.channels.social.card import render_card
    from pipeline.config import load_settings
    from pipeline.site.build import load_posts

    project = make_project(tmp_path, posts=GOLDEN / "basic" / "posts")
    settings = load_settings(project / "pipeline.toml")
    posts, _errors = load_posts(settings)
    expected_dir = GOLDEN / "basic" / "cards"
    for path in sorted(expected_dir.glob("*.png")):
        post = next(p for p in posts if p.slug == path.stem)
        card = render_card(post.title, settings)
        if os.environ.get("UPDATE_GOLDEN"):
            path.write_bytes(card)
        assert card == path.read_bytes(), f"the card for {post.slug} differs from {path}"


def build_at(project: Path, now: str, *, quiet: bool = True) -> str:
    """``pipeline build --now NOW`` in ``project``; its output."""
    command = [sys.executable, "-m", "pipeline", "build", "--now", now, *(["--quiet"] if quiet else [])]
    run = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_no_markup_from_a_title_or_body_survives_as_markup(tmp_path: Path) -> None:
    """The edge-case post puts <script> in its title, summary and body: no HTML or XML
    output of a fresh build may carry it as a tag, in any channel."""
    project = make_project(tmp_path, posts=GOLDEN / "basic" / "posts")
    build_at(project, CASES["basic"])
    produced = files_under(project / "out")
    checked = 0
    for rel, data in produced.items():
        if rel.endswith((".html", ".xml")):  # .eml and .txt carry the title as literal text
            text = data.decode("utf-8")
            assert "<script" not in text.lower(), rel
            assert "onclick" not in text and "onerror" not in text, rel
            checked += 1
    assert checked >= 8  # the feeds, the newsletters and their archive pages
    rss = produced["feed.xml"].decode("utf-8")
    # Titles are plain text: the markup is gone (with a warning at build time), its text kept.
    assert "<title>Edge cases: alert('title') &amp; “quotes” — 義肢 🦿</title>" in rss


def test_same_posts_and_now_give_identical_bytes(tmp_path: Path) -> None:
    """Two cold builds in different folders: identical."""
    outputs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        project = make_project(tmp_path / name, posts=GOLDEN / "basic" / "posts")
        build_at(project, CASES["basic"])
        outputs.append(files_under(project / "out"))
    assert outputs[0] == outputs[1]


def test_a_warm_build_gives_the_bytes_of_a_cold_one(tmp_path: Path) -> None:
    """A build from a warm cache (made at an earlier --now, when two posts were out, then
    with one post edited) and a cold build of the same posts and --now: out/ byte-identical."""
    (tmp_path / "cold").mkdir()
    cold = make_project(tmp_path / "cold", posts=GOLDEN / "basic" / "posts")
    build_at(cold, CASES["basic"])
    (tmp_path / "warm").mkdir()
    warm = make_project(tmp_path / "warm", posts=GOLDEN / "basic" / "posts")
    assert "2 released" in build_at(warm, "2026-10-20T12:00", quiet=False)
    post = warm / "posts" / "2026-09-14-why-your-socket-fit-changes-in-the-first-year.md"
    original = post.read_bytes()
    post.write_bytes(original + b"\nA paragraph added, and taken out again.\n")
    build_at(warm, CASES["basic"])
    post.write_bytes(original)
    said = build_at(warm, CASES["basic"], quiet=False)
    assert "4 released" in said and "1 rendered, 4 unchanged" in said  # warm: the other posts from the cache
    assert files_under(warm / "out") == files_under(cold / "out")

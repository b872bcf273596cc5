"""Feeds parse cleanly in a real feed parser, keep their ids, and never read the clock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from pipeline.config import Settings
from pipeline.site.build import build
from tests.conftest import ROOT, make_project, write_post

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)

POST = """---
title: "Knee pain & <script>alert(1)</script> walking"
date: 2026-11-03 09:00
tags: [gait, knee pain]
image: /images/knee.jpg
image_alt: A patient walking with a knee prosthesis
---
First paragraph about *walking*.

<p onmouseover="x()">Raw HTML with a <a href="/contact">relative link</a>.</p>
"""


def build_feeds(settings: Settings) -> dict[str, bytes]:
    result = build(settings, NOW)
    assert result.errors == []
    return {name: (settings.out_dir / name).read_bytes() for name in ("feed.xml", "atom.xml", "feed.json")}


def test_rss_and_atom_parse_without_errors(settings: Settings) -> None:
    write_post(settings.posts_dir, "2026-11-03-knee.md", POST)
    feeds = build_feeds(settings)
    for name in ("feed.xml", "atom.xml"):
        parsed = feedparser.parse(feeds[name])
        assert parsed.bozo == 0, (name, parsed.get("bozo_exception"))
        entry = parsed.entries[0]
        assert entry.title == "Knee pain & alert(1) walking"  # plain text: the markup was stripped
        assert entry.link == "https://jamesonprosthetics.com/archive/knee"
        assert entry.id == "https://jamesonprosthetics.com/archive/knee"
        assert [t.term for t in entry.tags] == ["gait", "knee pain"]
        content = entry.content[0].value
        assert "<em>walking</em>" in content
        assert 'href="https://jamesonprosthetics.com/contact"' in content
        assert "onmouseover" not in content and "<script" not in content
        assert "1407 Ashley River Road" in content
        assert entry.enclosures[0].href == "https://jamesonprosthetics.com/images/knee.jpg"
    rss = feeds["feed.xml"].decode()
    assert "<content:encoded>" in rss
    assert '<guid isPermaLink="true">https://jamesonprosthetics.com/archive/knee</guid>' in rss
    assert '<atom:link href="https://jamesonprosthetics.com/feed.xml" rel="self" type="application/rss+xml"/>' in rss
    assert "<link>https://jamesonprosthetics.com/archive/</link>" in rss
    assert "<title>Knee pain &amp; alert(1) walking</title>" in rss
    assert "<lastBuildDate>Tue, 03 Nov 2026 09:00:00 -0500</lastBuildDate>" in rss
    assert "python-feedgen" not in rss


def test_json_feed_1_1(settings: Settings) -> None:
    write_post(settings.posts_dir, "2026-11-03-knee.md", POST)
    document = json.loads(build_feeds(settings)["feed.json"])
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["feed_url"] == "https://jamesonprosthetics.com/feed.json"
    item = document["items"][0]
    assert item["id"] == item["url"] == "https://jamesonprosthetics.com/archive/knee"
    assert item["title"] == "Knee pain & alert(1) walking"
    assert item["date_published"] == "2026-11-03T14:00:00Z"
    assert item["image"] == "https://jamesonprosthetics.com/images/knee.jpg"
    assert item["tags"] == ["gait", "knee pain"]
    assert "<script" not in item["content_html"]


def test_editing_a_post_updates_it_without_a_new_id(settings: Settings) -> None:
    path = write_post(settings.posts_dir, "2026-11-03-knee.md", POST)
    before = feedparser.parse(build_feeds(settings)["atom.xml"]).entries[0]
    path.write_text(
        POST.replace("tags:", "updated: 2026-11-10 12:00\ntags:").replace("First paragraph", "Edited paragraph")
    )
    after = feedparser.parse(build_feeds(settings)["atom.xml"]).entries[0]
    assert after.id == before.id
    assert after.link == before.link
    assert after.updated_parsed > before.updated_parsed
    assert after.published_parsed == before.published_parsed
    assert "Edited paragraph" in after.content[0].value


def test_newest_n_posts_and_build_date_from_the_newest(settings: Settings, project: Path) -> None:
    toml = project / "pipeline.toml"
    toml.write_text(toml.read_text().replace("max_items = 20", "max_items = 3"))
    from pipeline.config import load_settings

    settings = load_settings(toml)
    for day in range(1, 8):
        write_post(
            settings.posts_dir,
            f"2026-10-0{day}-p{day}.md",
            f"---\ntitle: Post {day}\ndate: 2026-10-0{day} 09:00\n---\nBody {day}.\n",
        )
    write_post(settings.posts_dir, "2027-01-01-future.md", "---\ntitle: Future\ndate: 2027-01-01 09:00\n---\nLater.\n")
    write_post(
        settings.posts_dir,
        "2026-10-09-draft.md",
        "---\ntitle: Draft\ndate: 2026-10-09 09:00\ndraft: true\n---\nNot yet.\n",
    )
    parsed = feedparser.parse(build_feeds(settings)["feed.xml"])
    assert [e.title for e in parsed.entries] == ["Post 7", "Post 6", "Post 5"]
    assert parsed.feed.updated == "Wed, 07 Oct 2026 09:00:00 -0400"


def test_empty_feed_is_still_valid_and_repeatable(settings: Settings) -> None:
    first = build_feeds(settings)
    parsed = feedparser.parse(first["feed.xml"])
    assert parsed.bozo == 0 and parsed.entries == []
    assert build_feeds(settings) == first


GOLDEN_POSTS = ROOT / "tests" / "golden" / "basic" / "posts"
# The validator calls a date after its own clock "implausible": build as of a day already past.
FEED_SETS = {
    "sample": (ROOT / "posts", "2026-11-27T12:00"),
    "golden": (GOLDEN_POSTS, "2026-11-27T12:00"),
    "websub": (GOLDEN_POSTS, "2026-11-27T12:00"),  # the golden posts, with [feed] websub_hub
}
MARKUP = re.compile(r"</?[A-Za-z][^>]*>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")


def built_feeds(tmp_path: Path, which: str) -> dict[str, Path]:
    """The sample posts (posts/) or the golden ones (with the edge-case post), built as staff would."""
    posts, now = FEED_SETS[which]
    (tmp_path / which).mkdir()
    project = make_project(tmp_path / which, posts=posts)
    if which == "websub":
        config = project / "pipeline.toml"
        config.write_text(
            config.read_text().replace("[feed]\n", '[feed]\nwebsub_hub = "https://hub.example.org/"\n', 1)
        )
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--now", now, "--quiet"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return {name: project / "out" / name for name in ("feed.xml", "atom.xml")}


@pytest.mark.parametrize("which", sorted(FEED_SETS))
def test_each_item_has_one_author_and_no_markup_in_titles_or_tags(tmp_path: Path, which: str) -> None:
    """What the W3C validator checks, in CI without it: RSS items carry one author element
    (dc:creator, not also <author>), Atom entries keep theirs, titles and tags are plain text."""
    for name, path in built_feeds(tmp_path, which).items():
        parsed = feedparser.parse(path.read_bytes())
        assert parsed.bozo == 0 and parsed.entries, name
        for entry in parsed.entries:
            assert len(entry.authors) == 1, (name, entry.title, entry.authors)
            expected = "Jameson Prosthetics" if "edge" in entry.link else "Jameson Prosthetics clinical team"
            assert entry.author_detail.name == expected
            assert entry.title_detail.type == "text/plain"
            assert not MARKUP.search(entry.title), (name, entry.title)
            for tag in entry.get("tags", []):
                assert not MARKUP.search(tag.term), (name, tag.term)
        if name == "atom.xml":
            assert all("email" in entry.author_detail for entry in parsed.entries)  # Atom keeps its author
        else:
            assert "<author>" not in path.read_text(encoding="utf-8")
            assert all(entry.author_detail.keys() == {"name"} for entry in parsed.entries)  # from dc:creator


SELF_LINK = "Self reference doesn't match document location"  # the file is validated away from its URL


@pytest.mark.parametrize("which", sorted(FEED_SETS))
def test_feeds_pass_the_w3c_feed_validator(tmp_path: Path, which: str) -> None:
    """The W3C feed validator (github.com/w3c/feedvalidator), level AA: nothing but the
    self-link notice. Runs when FEEDVALIDATOR names a checkout of it (FEEDVALIDATOR_PYTHON:
    an interpreter with its dependencies, lxml, html5lib and rdflib; default this one)."""
    checkout = os.environ.get("FEEDVALIDATOR")
    if not checkout:
        pytest.skip("set FEEDVALIDATOR to a checkout of github.com/w3c/feedvalidator to run it")
    demo = Path(checkout) / "src" / "demo.py"
    assert demo.is_file(), f"FEEDVALIDATOR={checkout} has no src/demo.py"
    python = os.environ.get("FEEDVALIDATOR_PYTHON", sys.executable)
    for name, path in built_feeds(tmp_path, which).items():
        run = subprocess.run(
            [python, str(demo), str(path), "AA"], cwd=demo.parent, capture_output=True, text=True, timeout=300
        )
        assert "Traceback" not in run.stderr, run.stderr
        lines = [line for line in run.stdout.splitlines() if line and not line.startswith("Validating ")]
        assert lines, run.stdout
        notices = [line for line in lines if line != "No errors or warnings" and SELF_LINK not in line]
        assert notices == [], f"{which} {name}:\n{run.stdout}"

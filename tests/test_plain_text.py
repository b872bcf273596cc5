"""The newsletter's plain-text part: what a reader of a text-only mail program, or a
screen reader user who prefers it, gets. 78 columns; an address longer than a line
on a line of its own; a numbered link list after the article instead of addresses
in the middle of sentences; nothing of <script> or <style>."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from pipeline import urls
from pipeline.channels.newsletter import render_digest, render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.config import Settings, load_settings
from pipeline.content.plaintext import LINKS_HEADING, WIDTH
from pipeline.content.posts import parse_post
from pipeline.site.build import load_posts
from tests.conftest import ROOT, make_project

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
LONG_URL = "https://pmc.ncbi.nlm.nih.gov/articles/PMC3845354/pdf/nihms436600-with-a-very-long-name-indeed.pdf"
POST = f"""---
title: Text for every reader
date: 2026-11-03 09:00
summary: A post whose text part is checked line by line, with a summary long enough to wrap in the digest and beyond.
sources:
  - title: A study with a title long enough to need more than one line of the text part, as many do
    url: {LONG_URL}
---
Hello <script>alert(1)</script> world. <style>p {{ color: red }}</style>Styled.

<script>
document.write("never shown")
</script>

<style>
.hidden {{ display: none }}
</style>

Read the [fitting guide](/guides/fitting) and the [long study]({LONG_URL}), or
[call us](tel:+18439361642) or write to <jamesonprosthetics@gmail.com>. The [fitting guide](/guides/fitting) again
keeps its number.

<p>Raw HTML with <a href="https://example.org/raw">a link</a> in it.</p>

- a list item whose text is long enough that the wrapper must break it over two lines or more
"""


def settings_for(tmp_path: Path) -> Settings:
    project = make_project(tmp_path, posts=ROOT / "tests" / "golden" / "basic" / "posts")
    (project / "posts" / "2026-11-03-text.md").write_text(POST, encoding="utf-8")
    return load_settings(project / "pipeline.toml")


def is_address_line(line: str) -> bool:
    """A line that is one address (possibly indented): allowed past the width."""
    return bool(re.fullmatch(r"\s*https?://\S+", line))


def test_script_and_style_never_reach_the_text(tmp_path: Path) -> None:
    """Reproduced: "Hello alert(1) world." leaked into the text part."""
    settings = settings_for(tmp_path)
    post = parse_post(POST.encode(), "posts/x.md", settings)
    assert "Hello world. Styled." in post.body_text
    for leaked in ("alert(1)", "never shown", "color: red", "display: none", "document.write"):
        assert leaked not in post.body_text


def test_links_are_numbered_and_listed_after_the_article(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    post = parse_post(POST.encode(), "posts/x.md", settings)
    text = post.body_text
    assert "(http" not in text and "(/" not in text
    assert "Read the fitting guide [1] and the long study [2], or call us [3] or write to" in " ".join(text.split())
    assert "jamesonprosthetics@gmail.com. The fitting guide [1] again" in " ".join(text.split())
    assert "Raw HTML with a link [4] in it." in text
    listing = text.split(LINKS_HEADING + "\n", 1)[1].splitlines()
    assert listing == [
        "[1] https://jamesonprosthetics.com/guides/fitting",
        "[2]",
        LONG_URL,  # too long for "[2] " before it: on a line of its own, whole
        "[3] +18439361642",
        "[4] https://example.org/raw",
    ]


def test_every_line_of_every_text_part_fits_78_columns_or_is_one_address(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    env = make_environment(settings)
    posts, errors = load_posts(settings)
    assert not errors
    letters = [render_post_newsletter(p, settings, env) for p in posts] + [render_digest(posts, settings, env, now=NOW)]
    assert WIDTH == 78
    checked = 0
    for newsletter in letters:
        # As a subscriber gets it: the placeholder replaced by a token of the longest kind.
        text = newsletter.text.replace(urls.TOKEN_PLACEHOLDER, "v2.ffffff." + "x" * 52)
        for line in text.splitlines():
            checked += 1
            assert len(line) <= WIDTH or is_address_line(line), f"{newsletter.key}: {line!r}"
        for url in re.findall(r"https?://\S+", text):
            # Every address stands alone on its line (after "[n] " at most): whole, and clickable.
            assert any(
                line.strip() in (url, f"{u}") or line.endswith(" " + url) for line in text.splitlines() for u in [url]
            )
        assert "(http" not in text
    assert checked > 300
    pictured = next(n for n in letters if n.key == "text")
    assert "View in your browser:\nhttps://jamesonprosthetics.com/archive/text" in pictured.text
    assert f"\n   {LONG_URL}\n" in pictured.text  # the source's address, under its title

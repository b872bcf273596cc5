"""Every validation error a staff member can make, reported in one line with its place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.content.posts import check_unique_slugs, parse_post
from pipeline.errors import PipelineError
from tests.conftest import GOOD_POST


def error_for(settings: Settings, text: str | bytes, name: str = "posts/x.md") -> PipelineError:
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    with pytest.raises(PipelineError) as info:
        parse_post(raw, name, settings)
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_good_post_parses(settings: Settings) -> None:
    post = parse_post(GOOD_POST.encode(), "posts/2026-11-03-a-good-post.md", settings)
    assert post.slug == "a-good-post"
    assert post.date == datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
    assert post.tags == ("research",)
    assert 'href="https://jamesonprosthetics.com/contact"' in post.body_html
    assert post.summary == "Body text with a link."
    assert post.channels == {"feed", "email", "social"}


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("", 1, "front matter", "empty"),
        ("title: x\n", 1, "front matter", "missing front matter"),
        ("---\ntitle: x\ndate: 2026-01-01\n", 1, "front matter", "not closed"),
        ("---\ntitle: [unclosed\ndate: 2026-01-01\n---\nbody\n", 3, "front matter", "invalid YAML"),
        ("---\n- a\n- b\n---\nbody\n", 2, "front matter", "not a mapping"),
        ("---\ndate: 2026-01-01\n---\nbody\n", 2, "title", "required"),
        ("---\ntitle: x\n---\nbody\n", 2, "date", "required"),
        ("---\ntitle: x\ndate: next tuesday\n---\nbody\n", 3, "date", "not an ISO 8601 date"),
        ("---\ntitle: x\ndate: 2026-03-08 02:30\n---\nbody\n", 3, "date", "does not exist"),
        ("---\ntitle: x\ndate: 2026-11-01 01:30\n---\nbody\n", 3, "date", "happens twice"),
        ("---\ntitle: x\ndate: 2026-01-01\ntitel: y\n---\nbody\n", 4, "titel", "did you mean 'title'"),
        ("---\ntitle: x\ndate: 2026-01-01\nimage: /a.jpg\n---\nbody\n", 4, "image_alt", "alt text"),
        ("---\ntitle: x\ndate: 2026-01-01\n---\ntext\n\n![](/pic.jpg)\n", 7, "body", "no alt text"),
        ("---\ntitle: x\ndate: 2026-01-01\nslug: Not A Slug\n---\nbody\n", 4, "slug", "not a valid slug"),
        ("---\ntitle: x\ndate: 2026-01-01\nchannels: {fax: false}\n---\nbody\n", 4, "channels", "unknown channel"),
        (
            "---\ntitle: x\ndate: 2026-01-01\nsocial: {mastadon: hi}\n---\nbody\n",
            4,
            "social",
            "did you mean 'mastodon'",
        ),
    ],
)
def test_each_mistake_names_file_line_and_field(
    settings: Settings, text: str, line: int, field: str, words: str
) -> None:
    error = error_for(settings, text)
    assert error.path == "posts/x.md"
    assert error.line == line
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith(f"posts/x.md:{line}: {field}: ")


def test_dst_messages_say_how_to_fix(settings: Settings) -> None:
    ambiguous = error_for(settings, "---\ntitle: x\ndate: 2026-11-01 01:30\n---\nbody\n")
    assert "2026-11-01T01:30:00-04:00 for the first" in str(ambiguous)
    assert "2026-11-01T01:30:00-05:00 for the second" in str(ambiguous)
    explicit = parse_post(b"---\ntitle: x\ndate: 2026-11-01T01:30-05:00\n---\nbody\n", "posts/x.md", settings)
    assert explicit.date == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_not_utf8_names_the_line(settings: Settings) -> None:
    error = error_for(settings, b"---\ntitle: caf\xe9\ndate: 2026-01-01\n---\nbody\n")
    assert error.line == 2
    assert "not UTF-8" in str(error)


def test_title_tags_and_subject_are_literal_one_line_text(settings: Settings) -> None:
    text = '---\ntitle: "<script>alert(1)</script>Pain & <b>relief</b>"\ndate: 2026-01-01\ntags: [\'<i>x</i>\']\nsubject: "Hi\\r\\nBcc: evil@example.com"\n---\nbody\n'
    post = parse_post(text.encode(), "posts/x.md", settings)
    assert post.title == "<script>alert(1)</script>Pain & <b>relief</b>"
    assert post.tags == ("<i>x</i>",)
    assert post.subject == "Hi Bcc: evil@example.com"
    assert "\n" not in post.subject and "\r" not in post.subject


def test_raw_html_in_body_is_sanitised(settings: Settings) -> None:
    text = '---\ntitle: x\ndate: 2026-01-01\nsummary: "<img src=x onerror=alert(1)> sum"\n---\n<script>alert(1)</script>\n<p onclick="evil()">Hi <a href="javascript:alert(1)">js</a> <a href="/rel">rel</a></p>\n'
    post = parse_post(text.encode(), "posts/x.md", settings)
    for bad in ("<script", "onclick", "javascript:", "onerror"):
        assert bad not in post.body_html
        assert bad not in post.summary_html
    assert 'href="https://jamesonprosthetics.com/rel"' in post.body_html


def test_sources_accept_mappings_and_bare_urls(settings: Settings) -> None:
    text = "---\ntitle: x\ndate: 2026-01-01\nsources:\n  - title: A study\n    url: https://example.org/a\n  - https://example.org/b\n---\nbody\n"
    post = parse_post(text.encode(), "posts/x.md", settings)
    assert [(s.title, s.url) for s in post.sources] == [
        ("A study", "https://example.org/a"),
        ("https://example.org/b", "https://example.org/b"),
    ]
    error = error_for(settings, "---\ntitle: x\ndate: 2026-01-01\nsources:\n  - ftp://example.org/a\n---\nbody\n")
    assert error.field == "sources[1]" and error.line == 4


def test_channels_and_draft(settings: Settings) -> None:
    text = "---\ntitle: x\ndate: 2026-01-01\ndraft: true\nchannels: {email: false}\n---\nbody\n"
    post = parse_post(text.encode(), "posts/x.md", settings)
    assert post.draft and post.channels == {"feed", "social"}
    assert not post.is_released(datetime(2030, 1, 1, tzinfo=UTC))


def test_two_posts_with_one_slug(settings: Settings, tmp_path: Path) -> None:
    a = parse_post(GOOD_POST.encode(), "posts/a.md", settings)
    b = parse_post(
        GOOD_POST.replace("title: A good post", "title: A good post\nslug: a").encode(), "posts/b.md", settings
    )
    errors = check_unique_slugs([b, a])
    assert [str(e) for e in errors] == [
        "posts/b.md:3: slug: slug 'a' is already used by posts/a.md (give one of them another 'slug:' or file name)"
    ]

"""Every validation error a staff member can make, reported in one line with its place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from msgspec.structs import replace

from pipeline.config import Settings
from pipeline.content.posts import check_unique_slugs, parse_post
from pipeline.errors import PipelineError, PipelineErrors
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


def test_subject_is_literal_one_line_text(settings: Settings) -> None:
    text = '---\ntitle: "Pain & relief"\ndate: 2026-01-01\nsubject: "Hi <b>\\r\\nBcc: evil@example.com"\n---\nbody\n'
    post = parse_post(text.encode(), "posts/x.md", settings)
    assert post.title == "Pain & relief" and post.warnings == ()
    assert post.subject == "Hi <b> Bcc: evil@example.com"
    assert "\n" not in post.subject and "\r" not in post.subject


def test_markup_in_a_title_or_tag_is_stripped_with_a_warning(settings: Settings) -> None:
    """Titles and tags are plain text: tags removed, their text kept, entities decoded,
    and one warning line per field naming the file, line and field."""
    text = (
        "---\n"
        'title: "<script>alert(1)</script>Pain &amp; <b>relief</b>"\n'
        "date: 2026-01-01\n"
        "tags:\n"
        "  - research\n"
        "  - '<i>phantom</i> pain'\n"
        "  - 'C++ & x < y'\n"
        "  - '<br>'\n"
        "---\n"
        "body\n"
    )
    post = parse_post(text.encode(), "posts/x.md", settings)
    assert post.title == "alert(1)Pain & relief"
    assert post.subject == "alert(1)Pain & relief"
    assert post.tags == ("research", "phantom pain", "C++ & x < y")  # "<br>" leaves nothing: dropped
    assert [str(w) for w in post.warnings] == [
        "posts/x.md:2: title: HTML markup removed from the title: "
        "'<script>alert(1)</script>Pain &amp; <b>relief</b>' is now 'alert(1)Pain & relief' "
        "(write the title as plain text, without tags)",
        "posts/x.md:6: tags[2]: HTML markup removed from the tag: '<i>phantom</i> pain' is now 'phantom pain' "
        "(write the tag as plain text, without tags)",
        "posts/x.md:8: tags[4]: HTML markup removed from the tag: '<br>' is now nothing "
        "(write the tag as plain text, without tags)",
    ]
    plain = parse_post(b"---\ntitle: 'Pain & relief: x < y'\ndate: 2026-01-01\n---\nbody\n", "posts/x.md", settings)
    assert plain.title == "Pain & relief: x < y" and plain.warnings == ()
    error = error_for(settings, "---\ntitle: '<b></b>'\ndate: 2026-01-01\n---\nbody\n")
    assert (error.line, error.field) == (2, "title") and "empty after removing markup" in str(error)


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
    assert error.field == "sources[1]" and error.line == 5  # the item's line, not the sources: key's


SOURCE_MISTAKES = [
    (
        "pubmed.ncbi.nlm.nih.gov/22236475/",
        "'pubmed.ncbi.nlm.nih.gov/22236475/' has no https:// in front (it would link to a page on our own site) "
        "(write https://pubmed.ncbi.nlm.nih.gov/22236475/)",
    ),
    ("www.mayoclinic.org", "(write https://www.mayoclinic.org)"),
    ("not a url", "'not a url' is not a web address (write the full address, starting with https://)"),
    ("/contact", "'/contact' is a path, not a full address (write the full address, starting with https://)"),
    ("//example.org/a", "(write https://example.org/a)"),
    ("https:/example.org/a", "'https:/example.org/a' has no host name (write https://example.org/a)"),
    ("https://", "has no host name"),
    ("javascript:alert(1)", "is not an http(s) address"),
    ("http://[::1", "is not a web address"),
]


@pytest.mark.parametrize(("url", "words"), SOURCE_MISTAKES)
def test_a_source_must_be_a_full_web_address(settings: Settings, url: str, words: str) -> None:
    text = f"---\ntitle: x\ndate: 2026-01-01\nsources:\n  - https://example.org/fine\n  - title: A study\n    url: '{url}'\n---\nbody\n"
    error = error_for(settings, text)
    assert (error.line, error.field) == (7, "sources[2].url"), str(error)  # the url: line of that item
    assert str(error).startswith("posts/x.md:7: sources[2].url: ")
    assert words in str(error)
    bare = error_for(settings, f"---\ntitle: x\ndate: 2026-01-01\nsources: ['{url}']\n---\nbody\n")
    assert (bare.line, bare.field) == (4, "sources[1]") and words in str(bare)


@pytest.mark.parametrize(
    ("image", "result"),
    [
        ("/images/x.jpg", "https://jamesonprosthetics.com/images/x.jpg"),  # a picture on the clinic's own site
        ("https://cdn.example.org/x.jpg", "https://cdn.example.org/x.jpg"),
        ("images.example.org/x.jpg", "(write https://images.example.org/x.jpg)"),
        ("images/x.jpg", "(write /images/x.jpg for a picture on this site)"),
        ("/images/my picture.jpg", "has a space in it"),
        ("ftp://example.org/x.jpg", "is not an http(s) address"),
        ("https://", "has no host name"),
    ],
)
def test_an_image_is_a_full_address_or_a_path_on_the_site(settings: Settings, image: str, result: str) -> None:
    text = f"---\ntitle: x\ndate: 2026-01-01\nimage: '{image}'\nimage_alt: A socket\n---\nbody\n"
    if result.startswith("https://"):
        assert parse_post(text.encode(), "posts/x.md", settings).image == result
    else:
        error = error_for(settings, text)
        assert (error.line, error.field) == (4, "image") and result in str(error)


def test_every_problem_of_a_file_is_reported_at_once(settings: Settings) -> None:
    text = (
        "---\n"  # 1
        "title: x\n"  # 2
        "date: next tuesday\n"  # 3
        "titel: y\n"  # 4
        "slug: Not A Slug\n"  # 5
        "sources:\n"  # 6
        "  - https://example.org/fine\n"  # 7
        "  - pubmed.ncbi.nlm.nih.gov/22236475/\n"  # 8
        "  - not a url\n"  # 9
        "draft: maybe\n"  # 10
        "channels: {fax: false}\n"  # 11
        "social: {mastadon: hi}\n"  # 12
        "---\n"  # 13
        "text\n"  # 14
        "\n"  # 15
        "![](/pic.jpg)\n"  # 16
    )
    with pytest.raises(PipelineErrors) as info:
        parse_post(text.encode(), "posts/x.md", settings)
    lines = [str(e) for e in info.value.errors]
    assert [(e.line, e.field) for e in info.value.errors] == [
        (3, "date"),
        (4, "titel"),
        (5, "slug"),
        (8, "sources[2]"),
        (9, "sources[3]"),
        (10, "draft"),
        (11, "channels"),
        (12, "social"),
        (16, "body"),
    ]
    for line in lines:
        assert "\n" not in line and line.startswith("posts/x.md:")
    assert "write https://pubmed.ncbi.nlm.nih.gov/22236475/" in lines[3]
    assert info.value.path == "posts/x.md"  # one invalid post, known by its file


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


CONTACT_POST = "---\ntitle: x\ndate: 2026-01-01\nsummary: '[Call or write](contact:) first.'\n---\nPlease [book a socket check](contact:).\n"


def test_a_contact_link_leads_to_the_clinic_without_a_contact_page(settings: Settings) -> None:
    """No clinic.contact_url: [text](contact:) is an e-mail to the clinic, never a page we do not serve."""
    assert settings.clinic.contact_url is None
    post = parse_post(CONTACT_POST.encode(), "posts/x.md", settings)
    assert '<a href="mailto:jamesonprosthetics@gmail.com" rel="noopener">book a socket check</a>' in post.body_html
    assert "book a socket check [1]" in post.body_text and "[1] jamesonprosthetics@gmail.com" in post.body_text
    assert 'href="mailto:jamesonprosthetics@gmail.com"' in post.summary_html


def test_a_contact_link_follows_clinic_contact_url(settings: Settings) -> None:
    clinic = replace(settings.clinic, contact_url="https://jamesonprosthetics.com/book")
    booked = replace(settings, clinic=clinic)
    post = parse_post(CONTACT_POST.encode(), "posts/x.md", booked)
    assert '<a href="https://jamesonprosthetics.com/book" rel="noopener">book a socket check</a>' in post.body_html
    assert "book a socket check [1]" in post.body_text and "[1] https://jamesonprosthetics.com/book" in post.body_text
    # Other unknown schemes stay refused by the sanitiser, as before.
    other = parse_post(b"---\ntitle: x\ndate: 2026-01-01\n---\n[x](bogus:y)\n", "posts/x.md", booked)
    assert "bogus" not in other.body_html

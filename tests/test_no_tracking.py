"""No tracking by construction: a newsletter loads nothing but the post's own images
(no open pixel, no remote font or stylesheet, no script), every link leads straight to
where it says (no click redirect), and UTM tags appear only with [utm], only on the
clinic's own links. Checked on every newsletter the test posts make, and a
post that has a picture in its front matter and in its text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from pipeline import urls
from pipeline.channels.newsletter import Newsletter, render_digest, render_post_newsletter
from pipeline.channels.social.snippets import social_link
from pipeline.channels.templating import make_environment
from pipeline.config import Settings, load_settings
from pipeline.content.posts import Post
from pipeline.site.build import load_posts
from tests.conftest import ROOT, make_project, write_post

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
PICTURED = """---
title: Sockets in pictures
date: 2026-11-03 09:00
image: /images/socket.jpg
image_alt: A socket on a bench
sources:
  - title: A socket study
    url: https://example.org/study
---
Our [fitting room](/visit) and a [study](https://example.org/other).

![A liner drying](https://cdn.example.org/liner.jpg)

<p>Raw <a href="https://example.net/page">HTML link</a> too.</p>
"""
# What loads something by itself when a mail program opens the message.
_LOADING = {("img", "src"), ("img", "srcset"), ("source", "src"), ("source", "srcset"), ("video", "src"),
            ("video", "poster"), ("audio", "src"), ("iframe", "src"), ("embed", "src"), ("object", "data"),
            ("script", "src"), ("link", "href"), ("input", "src"), ("table", "background"), ("td", "background"),
            ("body", "background"), ("image", "href")}  # fmt: skip


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, str]] = []
        self.named: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self._in_style = tag == "style"
        rel = dict(attrs).get("rel") or ""
        for name, value in attrs:
            if value is None:
                continue
            # A web page's canonical address and its feeds are named, never fetched.
            if tag == "link" and rel in ("canonical", "alternate"):
                self.named.append(value)
                continue
            if (tag, name) in _LOADING:
                self.loads.append((tag, value))
            if tag == "a" and name == "href":
                self.links.append(value)
            if name == "style":
                self.styles.append(value)

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def collect(html: str) -> Collector:
    found = Collector()
    found.feed(html)
    return found


def without_utm(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def project_settings(tmp_path: Path, *, utm: bool) -> Settings:
    project = make_project(tmp_path, posts=ROOT / "tests" / "golden" / "basic" / "posts")
    write_post(project / "posts", "2026-11-03-pictured.md", PICTURED)
    config = project / "pipeline.toml"
    if not utm:
        config.write_text(re.sub(r"(?ms)^\[utm\]\n.*?(?=^\[)", "", config.read_text()))
    return load_settings(config)


def every_newsletter(settings: Settings) -> list[tuple[Newsletter, list[Post]]]:
    env = make_environment(settings)
    posts, errors = load_posts(settings)
    assert posts and not errors
    letters = [(render_post_newsletter(p, settings, env), [p]) for p in posts]
    letters.append((render_digest(posts, settings, env, now=NOW), posts))
    return letters


def allowed_links(settings: Settings, newsletter: Newsletter, posts: list[Post]) -> set[str]:
    """Where a newsletter's links may lead: what the posts' authors linked, the posts
    themselves, and the clinic's own pages and contacts."""
    allowed = {newsletter.web_url, urls.unsubscribe_url(settings), urls.subscribe_url(settings)}
    allowed |= {f"mailto:{settings.clinic.email}", settings.clinic.contact_link}
    allowed |= {"tel:+1" + settings.clinic.phone.replace(" ", "")}
    for post in posts:
        allowed.add(urls.post_url(settings, post.slug))
        allowed |= {s.url for s in post.sources}
        allowed |= set(collect(post.body_html).links)
    return allowed


@pytest.mark.parametrize("utm", [True, False], ids=["with-utm", "without-utm"])
def test_no_newsletter_loads_anything_but_the_posts_own_images_or_redirects_a_click(tmp_path: Path, utm: bool) -> None:
    settings = project_settings(tmp_path, utm=utm)
    site = urlsplit(settings.clinic.base_url).netloc
    letters = every_newsletter(settings)
    assert len(letters) >= 7
    pictured = 0
    for newsletter, posts in letters:
        for html, version in ((newsletter.html, "e-mail"), (newsletter.web_html, "web page")):
            found = collect(html)
            where = f"{newsletter.key} ({version})"
            own_images = {p.image for p in posts if p.image} | {
                src for p in posts for tag, src in collect(p.body_html).loads if tag == "img"
            }
            for tag, url in found.loads:
                assert tag == "img" and url in own_images, f"{where} loads {url!r} through <{tag}>"
            pictured += sum(1 for tag, _url in found.loads if tag == "img")
            assert not found.tags & {"script", "iframe", "object", "embed", "form"}, where
            if version == "e-mail":
                assert "link" not in found.tags and not found.named, where
            for style in found.styles:
                assert "url(" not in style and "@import" not in style and "@font-face" not in style, where
            allowed = allowed_links(settings, newsletter, posts)
            for link in found.links:
                plain = without_utm(link)
                # The web page's own navigation: within the page, or a page of the site by its path.
                own = version == "web page" and (link.startswith(("#", "/")) or link == settings.clinic.base_url + "/")
                assert own or plain in allowed or plain.startswith(urls.unsubscribe_url(settings, "")), (
                    f"{where}: {link}"
                )
                tagged = "utm_" in link
                if version == "web page" or not utm or urlsplit(link).netloc != site or "/unsubscribe/" in link:
                    assert not tagged, f"{where}: {link} carries UTM tags"
                else:
                    assert link.endswith(f"utm_source=newsletter&utm_medium=email&utm_campaign={newsletter.key}"), link
        # The plain-text part's addresses too.
        for url in re.findall(r"https?://\S+", newsletter.text):
            assert without_utm(url) in allowed_links(settings, newsletter, posts) or "/unsubscribe/" in url, url
            assert ("utm_" in url) == (utm and urlsplit(url).netloc == site and "/unsubscribe/" not in url), url
    assert pictured >= 4  # the pictured post's two images, in the e-mail and its web page

    # Social snippets follow the same switch.
    post = next(p for _n, posts in letters for p in posts if p.slug == "pictured")
    assert ("utm_" in social_link(post, settings, "mastodon")) == utm


def test_the_check_itself_catches_an_open_pixel_a_font_and_a_click_redirect(tmp_path: Path) -> None:
    settings = project_settings(tmp_path, utm=False)
    base = settings.templates_dir / "newsletter" / "base.mjml"
    base.write_text(
        base.read_text().replace(
            '{{ slot("subscription") }}',
            '{{ slot("subscription") }}<img src="https://pixel.example/open.gif?id=1" alt="Open" width="1" height="1">'
            '<a href="https://click.example/r?to=home">Home</a>',
        )
    )
    newsletter, posts = every_newsletter(settings)[0]
    found = collect(newsletter.html)
    assert ("img", "https://pixel.example/open.gif?id=1") in found.loads
    assert "https://click.example/r?to=home" not in allowed_links(settings, newsletter, posts)

"""The newsletter as a mail client sees it: parsed back with Python's email package."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from pipeline.channels.newsletter import render_digest, render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.config import Settings, load_settings
from pipeline.content.posts import parse_post
from pipeline.errors import PipelineError
from pipeline.mail.message import MessageTemplate
from pipeline.site.build import build
from pipeline.urls import MANAGE_PLACEHOLDER, TOKEN_PLACEHOLDER
from tests.conftest import write_post

NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
POST = """---
title: "Sockets & <3 comfort: when x < y"
date: 2026-11-03 09:00
sources:
  - title: A socket study
    url: https://example.org/study
---
Hello **readers**. Ünïcode — “quotes” 🦿.

![A socket on a bench](/images/socket.jpg)
"""


def parse_eml(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_eml_preview_has_every_required_part_and_header(settings: Settings) -> None:
    """The message as a subscriber gets it (what `pipeline preview` writes as .eml)."""
    path = write_post(settings.posts_dir, "2026-11-03-sockets.md", POST)
    post = parse_post(path.read_bytes(), str(path), settings)
    raw = MessageTemplate(render_post_newsletter(post, settings, make_environment(settings)), settings).preview()
    message = parse_eml(raw)
    assert message["Subject"] == "Sockets & <3 comfort: when x < y"  # plain text: no markup to strip
    assert message["From"] == "Jameson Prosthetics <news@jamesonprosthetics.com>"
    assert message["List-Unsubscribe"] == f"<https://jamesonprosthetics.com/unsubscribe/{TOKEN_PLACEHOLDER}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Jameson Prosthetics <articles.jamesonprosthetics.com>"
    assert message["Message-ID"] and message["Date"] == "Tue, 03 Nov 2026 09:00:00 -0500"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    text_content, html_content = text.get_content(), html.get_content()
    for content in (text_content, html_content):
        assert "1407 Ashley River Road, Charleston, SC 29407" in content
        assert f"/unsubscribe/{TOKEN_PLACEHOLDER}" in content
        assert f"https://jamesonprosthetics.com/manage/{MANAGE_PLACEHOLDER}" in content  # beside unsubscribe
        assert "https://jamesonprosthetics.com/archive/sockets" in content  # view in browser
        assert "https://example.org/study" in content  # sources
        assert "not medical advice" in content
        assert "Ünïcode — “quotes” 🦿" in content
    assert "Sockets &amp; &lt;3 comfort: when x &lt; y" in html_content
    assert "<3 comfort" not in html_content
    assert 'alt="A socket on a bench"' in html_content
    assert "Sockets & <3 comfort: when x < y" in text_content  # plain text stays literal


def test_title_with_newlines_never_becomes_a_header(settings: Settings) -> None:
    post = parse_post(
        b'---\ntitle: "Hello\\r\\nBcc: victim@example.com\\r\\n\\r\\nbody"\ndate: 2026-11-03 09:00\n---\nBody.\n',
        "posts/x.md",
        settings,
    )
    newsletter = render_post_newsletter(post, settings, make_environment(settings))
    raw = MessageTemplate(newsletter, settings).personalise(
        to_address="a@example.com",
        to_name="Ann\r\nBcc: x@example.com",
        token="tok.en",
        manage_token="man.age",
        message_id="<m@x>",
        date=NOW,
    )
    message = parse_eml(raw)
    assert message["Bcc"] is None
    assert message["Subject"] == "Hello Bcc: victim@example.com body"
    assert message["To"] == '"Ann Bcc: x@example.com" <a@example.com>'
    assert not message.defects


def test_personalise_replaces_every_placeholder(settings: Settings) -> None:
    write_post(settings.posts_dir, "2026-11-03-sockets.md", POST)
    post = parse_post((settings.posts_dir / "2026-11-03-sockets.md").read_bytes(), "posts/x.md", settings)
    template = MessageTemplate(render_post_newsletter(post, settings, make_environment(settings)), settings)
    raw = template.personalise(
        to_address="zoë@example.com",
        to_name="Zoë Ünal",
        token="AbC123-_.xyz",
        manage_token="MaN456-_.uvw",
        message_id="<c1.s2@x>",
        date=NOW,
    )
    assert TOKEN_PLACEHOLDER.encode() not in raw and MANAGE_PLACEHOLDER.encode() not in raw
    message = parse_eml(raw)
    assert message["List-Unsubscribe"] == "<https://jamesonprosthetics.com/unsubscribe/AbC123-_.xyz>"
    assert message["To"] == "Zoë Ünal <zoë@example.com>"
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and "/unsubscribe/AbC123-_.xyz" in html.get_content()
    # Each token in its own link, in both parts: the manage link never carries the unsubscribe token.
    assert text is not None and "/unsubscribe/AbC123-_.xyz" in text.get_content()
    for part in (html.get_content(), text.get_content()):
        assert "https://jamesonprosthetics.com/manage/MaN456-_.uvw" in part
        assert "/manage/AbC123" not in part and "/unsubscribe/MaN456" not in part
    with pytest.raises(ValueError, match="manage_token"):
        template.personalise(to_address="a@example.com", to_name=None, token="t", message_id="<m@x>", date=NOW)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_a_campaign_frozen_before_manage_links_still_personalises(settings: Settings) -> None:
    """A campaign made before the manage link existed is resumed as it was frozen."""
    write_post(settings.posts_dir, "2026-11-03-sockets.md", POST)
    post = parse_post((settings.posts_dir / "2026-11-03-sockets.md").read_bytes(), "posts/x.md", settings)
    newsletter = render_post_newsletter(post, settings, make_environment(settings))
    old = dataclasses.replace(
        newsletter,
        html=newsletter.html.replace(f"/manage/{MANAGE_PLACEHOLDER}", "/subscribe"),
        text=newsletter.text.replace(f"/manage/{MANAGE_PLACEHOLDER}", "/subscribe"),
    )
    template = MessageTemplate(old, settings)
    assert not template.has_manage_link
    raw = template.personalise(to_address="a@example.com", to_name=None, token="tok.en", message_id="<m@x>", date=NOW)
    assert b"/unsubscribe/tok.en" in raw and MANAGE_PLACEHOLDER.encode() not in raw


def test_html_over_the_gmail_clip_limit_fails_the_post(settings: Settings) -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 200 for i in range(120))
    write_post(settings.posts_dir, "2026-11-03-long.md", f"---\ntitle: Long\ndate: 2026-11-03 09:00\n---\n{body}\n")
    write_post(settings.posts_dir, "2026-11-04-short.md", "---\ntitle: Short\ndate: 2026-11-04 09:00\n---\nShort.\n")
    result = build(settings, NOW)
    assert [str(e).split(": ")[0:2] for e in result.errors] == [
        [f"{settings.posts_dir.name}/2026-11-03-long.md:5", "body"]
    ] or any("Gmail clips" in str(e) for e in result.errors)
    assert len(result.errors) == 1 and "KB, over the 102 KB Gmail clips at" in str(result.errors[0])
    assert (settings.out_dir / "newsletter/short.html").exists()
    assert not (settings.out_dir / "newsletter/long.html").exists()


def test_digest_lists_posts_newest_first(settings: Settings) -> None:
    env = make_environment(settings)
    posts = [
        parse_post(
            f"---\ntitle: Post {n}\ndate: 2026-11-0{n} 09:00\n---\nBody {n}.\n".encode(), f"posts/p{n}.md", settings
        )
        for n in (1, 2, 3)
    ]
    digest = render_digest(posts, settings, env, now=NOW)
    assert digest.key == "digest-2026-11-27"
    assert digest.text.index("Post 3") < digest.text.index("Post 2") < digest.text.index("Post 1")
    assert "3 articles" in digest.subject
    assert TOKEN_PLACEHOLDER in digest.html and "subscribe" in digest.web_html
    assert TOKEN_PLACEHOLDER not in digest.web_html
    with pytest.raises(PipelineError, match="nothing new"):
        render_digest([], settings, env, now=NOW)


# --- the e-mail and its web page: one compile, slots filled in after ------------------------


def test_email_and_web_page_differ_only_in_their_slots(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.channels.newsletter as module

    # Without [utm]: with it, the e-mail's links to the site also carry its tags.
    settings = replace(settings, utm=replace(settings.utm, enabled=False))
    env = make_environment(settings)
    post = parse_post(POST.encode(), "posts/slots.md", settings)
    # Every slot as it was rendered, per version.
    slots: dict[tuple[str, bool], str] = {}
    real = module.render_template

    def spy(env: Any, name: str, context: Any) -> str:
        rendered = real(env, name, context)
        if name.startswith("newsletter/slots/"):
            slots[(name.rsplit("/", 1)[1].removesuffix(".html"), bool(context["web"]))] = rendered.strip("\n")
        return rendered

    monkeypatch.setattr(module, "render_template", spy)
    newsletter = render_post_newsletter(post, settings, env)
    assert "View in browser" in newsletter.html and "View in browser" not in newsletter.web_html
    assert f"/unsubscribe/{TOKEN_PLACEHOLDER}" in newsletter.html
    assert "/unsubscribe/" not in newsletter.web_html and "/subscribe" in newsletter.web_html
    assert "__SLOT_" not in newsletter.html and "__SLOT_" not in newsletter.web_html
    names = {name for name, _web in slots}
    assert {"view_in_browser", "subscription", "web_head", "site_nav", "preheader"} <= names

    # Put each version's slot texts back to their markers: what is left is one and the same page.
    pages = []
    for page, web in ((newsletter.html, False), (newsletter.web_html, True)):
        for name in sorted(names, key=lambda n: -len(slots[(n, web)])):
            text = slots[(name, web)]
            if text:  # a slot empty in one version: nothing to put back
                assert page.count(text) == 1, (name, web)
                page = page.replace(text, f"__SLOT_{name}__")
        pages.append(page)
    empty = {name for (name, _web), text in slots.items() if not text}
    email_page, web_page = (re.sub("|".join(f"__SLOT_{n}__" for n in empty) or "^$", "", p) for p in pages)
    assert email_page == web_page


def test_a_slot_without_its_template_is_a_clear_error(settings: Settings) -> None:
    base = settings.templates_dir / "newsletter" / "base.mjml"
    base.write_text(base.read_text().replace('{{ slot("subscription") }}', '{{ slot("farewell") }}'))
    post = parse_post(POST.encode(), "posts/slots.md", settings)
    with pytest.raises(PipelineError) as caught:
        render_post_newsletter(post, settings, make_environment(settings))
    assert "newsletter/slots/farewell.html not found" in str(caught.value)


def test_web_is_not_known_to_the_mjml_template(settings: Settings) -> None:
    """The versions differ only through slots: a template that asks for `web` says where."""
    base = settings.templates_dir / "newsletter" / "base.mjml"
    base.write_text(base.read_text().replace("<mj-body", "{% if web %}{% endif %}<mj-body"))
    post = parse_post(POST.encode(), "posts/slots.md", settings)
    with pytest.raises(PipelineError) as caught:
        render_post_newsletter(post, settings, make_environment(settings))
    assert "newsletter/base.mjml" in str(caught.value) and "'web' is undefined" in str(caught.value)


def test_footer_links_to_clinic_contact_url_only_when_it_is_set(settings: Settings, project: Path) -> None:
    write_post(settings.posts_dir, "2026-11-03-sockets.md", POST)
    assert build(settings, NOW).errors == []
    assert "Contact us" not in (settings.out_dir / "newsletter/sockets.html").read_text()
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text().replace(
            'phone = "843 936 1642"\n', 'phone = "843 936 1642"\ncontact_url = "https://jamesonprosthetics.com/book"\n'
        )
    )
    booked = load_settings(config)
    assert build(booked, NOW).errors == []
    html = (booked.out_dir / "newsletter/sockets.html").read_text()
    text = (booked.out_dir / "newsletter/sockets.txt").read_text()
    tagged = "https://jamesonprosthetics.com/book?utm_source=newsletter&utm_medium=email&utm_campaign=sockets"
    assert (
        f'<a href="{tagged.replace("&", "&amp;")}" style="text-decoration: underline;color: #0b5c8a">Contact us</a>'
        in html
    )
    assert f"Contact us:\n{tagged}" in text

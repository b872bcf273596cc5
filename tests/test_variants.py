"""One render and one MJML compile for both versions of a newsletter must give exactly
what rendering and compiling each version on its own gives, or not be used at all."""

from __future__ import annotations

import jinja2
import pytest
from mjml import mjml2html

from pipeline.channels.newsletter import DigestItem, _links, render_post_newsletter
from pipeline.channels.templating import make_environment, render_template
from pipeline.channels.variants import VariantRenderer
from pipeline.config import Settings
from pipeline.content.posts import parse_post
from pipeline.urls import post_url
from tests.conftest import ROOT


def compile_source(source: str) -> str:
    return str(mjml2html(source, disable_comments=True))


def each_on_its_own(env: jinja2.Environment, name: str, context: dict[str, object]) -> tuple[str, str]:
    return (
        compile_source(render_template(env, name, {**context, "web": False})),
        compile_source(render_template(env, name, {**context, "web": True})),
    )


TRICKY_POST = """---
title: "Pain & <script>alert(1)</script> relief"
date: 2026-11-03 09:00
image: /img/socket.jpg
image_alt: A socket on a bench
tags: [pain, research]
sources:
  - title: A study
    url: https://example.org/study
---
Hello **readers** — “quotes” and a [link](/contact).

<div>raw <b>html</b></div>
"""


def test_shipped_templates_give_the_same_bytes_both_ways(settings: Settings) -> None:
    env = make_environment(settings)
    renderer = VariantRenderer(env)
    posts = [parse_post(path.read_bytes(), str(path), settings) for path in sorted((ROOT / "posts").glob("*.md"))]
    posts.append(parse_post(TRICKY_POST.encode(), "posts/tricky.md", settings))
    for post in posts:
        url = post_url(settings, post.slug)
        context: dict[str, object] = {
            "post": post, "subject": post.subject, "preheader": post.preheader, "post_url": url,
            **_links(settings, url),
        }  # fmt: skip
        both = renderer.render("newsletter/post.mjml", context, compile_source)
        assert both is not None, post.path
        assert both == each_on_its_own(env, "newsletter/post.mjml", context), post.path
        assert "View in browser" in both[0] and "View in browser" not in both[1]
    digest: dict[str, object] = {
        "items": [DigestItem(post=p, url=post_url(settings, p.slug)) for p in posts],
        "subject": "Digest",
        "preheader": "New articles",
        **_links(settings, "https://jamesonprosthetics.com/archive/digest-2026-11-27"),
    }
    both = renderer.render("newsletter/digest.mjml", digest, compile_source)
    assert both is not None
    assert both == each_on_its_own(env, "newsletter/digest.mjml", digest)


PAGE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>{}</mj-text>
</mj-column></mj-section></mj-body></mjml>"""


def renderer_for(template: str) -> tuple[VariantRenderer, jinja2.Environment]:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"page.mjml": template}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return VariantRenderer(env), env


@pytest.mark.parametrize(
    "body",
    [
        "{% if web %}Subscribe <a href='/s'>here</a>{% else %}Unsubscribe <a href='/u'>here</a>{% endif %}",
        "Read{% if not web %} · <a href='/v'>View in browser</a>{% endif %}.",
        '<a href="{% if web %}/s{% else %}/u{% endif %}">link</a>',
        "{% for n in [1, 2] %}{{ n }}{% if web %}w{% endif %}{% else %}none{% endfor %}",
        "{% if x %}{% if web %}a{% else %}b{% endif %}{% else %}c{% endif %}",
        "{% if web %}{% if x %}a{% else %}b{% endif %}{% else %}{% for i in [] %}{% else %}e{% endfor %}{% endif %}",
    ],
)
def test_markers_stand_for_both_branches(body: str) -> None:
    renderer, env = renderer_for(PAGE.format(body))
    both = renderer.render("page.mjml", {"x": True}, compile_source)
    assert both is not None
    assert both == each_on_its_own(env, "page.mjml", {"x": True})
    assert "__jp_variant" not in both[0] + both[1]


@pytest.mark.parametrize(
    "template",
    [
        PAGE.format("{{ web }}"),
        PAGE.format("{% if web and x %}a{% endif %}"),
        PAGE.format("{{ 'a' if web else 'b' }}"),
        PAGE.format("{% if web %}a{% elif x %}b{% endif %}"),
        PAGE.format("{% if web %}{% if not web %}a{% endif %}{% endif %}"),
        PAGE.format("{% if web %}<b>open{% else %}<i>other{% endif %}</b>"),
        PAGE.format("{% macro note(web) %}{% if web %}a{% else %}b{% endif %}{% endmacro %}{{ note(true) }}"),
        PAGE.format("{% set web = true %}{% if web %}a{% endif %}"),
        PAGE.format("{% for web in [1] %}{% if web %}a{% endif %}{% endfor %}"),
        "<mjml><mj-body>{% if not web %}<mj-section><mj-column><mj-text>e-mail only</mj-text></mj-column>"
        "</mj-section>{% endif %}<mj-section><mj-column><mj-text>both</mj-text></mj-column></mj-section>"
        "</mj-body></mjml>",
    ],
)
def test_anything_markers_cannot_express_renders_each_version_instead(template: str) -> None:
    renderer, env = renderer_for(template)
    assert renderer.render("page.mjml", {"x": True}, compile_source) is None
    email, web = each_on_its_own(env, "page.mjml", {"x": True})  # the caller's way still works
    assert "__jp_variant" not in email + web


def test_newsletter_uses_the_slow_way_for_a_template_markers_cannot_express(settings: Settings) -> None:
    template = settings.templates_dir / "newsletter" / "base.mjml"
    template.write_text(template.read_text().replace("{% if web %}", "{% if web and clinic.name %}"), encoding="utf-8")
    post = parse_post(TRICKY_POST.encode(), "posts/tricky.md", settings)
    newsletter = render_post_newsletter(post, settings, make_environment(settings))
    assert "Unsubscribe" in newsletter.html and "Unsubscribe" not in newsletter.web_html
    assert "Subscribe to our newsletter" in newsletter.web_html
    assert "__jp_variant" not in newsletter.html + newsletter.web_html


def test_a_post_that_quotes_a_marker_word_renders_each_version_instead(settings: Settings) -> None:
    env = make_environment(settings)
    post = parse_post(TRICKY_POST.replace("and a [link]", "and `__jp_variant_or__`").encode(), "posts/t.md", settings)
    url = post_url(settings, post.slug)
    context: dict[str, object] = {
        "post": post, "subject": post.subject, "preheader": post.preheader, "post_url": url,
        **_links(settings, url),
    }  # fmt: skip
    assert VariantRenderer(env).render("newsletter/post.mjml", context, compile_source) is None
    email, web = each_on_its_own(env, "newsletter/post.mjml", context)
    assert "<code>__jp_variant_or__</code>" in email and "<code>__jp_variant_or__</code>" in web

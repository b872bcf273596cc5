"""Posts -> newsletter content: MJML rendered by Jinja2, compiled by mjml-python.

Pure: values in, values out. The HTML and text carry ``TOKEN_PLACEHOLDER`` where
each subscriber's signed unsubscribe token goes, so a campaign is rendered and
compiled once and personalised per recipient by substitution (see message.py).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jinja2
from markupsafe import Markup
from mjml import mjml2html

from pipeline import urls
from pipeline.channels.templating import render_template, utm_site_links
from pipeline.config import Settings
from pipeline.content.dates import to_utc_iso
from pipeline.content.plaintext import wrap_text
from pipeline.content.posts import Post
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Newsletter:
    key: str  # a post's slug, or "digest-YYYY-MM-DD" for a digest
    subject: str
    preheader: str
    html: str  # for subscribers; contains TOKEN_PLACEHOLDER and MANAGE_PLACEHOLDER
    text: str  # plain-text part; contains TOKEN_PLACEHOLDER and MANAGE_PLACEHOLDER
    web_html: str  # "view in browser" page: no personal token, a subscribe link instead
    web_url: str
    date: datetime
    slugs: tuple[str, ...]

    def to_json(self) -> str:
        """The form a campaign keeps (frozen at its start) and is resumed from."""
        return json.dumps(
            {
                "key": self.key,
                "subject": self.subject,
                "preheader": self.preheader,
                "html": self.html,
                "text": self.text,
                "web_url": self.web_url,
                "web_html": self.web_html,  # the archive page, restored from here if out/ loses it
                "date": self.date.isoformat(),
                "slugs": list(self.slugs),
            }
        )

    @classmethod
    def from_json(cls, content: str) -> Newsletter:
        data = json.loads(content)
        return cls(
            key=data["key"],
            subject=data["subject"],
            preheader=data["preheader"],
            html=data["html"],
            text=data["text"],
            web_html=data.get("web_html", ""),  # campaigns made before migration 0002 did not keep it
            web_url=data["web_url"],
            date=datetime.fromisoformat(data["date"]),
            slugs=tuple(data["slugs"]),
        )


@dataclass(frozen=True)
class DigestItem:
    post: Post
    url: str


TOKEN_MAX_LENGTH = 64  # tokens.py's longest subscriber token
_WHITESPACE_RUN = re.compile(r"\n\s*\n+")


def compile_mjml(source: str, template: str) -> str:
    try:
        return mjml2html(source, disable_comments=True)
    except Exception as exc:  # mrml raises its own error types; report them in words
        raise PipelineError(f"MJML could not be compiled: {exc}", path=template, field="template") from None


def _tidy_text(text: str) -> str:
    # Templates leave stray blank lines where optional parts are empty; every line is
    # kept to 78 columns, counting the unsubscribe token at its longest.
    text = wrap_text(text, stand_in=(urls.TOKEN_PLACEHOLDER, TOKEN_MAX_LENGTH))
    return _WHITESPACE_RUN.sub("\n\n", text).strip() + "\n"


# A slot's place in the compiled page: letters and underscores only, so MJML passes it
# through untouched, as it does the subscriber's token placeholder.
# A name is words joined by single underscores, so two slots side by side stay apart.
_SLOT = re.compile(r"__SLOT_([a-z][a-z0-9]*(?:_[a-z0-9]+)*)__")


def _slot(name: str) -> Markup:
    if not re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", name):
        raise ValueError(f"slot names are lowercase words joined by underscores, not {name!r}")
    return Markup(f"__SLOT_{name}__")


def _fill(slots: dict[str, str], match: re.Match[str]) -> str:
    return slots[match.group(1)]


# Landmarks around groups of MJML sections: mj-raw cannot hold half an element, so the
# template writes these markers and they become tags after the compile.
_LANDMARK = re.compile(r"__(OPEN|CLOSE)_(header|main|footer)__")
# MJML wraps the body in <div role="article" aria-label="SUBJECT">: named, that wrapper is
# content of its own, so a <main> that opens just inside it (as the template asks) opens
# just outside it instead, and everything the reader sees is inside the landmark.
_MAIN_AROUND_WRAPPER = re.compile(
    r"(<body\b[^>]*>)(<div\b[^>]*\brole=\"article\"[^>]*>)__OPEN_main__(.*)__CLOSE_main__(</div>)(</body>)", re.DOTALL
)


def _landmark(match: re.Match[str]) -> str:
    if match.group(1) == "CLOSE":
        return f"</{match.group(2)}>"
    return '<main id="content">' if match.group(2) == "main" else f"<{match.group(2)}>"


def _landmarks(compiled: str) -> str:
    # id="content": the web page's "Skip to content" link (slot site_nav) leads here.
    compiled = _MAIN_AROUND_WRAPPER.sub(r'\1<main id="content">\2\3\4</main>\5', compiled, count=1)
    return _LANDMARK.sub(_landmark, compiled)


# The template's own style block (mj-style) starts with this comment: its rules are the
# ones written into the elements. MJML's resets stay in <style> only (inlined on every
# table cell they would double the page's size).
INLINE_MARKER = "/* inlined into the elements */"
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
# An attribute value holding < or >: legal in HTML5, which the inliner writes, but old
# mail parsers may take it for a tag, so it is written as &lt; / &gt; again.
_HIDDEN_SLOT = re.compile(r"<!--(__SLOT_[a-z][a-z0-9_]*__)-->")
_ATTRIBUTE_WITH_ANGLES = re.compile(r'="([^"<>]*[<>][^"]*)"')


def _inline_styles(compiled: str) -> str:
    """The article's styles (headings, paragraph spacing, link colour) written into each
    element's style attribute too (css-inline), for mail clients that drop <style>; the
    <style> blocks stay, for the media queries (narrow screens, dark mode) and Outlook's
    class rules that cannot be inlined."""
    import css_inline  # ~10 ms to load: only when a newsletter is compiled

    ours = next((css for css in _STYLE_BLOCK.findall(compiled) if INLINE_MARKER in css), "")
    if not ours:
        return compiled
    inliner = css_inline.CSSInliner(
        inline_style_tags=False, keep_style_tags=True, extra_css=ours, load_remote_stylesheets=False
    )
    # A slot's marker in <head> is text, which an HTML parser moves into <body>: it
    # crosses the inliner as a comment, and comes back as it was.
    head_end = compiled.find("</head>")
    if head_end > 0:
        compiled = _SLOT.sub(lambda m: f"<!--{m.group(0)}-->", compiled[:head_end]) + compiled[head_end:]
    inlined = _HIDDEN_SLOT.sub(r"\1", inliner.inline(compiled))
    return _ATTRIBUTE_WITH_ANGLES.sub(
        lambda m: '="' + m.group(1).replace("<", "&lt;").replace(">", "&gt;") + '"', inlined
    )


def _render_both(
    env: jinja2.Environment, name: str, context: dict[str, object], *, settings: Settings, campaign: str
) -> tuple[str, str, str]:
    """The e-mail HTML, the web page's HTML and the text part.

    The MJML template is rendered and compiled once. Where the two versions differ, it
    says ``{{ slot("NAME") }}``; each slot is rendered from ``newsletter/slots/NAME.html``
    once per version (``web`` false, then true) and put into the compiled page, the way
    a subscriber's token is. Slots hold plain HTML, never MJML: the compiler never sees them.
    """
    mjml_name = f"newsletter/{name}.mjml"
    compiled = compile_mjml(render_template(env, mjml_name, {**context, "slot": _slot}), mjml_name)
    compiled = _inline_styles(_landmarks(compiled))
    names = sorted(set(_SLOT.findall(compiled)))
    versions = []
    for web in (False, True):
        # A slot file's line breaks around its text are layout, not content.
        filled = {
            slot: render_template(env, f"newsletter/slots/{slot}.html", {**context, "web": web}).strip("\n")
            for slot in names
        }
        versions.append(_SLOT.sub(functools.partial(_fill, filled), compiled))
    # The e-mail's links to the clinic's own site carry UTM tags when [utm] asks for them;
    # the web page's do not (a visit from it is no visit from the e-mail).
    text = _tidy_text(utm_site_links(render_template(env, f"newsletter/{name}.txt", context), settings, slug=campaign))
    return utm_site_links(versions[0], settings, slug=campaign), versions[1], text


def _links(settings: Settings, web_url: str) -> dict[str, object]:
    """The links every newsletter carries: its web version, unsubscribe and manage (with
    the token placeholders), and subscribe (on the web version, instead of both)."""
    return {
        "web_url": web_url,
        "unsubscribe_url": urls.unsubscribe_url(settings),
        "manage_url": urls.manage_url(settings),
        "subscribe_url": urls.subscribe_url(settings),
    }


def _post_card(post: Post, settings: Settings) -> dict[str, object]:
    """What a shared link to the post's web page shows (the web page's head slot): its
    own image when it has one, else the generated share card (channels/social/card.py)."""
    return {
        "type": "article",
        "title": post.title,
        "description": post.summary,
        "image": post.image or urls.share_image_url(settings, post.slug),
        "image_alt": post.image_alt if post.image else f"{settings.clinic.name}: {post.title}",
        "generated": not post.image,
        "published": to_utc_iso(post.date),
    }


def render_post_newsletter(post: Post, settings: Settings, env: jinja2.Environment) -> Newsletter:
    web_url = urls.post_url(settings, post.slug)
    context: dict[str, object] = {
        "card": _post_card(post, settings),
        "post": post,
        "subject": post.subject,
        "preheader": post.preheader,
        "post_url": web_url,
        **_links(settings, web_url),
    }
    html, web_html, text = _render_both(env, "post", context, settings=settings, campaign=post.slug)
    newsletter = Newsletter(
        key=post.slug,
        subject=post.subject,
        preheader=post.preheader,
        html=html,
        text=text,
        web_html=web_html,
        web_url=web_url,
        date=post.date,
        slugs=(post.slug,),
    )
    check_newsletter(newsletter, settings, path=post.path, line=post.body_line)
    return newsletter


def render_digest(posts: Sequence[Post], settings: Settings, env: jinja2.Environment, *, now: datetime) -> Newsletter:
    """One newsletter listing every given post, newest first."""
    if not posts:
        raise PipelineError("there is nothing new to put in a digest", field="digest")
    ordered = sorted(posts, key=lambda p: (p.date, p.slug), reverse=True)
    key = urls.digest_key(now, settings)
    web_url = urls.digest_url(settings, key)
    local_day = now.astimezone(settings.clinic.zone).strftime("%B %-d, %Y")
    subject = f"New from {settings.clinic.name}: {len(ordered)} article{'s' if len(ordered) != 1 else ''} ({local_day})"
    preheader = " · ".join(p.title for p in ordered[:3])
    context: dict[str, object] = {
        "items": [DigestItem(post=p, url=urls.post_url(settings, p.slug)) for p in ordered],
        "card": {"type": "website", "title": subject, "description": preheader, "image": None, "published": None},
        "subject": subject,
        "preheader": preheader,
        **_links(settings, web_url),
    }
    html, web_html, text = _render_both(env, "digest", context, settings=settings, campaign=key)
    newsletter = Newsletter(
        key=key,
        subject=subject,
        preheader=preheader,
        html=html,
        text=text,
        web_html=web_html,
        web_url=web_url,
        date=now,
        slugs=tuple(p.slug for p in ordered),
    )
    check_newsletter(newsletter, settings, path="digest")
    return newsletter


_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT = re.compile(r'\balt="\s*[^"\s][^"]*"', re.IGNORECASE)


def check_newsletter(newsletter: Newsletter, settings: Settings, *, path: str, line: int | None = None) -> None:
    """Gmail clips HTML over ~102 KB (hiding the unsubscribe link); images need alt text."""
    # A character is at most 4 bytes of UTF-8: most newsletters need no encoding to know.
    size = len(newsletter.html) * 4
    if size > settings.newsletter.max_html_bytes:
        size = len(newsletter.html.encode("utf-8"))
    if size > settings.newsletter.max_html_bytes:
        raise PipelineError(
            f"newsletter HTML is {size / 1000:.0f} KB, over the {settings.newsletter.max_html_bytes / 1000:.0f} KB Gmail clips at",
            path=path,
            line=line,
            field="body",
            hint="shorten the article or split it into two posts",
        )
    for tag in _IMG_TAG.findall(newsletter.html):
        if not _ALT.search(tag):
            raise PipelineError(
                "an image in the newsletter has no alt text",
                path=path,
                line=line,
                field="image_alt",
                hint="describe every image",
            )
    if urls.TOKEN_PLACEHOLDER not in newsletter.html or urls.TOKEN_PLACEHOLDER not in newsletter.text:
        raise PipelineError(
            "newsletter has no unsubscribe link",
            path=path,
            field="template",
            hint="keep {{ unsubscribe_url }} in the newsletter templates",
        )
    if urls.MANAGE_PLACEHOLDER not in newsletter.html or urls.MANAGE_PLACEHOLDER not in newsletter.text:
        raise PipelineError(
            "newsletter has no 'manage your e-mail' link",
            path=path,
            field="template",
            hint="keep {{ manage_url }} in the newsletter templates, beside the unsubscribe link",
        )

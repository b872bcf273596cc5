"""Markdown -> safe HTML (and, with plaintext.py, plain text).

CommonMark via markdown-it-py; raw HTML is allowed in the source but every
result passes through nh3 (the ammonia sanitiser), which also makes relative
URLs absolute so the same HTML works in the feed, the email and the web.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import nh3

from pipeline.content.commonmark import parser
from pipeline.content.links import NO_LINKS, resolve_url
from pipeline.content.plaintext import tree_to_text

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "div", "dl", "dt",
    "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
    "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
    "*": {"lang"},
}
_URL_ATTRIBUTES = {("a", "href"), ("img", "src")}


_SCHEMES = frozenset({"http", "https", "mailto", "tel"})


def sanitize_html(raw: str, base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    """Remove scripts, event handlers and unknown tags; make URLs absolute; replace each
    named link (``links``, e.g. ``contact:``) by its address."""
    base = base_url.rstrip("/") + "/"

    def absolutise(tag: str, attribute: str, value: str) -> str | None:
        if (tag, attribute) in _URL_ATTRIBUTES:
            if value.startswith("#"):
                return value
            return resolve_url(value, base, links)
        return value

    return nh3.clean(
        raw,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        # A named link's scheme passes the check (made before the filter) to be replaced.
        url_schemes=_SCHEMES | {name.partition(":")[0] for name in links},
        attribute_filter=absolutise,
        link_rel="noopener",
        strip_comments=True,
    )


def markdown_to_html_and_text(source: str, base_url: str, links: Mapping[str, str] = NO_LINKS) -> tuple[str, str]:
    """One parse, two renderings: sanitised HTML and plain text that say the same."""
    md = parser()
    return sanitize_html(md.render(source), base_url, links), tree_to_text(md.tree(source), base_url, links)


def markdown_inline_to_html(source: str, base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    """A one-paragraph Markdown snippet (a summary) without its <p> wrapper."""
    rendered = parser().render(source).strip()
    if rendered.startswith("<p>") and rendered.endswith("</p>"):
        # A summary is one paragraph of the page it sits in: its own paragraphs run on.
        rendered = rendered[3:-4].replace("</p>\n<p>", " ")
    return sanitize_html(rendered, base_url, links)


def strip_tags(fragment: str) -> str:
    """Plain text of an HTML fragment on one line (titles, summaries, alt text)."""
    return " ".join(html.unescape(nh3.clean(fragment, tags=set())).split())


def strip_markup(text: str) -> str:
    """Plain text (a title, a tag) without HTML: tags removed, their text kept, entities
    decoded. What a reader that treats the text as HTML would show, script text included."""
    if "<" not in text and "&" not in text:
        return text  # nothing to strip: the common case, without a parse
    return " ".join(html.unescape(nh3.clean(text, tags=set(), clean_content_tags=set())).split())

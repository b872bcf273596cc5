"""One post -> one platform's snippet, as a person would write it.

The text is made of whole sentences: as many of the body's sentences, from the first,
as fit beside the link and the hashtags, never a sentence cut short. Hashtags give way
first (whole, from the end); then sentences, from the end. A post's own ``social:``
text for the platform is used whole. When not even one sentence fits, there is no
snippet but a ``NoRoom`` error that says so: the post needs its own text for that
platform (``validate`` reports it).

Layout: body, blank line, link, blank line, hashtags. Per platform: Bluesky shows the
link shortened, with facets for the link, each hashtag and each mention; Threads keeps
1 hashtag and Instagram 5, fewer if the body has some already; Instagram leaves the
link out of the text (``note`` carries it); LinkedIn and Facebook say "Read more:";
Facebook keeps the body to 500 characters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from pipeline.channels.social.facets import Facet, bluesky_facets, bluesky_link_display
from pipeline.channels.social.hashtags import hashtags_in, make_hashtags
from pipeline.channels.social.measure import Rules, graphemes, rules_for
from pipeline.channels.social.sentences import sentences

INSTAGRAM_LINK_LINE: Final = "Link in bio."
_PARAGRAPH = "\n\n"


class NoRoom(ValueError):
    """Not even the first sentence fits: the platform needs the post's own text."""

    def __init__(self, platform: str, message: str) -> None:
        super().__init__(message)
        self.platform = platform


@dataclass(frozen=True)
class Snippet:
    """One platform's text for a post, with its measured length."""

    platform: str
    text: str
    length: int  # measured with the platform's rule (``measure``)
    limit: int
    unit: str
    link_in_text: bool  # False on Instagram: captions have no clickable links
    note: str  # Instagram: "link in bio: <url>"; "" elsewhere
    facets: tuple[Facet, ...] = ()  # Bluesky only: the link, each hashtag and mention
    bytes: int | None = None  # Bluesky only: UTF-8 length (limit 3000)
    truncated: bool = False  # sentences were left out to fit
    hashtags: tuple[str, ...] = ()  # the hashtags that made it into the text

    def as_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "text": self.text,
            "length": self.length,
            "limit": self.limit,
            "unit": self.unit,
            "link_in_text": self.link_in_text,
            "note": self.note,
            "facets": [facet.as_record() for facet in self.facets],
            "bytes": self.bytes,
            "truncated": self.truncated,
            "hashtags": list(self.hashtags),
        }


@functools.lru_cache(maxsize=16)
def _sentences(body: str) -> tuple[str, ...]:
    # A post's platforms mostly share one body (social/body.txt): split it once, not
    # once per platform. Small: only the bodies of the post being composed come back.
    return tuple(sentences(body))


def _check_link(link: str) -> None:
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(link.split()) != 1:
        raise ValueError(f"link must be an absolute http(s) URL without spaces, not {link!r}")


def _layout(platform: str, body: str, link_text: str, tags: Sequence[str]) -> str:
    blocks = [body] if body else []
    if platform in ("facebook", "linkedin"):
        blocks.append(f"Read more: {link_text}")
    elif platform != "instagram":
        blocks.append(link_text)
    if tags:
        blocks.append(" ".join(tags))
    if platform == "instagram":
        blocks.append(INSTAGRAM_LINK_LINE)
    return _PARAGRAPH.join(blocks)


def _platform_tags(rules: Rules, hashtags: Sequence[str], body: str) -> list[str]:
    tags = make_hashtags(hashtags)
    if rules.max_hashtag_chars is not None:
        tags = [tag for tag in tags if graphemes(tag) - 1 <= rules.max_hashtag_chars]
    if rules.max_hashtags is not None:
        tags = tags[: max(0, rules.max_hashtags - hashtags_in(body))]
    return tags


def _soft_limited(rules: Rules, parts: list[str]) -> list[str]:
    """Facebook: as many sentences as stay within the body's soft limit (at least one)."""
    if rules.body_soft_limit is None:
        return parts
    kept = len(parts)
    while kept > 1 and rules.measure(" ".join(parts[:kept])) > rules.body_soft_limit:
        kept -= 1
    return parts[:kept]


def compose(
    platform: str,
    *,
    body: str,
    link: str,
    hashtags: Sequence[str],
    own_text: bool = False,
    mastodon_limit: int = 500,
) -> Snippet:
    """``platform``'s snippet of ``body`` (see the module doc). ``own_text``: the body is
    the post's own ``social:`` text for this platform, used whole or not at all.

    ``NoRoom`` when nothing fits; ``ValueError`` for a bad platform, link or limit.
    """
    rules = rules_for(platform, mastodon_limit)
    _check_link(link)
    if isinstance(hashtags, str):
        raise TypeError("hashtags must be a sequence of tag strings, not one string")
    parts = [part for part in ([" ".join(body.split())] if own_text else _sentences(body)) if part]
    if not parts:
        raise NoRoom(platform, f"{platform}: the text is empty")
    tags = _platform_tags(rules, hashtags, " ".join(parts))
    link_text = bluesky_link_display(link) if platform == "bluesky" else link
    limited = _soft_limited(rules, parts)
    for kept in range(len(limited), 0, -1):
        text_body = " ".join(limited[:kept])
        for kept_tags in range(len(tags), -1, -1):
            text = _layout(platform, text_body, link_text, tags[:kept_tags])
            length = rules.length_if_fits(text)
            if length is not None:
                return _snippet(rules, text, length, link, link_text, tags[:kept_tags], truncated=kept < len(parts))
    smallest = _layout(platform, parts[0], link_text, [])
    what = "its own social text" if own_text else "its first sentence"
    raise NoRoom(
        platform,
        f"{platform}: {what} does not fit: with the link it measures {rules.measure(smallest)} {rules.unit}, "
        f"over the limit of {rules.limit}",
    )


def _snippet(
    rules: Rules, text: str, length: int, link: str, link_text: str, tags: Sequence[str], *, truncated: bool
) -> Snippet:
    bluesky = rules.platform == "bluesky"
    instagram = rules.platform == "instagram"
    return Snippet(
        platform=rules.platform,
        text=text,
        length=length,
        limit=rules.limit,
        unit=rules.unit,
        link_in_text=not instagram,
        note=f"link in bio: {link}" if instagram else "",
        facets=bluesky_facets(text, link_text, link) if bluesky else (),
        bytes=len(text.encode("utf-8")) if bluesky else None,
        truncated=truncated,
        hashtags=tuple(tags),
    )

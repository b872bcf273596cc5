"""Bluesky's rich text: how a link is shown, and the facets that make links, hashtags
and mentions live.

Lexicon ``app.bsky.richtext.facet``: ``byteSlice`` with byteStart inclusive, byteEnd
exclusive, zero-indexed UTF-8 bytes; "#link: The text URL may have been simplified or
truncated, but the facet reference should be a complete URL"; ``#tag`` holds the tag
without the ``#``, at most 64 graphemes / 640 bytes; ``#mention`` holds the account's
DID. Facets are made by the client: a post sent without them shows its URLs, hashtags
and mentions as dead text. A mention's DID is only known to the network, so a snippet
carries the handle and ``pipeline.posting.bluesky`` resolves it when posting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import regex

from pipeline.channels.social.hashtags import BODY_HASHTAG
from pipeline.channels.social.measure import urls_in

ELLIPSIS: Final = "…"
BLUESKY_LINK_PATH_CHARS: Final = 30  # the shortened link shows the host and at most this much of the path

# A Bluesky handle is a domain name: @name.bsky.social, @clinic.example.
BLUESKY_MENTION = regex.compile(
    r"(?<![\w@])@((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9])(?![\w@-])", regex.IGNORECASE
)


def bluesky_link_display(url: str) -> str:
    """How a link is shown in a Bluesky post: host and path, no scheme, query or fragment.

    The path is cut to ``BLUESKY_LINK_PATH_CHARS`` characters (at a ``-``/``/``/``_``/``.``
    when one is near the end) and marked with "…". The full URL goes in the link facet.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = "" if parts.path in ("", "/") else parts.path
    if len(path) > BLUESKY_LINK_PATH_CHARS:
        cut = path[:BLUESKY_LINK_PATH_CHARS]
        separator = max(cut.rfind(char) for char in "-/_.")
        if separator >= BLUESKY_LINK_PATH_CHARS * 2 // 3:
            cut = cut[:separator]
        path = cut + ELLIPSIS
    return host + path


@dataclass(frozen=True)
class Facet:
    """A Bluesky rich-text facet over UTF-8 byte offsets: exactly one of ``uri`` (a
    link), ``tag`` (a hashtag, without the ``#``) and ``handle`` (a mention, resolved
    to its DID when posting)."""

    byte_start: int
    byte_end: int
    uri: str = ""
    tag: str = ""
    handle: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.byte_start < self.byte_end:
            raise ValueError(f"bad facet byte range [{self.byte_start}, {self.byte_end})")
        if sum(map(bool, (self.uri, self.tag, self.handle))) != 1:
            raise ValueError("a facet has exactly one of uri (link), tag (hashtag) and handle (mention)")

    def as_record(self, did: str | None = None) -> dict[str, Any]:
        """The lexicon's form; a mention needs the handle's ``did``."""
        feature: dict[str, str]
        if self.uri:
            feature = {"$type": "app.bsky.richtext.facet#link", "uri": self.uri}
        elif self.tag:
            feature = {"$type": "app.bsky.richtext.facet#tag", "tag": self.tag}
        elif did is not None:
            feature = {"$type": "app.bsky.richtext.facet#mention", "did": did}
        else:  # in the snippet file: the handle, to be resolved when posting
            feature = {"$type": "app.bsky.richtext.facet#mention", "handle": self.handle}
        return {"index": {"byteStart": self.byte_start, "byteEnd": self.byte_end}, "features": [feature]}


def _bytes_before(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _span(text: str, start: int, end: int) -> tuple[int, int]:
    byte_start = _bytes_before(text, start)
    return byte_start, byte_start + len(text[start:end].encode("utf-8"))


def bluesky_facets(text: str, link_display: str, link: str) -> tuple[Facet, ...]:
    """The facets of a Bluesky snippet: the shown link (pointing at ``link``), every
    http(s) URL written out, every hashtag and every mention, in text order."""
    found: list[tuple[int, Facet]] = []
    taken: list[tuple[int, int]] = []

    def add(start: int, end: int, *, uri: str = "", tag: str = "", handle: str = "") -> None:
        if any(start < e and s < end for s, e in taken):
            return
        taken.append((start, end))
        byte_start, byte_end = _span(text, start, end)
        found.append((start, Facet(byte_start, byte_end, uri=uri, tag=tag, handle=handle)))

    position = text.rfind(link_display) if link_display else -1
    if position >= 0:
        add(position, position + len(link_display), uri=link)
    for entity in urls_in(text, False):
        start, end = (int(i) for i in entity["indices"])
        add(start, end, uri=str(entity["url"]))
    for match in BLUESKY_MENTION.finditer(text):
        add(match.start(), match.end(), handle=match.group(1).lower())
    for match in BODY_HASHTAG.finditer(text):
        add(match.start(), match.end(), tag=match.group()[1:])
    return tuple(facet for _, facet in sorted(found, key=lambda pair: pair[0]))

"""Per-platform length rules, and composing one post into a social-media snippet.

Pure functions: no I/O, no clock, no configuration. Every rule below names the
source it was checked against (as of this writing); platforms change their
rules, so these are the places to look again.

=========  ===================  ==================================================
platform   limit                how the text is measured
=========  ===================  ==================================================
x          280                  twitter-text v3 weights (URL 23, CJK 2, emoji 2),
                                emoji found by grapheme cluster (see ``_x_weight``)
mastodon   500 (per server)     grapheme clusters, after every http(s) URL becomes
                                23 characters and ``@user@domain`` becomes ``@user``
bluesky    300 graphemes and    grapheme clusters; UTF-8 bytes; links are shown
           3000 UTF-8 bytes     shortened and carried by a link facet
threads    500                  characters, except that an emoji counts as its
                                UTF-8 bytes; at most 1 hashtag, at most 5 links
linkedin   3000                 UTF-16 code units of the escaped ("little") text
facebook   63206                UTF-16 code units; the body is kept to 500
instagram  2200                 UTF-16 code units; at most 5 hashtags; no link
=========  ===================  ==================================================

Sources:

* X: twitter-text config v3 (``twitter_text.config``, ``max_weighted_tweet_length``
  280, ``transformed_url_length`` 23, weight 100 for U+0000-U+10FF, U+2000-U+200D,
  U+2010-U+201F, U+2032-U+2037, 200 for everything else, an emoji 200, scale 100)
  and its ``parse_tweet`` counting loop. The twitter-text-parser package ships
  emoji data from Unicode 12 (``regexp/emoji-test.txt``), so it counts newer ZWJ
  sequences such as U+1F9D1 U+200D U+1F384 as 5 instead of 2.
* Mastodon: ``app/validators/status_length_validator.rb`` (``countable_length`` is
  ``str.each_grapheme_cluster.size``; ``countable_text`` rewrites each entity from
  ``Extractor.extract_urls_with_indices(str, extract_url_without_protocol: false)``
  to ``'x' * 23`` and each mention to ``"@#{screen_name.split('@').first}"``);
  the mention pattern is ``Account::MENTION_RE`` in ``app/models/account.rb``.
  The limit is a per-server setting (``configuration.statuses.max_characters``).
* Bluesky: lexicon ``app.bsky.feed.post`` (``text``: ``maxGraphemes`` 300,
  ``maxLength`` 3000; in Lexicon a string's ``maxLength`` counts UTF-8 bytes, as
  ``@atproto/lexicon`` checks it with ``utf8Len``) and ``app.bsky.richtext.facet``
  (``byteSlice``: byteStart inclusive, byteEnd exclusive, zero-indexed UTF-8
  bytes; "#link: The text URL may have been simplified or truncated, but the facet
  reference should be a complete URL"; ``#tag`` holds the tag without the ``#``,
  at most 64 graphemes / 640 bytes). Facets are made by the client: a post sent
  without them shows its URLs and hashtags as dead text.
* Threads: Meta's Threads API docs, "Posts" ("Text posts are limited to 500
  characters. Emojis are counted as the number of UTF-8 bytes.") and "Text
  attachments" ("The number of links is restricted to 5 or fewer"; "All unique URLs
  found in the text field are counted as links"); one tag per post (a topic tag is
  1-50 characters, and without ``topic_tag`` it is taken from the text's hashtags).
* LinkedIn: Microsoft Learn, "little Text Format" (Posts API ``commentary``):
  "All reserved characters need to be escaped with a backslash, even if those
  characters are not used in one of the supported elements or templates"; the
  reserved set in its Text grammar is ``| { } @ [ ] ( ) < > # \\ * _ ~``;
  ``HashtagElement ::= '#' SINGLE_WORD``; ``MentionElement`` is
  ``@[Name](urn:li:organization:123)``. Unescaped reserved characters are reported
  to make LinkedIn cut the published post at that character.
* Instagram: captions of 2,200 characters; Instagram Help now allows 5 hashtags per
  post (it was 30); a link in a caption is not clickable.
* Facebook: 63,206 characters per post.

"Characters" on LinkedIn, Facebook and Instagram are counted as UTF-16 code units
(an emoji outside the BMP counts 2), which is what a JavaScript or Java ``length``
returns and is never lower than a code-point count, so we never overshoot.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import regex
from twitter_text import extract_urls_with_indices
from twitter_text.config import config as _twitter_text_config
from twitter_text.get_character_weight import get_character_weight
from twitter_text.regexp.valid_cctld import valid_cctld
from twitter_text.regexp.valid_gtld import valid_gtld

__all__ = [
    "PLATFORMS",
    "Facet",
    "Snippet",
    "bluesky_link_display",
    "compose",
    "escape_linkedin",
    "graphemes",
    "limit_for",
    "make_hashtags",
    "measure",
]

PLATFORMS: Final = ("x", "mastodon", "bluesky", "threads", "linkedin", "facebook", "instagram")

ELLIPSIS: Final = "…"

BLUESKY_MAX_BYTES: Final = 3000
BLUESKY_LINK_PATH_CHARS: Final = 30  # the shortened link shows the host and at most this much of the path
FACEBOOK_BODY_SOFT_LIMIT: Final = 500
THREADS_MAX_LINKS: Final = 5
INSTAGRAM_LINK_LINE: Final = "Link in bio."


# --------------------------------------------------------------------------- Unicode helpers

_GRAPHEME = regex.compile(r"\X")
# A grapheme cluster is an emoji sequence when it holds an Extended_Pictographic
# code point (every emoji, ZWJ sequences and tag sequences included), a keycap
# (U+20E3), or a pair of regional indicators (a flag).
_EMOJI_PART = regex.compile(r"\p{Extended_Pictographic}|\u20e3|\p{Regional_Indicator}{2}")
# Scripts written without spaces: a line may break between any two of their characters.
_NO_SPACE_SCRIPT = regex.compile(r"[\p{Ideographic}\p{Hiragana}\p{Katakana}\u30fc]")
_NEWLINES = regex.compile(r"\r\n|\r")


# Characters that always form a grapheme cluster on their own (no combining marks, no
# joiners, no emoji, no Hangul jamo): Latin, Greek and the common punctuation (… “ ” —).
_SIMPLE_TEXT = regex.compile(r"[\x00-\x7e\u00a0-\u02ff\u0370-\u0482\u2010-\u2027\u2030-\u205e]*")


def graphemes(text: str) -> int:
    """Number of extended grapheme clusters (user-perceived characters) in ``text``."""
    if text.isascii() or _SIMPLE_TEXT.fullmatch(text):
        return len(text) - text.count("\r\n")  # fast path: one cluster per character, CRLF one
    return len(_GRAPHEME.findall(text))


def _tld_initials() -> str:
    """The characters a top-level domain may start with, as twitter-text lists them.

    Every URL twitter-text extracts, with or without a protocol, has a domain that
    ends in an ASCII "." and one of its generic or country TLDs or a punycode label
    ("xn--..."), so a text in which no "." is followed by one of these characters
    holds no URL. The lists are read from twitter-text itself so as to never drift.
    """
    initials = {"x"}  # valid_punycode: xn--
    for pattern in (valid_gtld.pattern, valid_cctld.pattern):
        # "(?:(?:tld|tld|...)(?=[^0-9a-zA-Z@+-]|$))": a plain list of alternatives
        alternatives = pattern.removeprefix("(?:(?:").removesuffix(")(?=[^0-9a-zA-Z@+-]|$))")
        if not regex.fullmatch(r"[^\\()\[\]?*+.]+", alternatives):
            raise RuntimeError("twitter-text's list of top-level domains changed shape; see _tld_initials")
        initials.update(tld[0] for tld in alternatives.split("|"))
    return "".join(sorted(initials))


# A "." followed by what may start a top-level domain. Text without one (and without
# "://") cannot hold a URL, and twitter-text's large URL expression, ~20 µs even on a
# short link, need not run over it; a full stop in prose (". ", ".)") is no reason to.
# Compiled, as twitter-text's expression is, by the standard library's engine with
# IGNORECASE, so that it folds case alike (the Kelvin sign "K" matches "k").
_MAY_HOLD_URL = re.compile(f"\\.[{re.escape(_tld_initials())}]", re.IGNORECASE)


def _urls(text: str, without_protocol: bool = True) -> list[dict[str, Any]]:
    if "://" not in text and (not without_protocol or _MAY_HOLD_URL.search(text) is None):
        return []
    return list(extract_urls_with_indices(text, without_protocol))


def _is_emoji(cluster: str) -> bool:
    return _EMOJI_PART.search(cluster) is not None


def _no_emoji(text: str) -> bool:
    """True only if ``text`` holds no emoji part, so no grapheme cluster of it is an emoji.

    Emoji parts are not ASCII, and searching only the non-ASCII characters, run
    together, is much quicker than searching the whole text. Running them together
    can only add a match (two regional indicators made adjacent), never lose one, so
    a False here just means "look closer".
    """
    return text.isascii() or _EMOJI_PART.search("".join(_NON_ASCII.findall(text))) is None


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- X

_X_OPTIONS: Final[dict[str, Any]] = _twitter_text_config["defaults"]  # config v3
_X_SCALE: Final = int(_X_OPTIONS["scale"])
_X_URL_WEIGHT: Final = int(_X_OPTIONS["transformed_url_length"]) * _X_SCALE
_X_EMOJI_WEIGHT: Final = int(_X_OPTIONS["default_weight"])


_NON_ASCII = regex.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=4096)
def _x_char_weight(char: str) -> int:
    return int(get_character_weight(char, _X_OPTIONS))


def _x_plain_weight(text: str) -> int:
    if text.isascii():
        # Fast path: ASCII is all in config v3's first range (weight 100) and holds no
        # Extended_Pictographic code point, so no emoji clusters either.
        return len(text) * _x_char_weight("a")
    others = _NON_ASCII.findall(text)
    if _EMOJI_PART.search("".join(others)) is None:  # see _no_emoji
        # No emoji at all: code point weights alone, no need to segment; ASCII weighs 1.
        return (len(text) - len(others)) * _x_char_weight("a") + sum(map(_x_char_weight, others))
    total = 0
    for match in _GRAPHEME.finditer(text):
        cluster: str = match.group()
        if _is_emoji(cluster):
            total += _X_EMOJI_WEIGHT
        else:
            total += sum(_x_char_weight(char) for char in cluster)
    return total


def _x_weight(text: str) -> int:
    """twitter-text's ``parse_tweet(text).weightedLength``, with emoji found by grapheme cluster.

    This is ``parse_tweet``'s own loop (NFC, one line-ending form, twitter-text's URL
    extraction, per-code-point weights from config v3) except for emoji: instead of
    the package's Unicode 12 emoji regex, any grapheme cluster that is an emoji
    sequence weighs 200 (2 after scaling). Weighing the text between URLs directly,
    rather than swapping emoji for a placeholder and calling ``parse_tweet``, means a
    placeholder can never join onto a neighbouring URL and change where it ends.
    """
    normalized = _NEWLINES.sub("\n", unicodedata.normalize("NFC", text))
    total = 0
    position = 0
    for entity in _urls(normalized):
        start, end = (int(i) for i in entity["indices"])
        total += _x_plain_weight(normalized[position:start]) + _X_URL_WEIGHT
        position = end
    total += _x_plain_weight(normalized[position:])
    return total // _X_SCALE


# --------------------------------------------------------------------------- Mastodon

_MASTODON_URL_CHARS: Final = 23
# Account::MENTION_RE: (?<![=/[:word:]])@((USERNAME_RE)(?:@[[:word:]]+([.-]+[[:word:]]+)*)?)
# with USERNAME_RE = /[a-z0-9_]+([.-]+[a-z0-9_]+)*/i
_MASTODON_MENTION = regex.compile(
    r"(?<![=/\w])@(?P<user>[a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)(?:@\w+(?:[.-]+\w+)*)?",
    regex.IGNORECASE,
)
# twitter-text's end_mention_match: a mention followed by one of these is not a mention.
_MASTODON_END_MENTION = regex.compile(
    r"[@＠\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u0253\u0254\u0256\u0257\u0259\u025b"
    r"\u0263\u0268\u026f\u0272\u0289\u028b\u02bb\u0300-\u036f\u1e00-\u1eff]|://"
)


def _mastodon_countable(text: str) -> str:
    """StatusLengthValidator#countable_text: URLs -> 23 x's, @user@domain -> @user."""
    entities: list[tuple[int, int, str]] = []
    for entity in _urls(text, False):  # extract_url_without_protocol: false
        start, end = (int(i) for i in entity["indices"])
        entities.append((start, end, "x" * _MASTODON_URL_CHARS))
    for match in _MASTODON_MENTION.finditer(text):
        if _MASTODON_END_MENTION.match(text, match.end()) is None:
            entities.append((match.start(), match.end(), "@" + match.group("user")))
    entities.sort(key=lambda e: e[0])
    pieces: list[str] = []
    position = 0
    for start, end, replacement in entities:
        if start < position:  # Extractor.remove_overlapping_entities: the earlier one wins
            continue
        pieces.append(text[position:start])
        pieces.append(replacement)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


# --------------------------------------------------------------------------- Threads


def _threads_length(text: str) -> int:
    if _no_emoji(text):
        return _utf16_units(text)  # each cluster counts its UTF-16 units, so the text does
    total = 0
    for match in _GRAPHEME.finditer(text):
        cluster: str = match.group()
        total += len(cluster.encode("utf-8")) if _is_emoji(cluster) else _utf16_units(cluster)
    return total


# --------------------------------------------------------------------------- rules

_UTF16_UNIT = "characters (UTF-16 code units)"
_PARAGRAPH = "\n\n"  # the blank line between a snippet's blocks


@dataclass(frozen=True)
class _Rules:
    limit: int
    unit: str
    measure: Callable[[str], int]
    max_hashtags: int | None = None
    max_hashtag_chars: int | None = None
    max_links: int | None = None
    max_bytes: int | None = None
    body_soft_limit: int | None = None

    @functools.cached_property
    def separator(self) -> int:
        """The measure of the blank line between two blocks of a snippet."""
        return self.measure(_PARAGRAPH)

    @functools.cached_property
    def ellipsis(self) -> int:
        """The measure of the "…" that ends a cut body."""
        return self.measure(ELLIPSIS)


def _by_paragraph(count: Callable[[str], int]) -> Callable[[str], int]:
    """``count`` summed over blank-line-separated paragraphs, each remembered.

    Every rule here is additive across a blank line: no URL, mention, hashtag or
    grapheme cluster spans one. Snippets are trimmed by trying many bodies in front
    of the same link, handle and hashtags; remembering those paragraphs makes each
    try cost only the body's measure.
    """
    remembered = functools.lru_cache(maxsize=1024)(count)
    separator = count(_PARAGRAPH)

    def measure(text: str) -> int:
        paragraphs = text.split(_PARAGRAPH)
        return sum(map(remembered, paragraphs)) + separator * (len(paragraphs) - 1)

    return measure


_X_MEASURE = _by_paragraph(lambda text: _x_weight(text))
_GRAPHEMES_MEASURE = _by_paragraph(lambda text: graphemes(text))


@functools.lru_cache(maxsize=64)
def _mastodon_measure(limit: int) -> Callable[[str], int]:
    return _by_paragraph(lambda text: graphemes(_mastodon_countable(text)))


def _rules(platform: str, mastodon_limit: int) -> _Rules:
    if isinstance(mastodon_limit, bool) or not isinstance(mastodon_limit, int) or mastodon_limit < 1:
        raise ValueError(f"mastodon_limit must be a positive integer, not {mastodon_limit!r}")
    if platform not in PLATFORMS:  # checked here, not in the cached function, so it never hashes it
        raise ValueError(f"unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")
    # Validated before the cache, where True would hit the entry of 1 (True == 1).
    return _platform_rules(platform, mastodon_limit)


@functools.lru_cache(maxsize=64)
def _platform_rules(platform: str, mastodon_limit: int) -> _Rules:
    if platform == "x":
        return _Rules(280, "weighted characters", _X_MEASURE)
    if platform == "mastodon":
        return _Rules(mastodon_limit, "graphemes", _mastodon_measure(mastodon_limit))
    if platform == "bluesky":
        return _Rules(300, "graphemes", _GRAPHEMES_MEASURE, max_hashtag_chars=64, max_bytes=BLUESKY_MAX_BYTES)
    if platform == "threads":
        return _Rules(
            500,
            "characters (an emoji counts its UTF-8 bytes)",
            _threads_length,
            max_hashtags=1,
            max_hashtag_chars=50,
            max_links=THREADS_MAX_LINKS,
        )
    if platform == "linkedin":
        return _Rules(3000, _UTF16_UNIT, _utf16_units)
    if platform == "facebook":
        return _Rules(63206, _UTF16_UNIT, _utf16_units, body_soft_limit=FACEBOOK_BODY_SOFT_LIMIT)
    if platform == "instagram":
        return _Rules(2200, _UTF16_UNIT, _utf16_units, max_hashtags=5)
    raise ValueError(f"unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")


def measure(platform: str, text: str, *, mastodon_limit: int = 500) -> int:
    """Length of ``text`` as ``platform`` counts it against ``limit_for(platform)``.

    Bluesky's answer is graphemes; its second limit, UTF-8 bytes, is ``len(text.encode())``.
    """
    return _rules(platform, mastodon_limit).measure(text)


def limit_for(platform: str, *, mastodon_limit: int = 500) -> int:
    """The platform's text limit, in the unit ``measure`` returns."""
    return _rules(platform, mastodon_limit).limit


# --------------------------------------------------------------------------- hashtags

_TAG_WORD = regex.compile(r"[\p{L}\p{M}\p{Nd}]+")
_APOSTROPHES = regex.compile(r"['’ʼ]")
_HAS_LETTER = regex.compile(r"\p{L}")
# A hashtag already in the body (twitter-text style: needs a letter, not after a word char or &).
_BODY_HASHTAG = regex.compile(r"(?<![\w&#＃])[#＃](?=[\p{L}\p{M}\p{Nd}_]*\p{L})[\p{L}\p{M}\p{Nd}_]+")


@functools.lru_cache(maxsize=64)  # one post's body is composed for every platform
def _body_hashtags(body: str) -> int:
    return len(_BODY_HASHTAG.findall(body))


@functools.lru_cache(maxsize=64)
def _cached_hashtags(tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(make_hashtags(tags))


def _hashtag_name(tag: str) -> str:
    """The hashtag's name for ``tag``, as ``make_hashtags`` makes it, or "" with no letter."""
    words = _TAG_WORD.findall(_APOSTROPHES.sub("", unicodedata.normalize("NFC", tag)))
    name = "".join(word[:1].upper() + word[1:] for word in words)
    return name if _HAS_LETTER.search(name) else ""


_remembered_hashtag_name = functools.lru_cache(maxsize=1024)(_hashtag_name)


def make_hashtags(tags: Sequence[str]) -> list[str]:
    """Tag strings -> hashtags: "phantom limb pain" -> "#PhantomLimbPain".

    Words are the runs of letters, marks and digits; each word's first letter is
    upper-cased and the rest kept ("ACL tear" -> "#ACLTear"). Everything else is
    dropped (apostrophes first, so "women's health" -> "#WomensHealth"); underscores
    are dropped too, since LinkedIn reserves ``_``. A tag with no letter ("2024") makes
    no hashtag, as on X. Duplicates are dropped case-insensitively, first one kept.
    """
    if isinstance(tags, str):
        raise TypeError("hashtags must be a sequence of tag strings, not one string")
    result: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        # A blog's tags recur from post to post: remember each one's name. Only a plain
        # str is looked up, so anything else fails in _hashtag_name as it always did.
        name = _remembered_hashtag_name(tag) if type(tag) is str else _hashtag_name(tag)
        if not name:
            continue
        key = name.casefold()
        if key not in seen:
            seen.add(key)
            result.append("#" + name)
    return result


# --------------------------------------------------------------------------- LinkedIn

LINKEDIN_RESERVED: Final = frozenset("|{}@[]()<>#\\*_~")
_LINKEDIN_RESERVED_CHAR: Final = re.compile(f"[{re.escape(''.join(sorted(LINKEDIN_RESERVED)))}]")
_LINKEDIN_MENTION = regex.compile(r"@\[[^\[\]]+\]\(urn:li:(?:person|organization):[^()\s]+\)")


def escape_linkedin(text: str) -> str:
    """Backslash-escape every character that LinkedIn's "little" text format reserves."""
    if _LINKEDIN_RESERVED_CHAR.search(text) is None:
        return text  # the usual case, spared building the text again
    return _LINKEDIN_RESERVED_CHAR.sub(_backslashed, text)


def _backslashed(match: re.Match[str]) -> str:
    return "\\" + match.group()


def _linkedin_handle(handle: str) -> str:
    # A bare "@Name" cannot be a LinkedIn mention (that needs "@[Name](urn:li:...)"), and an
    # unescaped "@" is reserved, so a bare handle goes out escaped, as plain text.
    return handle if _LINKEDIN_MENTION.fullmatch(handle) else escape_linkedin(handle)


# --------------------------------------------------------------------------- Bluesky


def bluesky_link_display(url: str) -> str:
    """How a link is shown in a Bluesky post: host and path, no scheme, query or fragment.

    The path is cut to ``BLUESKY_LINK_PATH_CHARS`` characters (at a ``-``/``/``/``_``/``.``
    when one is near the end) and marked with "…". The full URL goes in the link facet.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = host.removeprefix("www.")
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
    """A Bluesky rich-text facet (``app.bsky.richtext.facet``) over UTF-8 byte offsets.

    A link facet has ``uri``; a hashtag facet has ``tag`` (without the ``#``) and no
    ``uri``. ``byte_start`` is inclusive and ``byte_end`` exclusive.
    """

    byte_start: int
    byte_end: int
    uri: str = ""
    tag: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.byte_start < self.byte_end:
            raise ValueError(f"bad facet byte range [{self.byte_start}, {self.byte_end})")
        if bool(self.uri) == bool(self.tag):
            raise ValueError("a facet has exactly one of uri (link) and tag (hashtag)")

    def as_record(self) -> dict[str, Any]:
        feature: dict[str, str]
        if self.uri:
            feature = {"$type": "app.bsky.richtext.facet#link", "uri": self.uri}
        else:
            feature = {"$type": "app.bsky.richtext.facet#tag", "tag": self.tag}
        return {"index": {"byteStart": self.byte_start, "byteEnd": self.byte_end}, "features": [feature]}


# --------------------------------------------------------------------------- snippets


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
    facets: tuple[Facet, ...] = ()  # Bluesky only: the link and each hashtag
    bytes: int | None = None  # Bluesky only: UTF-8 length (limit 3000)
    truncated: bool = False  # the body was cut to fit
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


# One piece of a snippet's text: (text, facet uri, facet tag).
_Piece = tuple[str, str, str]

_CONTROL = regex.compile(r"[^\P{Cc}\n]")
_SPACES = regex.compile(r"[^\S\n]+")
_BLANK_LINES = regex.compile(r"\n{3,}")
_ELLIPSIS_STRIP = " \t\n,;:.-–—·"


@functools.lru_cache(maxsize=64)  # one post's body is composed for every platform
def _normalize_body(body: str) -> str:
    if body.isascii() and body.isprintable() and "  " not in body and body.strip(" ") == body:
        # Already normal: printable ASCII has no line break, tab or control character,
        # and its only space, " ", is neither doubled nor at either end.
        return body
    text: str = _CONTROL.sub("", _NEWLINES.sub("\n", body).replace("\t", " "))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    cleaned: str = _BLANK_LINES.sub("\n\n", "\n".join(lines))
    return cleaned.strip()


def _layout(platform: str, body: str, link_text: str, link_uri: str, handle: str, tags: Sequence[str]) -> list[_Piece]:
    """The snippet as pieces: body, blank line, link, blank line, handle and hashtags.

    ``link_uri`` is the facet target of the link ("" for no facet); hashtags always
    carry their tag, which only Bluesky turns into facets.
    """
    blocks: list[list[_Piece]] = []
    if body:
        blocks.append([(body, "", "")])
    follow: list[_Piece] = []
    if platform in ("facebook", "linkedin"):
        blocks.append([("Read more: ", "", ""), (link_text, link_uri, "")])
        if handle:
            follow.append((f"Follow us {handle} for more.", "", ""))
    elif platform == "instagram":
        if handle:
            follow.append((handle, "", ""))
    else:
        blocks.append([(link_text, link_uri, "")])
        if handle:
            follow.append((handle, "", ""))
    for tag in tags:
        if follow:
            follow.append((" ", "", ""))
        follow.append((tag, "", tag[1:]))
    if follow:
        blocks.append(follow)
    if platform == "instagram":
        blocks.append([(INSTAGRAM_LINK_LINE, "", "")])
    pieces: list[_Piece] = []
    for block in blocks:
        if pieces:
            pieces.append(("\n\n", "", ""))
        pieces.extend(block)
    return pieces


def _render(pieces: Sequence[_Piece], *, with_facets: bool) -> tuple[str, tuple[Facet, ...]]:
    text = "".join(piece for piece, _, _ in pieces)
    if not with_facets:
        return text, ()
    facets: list[Facet] = []
    offset = 0
    for piece, uri, tag in pieces:
        size = len(piece.encode("utf-8"))
        if uri or tag:
            facets.append(Facet(offset, offset + size, uri=uri, tag=tag))
        offset += size
    return text, tuple(facets)


# ASCII characters that ``str.isspace`` calls space (\x1c-\x1f included, unlike ``\s``).
_ASCII_SPACE = "\t\n\x0b\x0c\r\x1c-\x1f "
_ASCII_WORD_END = regex.compile(f"(?<=[^{_ASCII_SPACE}])[{_ASCII_SPACE}]")
_ASCII_NON_SPACE = regex.compile(f"[^{_ASCII_SPACE}]")
_MATCH_START: Final = operator.methodcaller("start")
_MATCH_END: Final = operator.methodcaller("end")


@functools.lru_cache(maxsize=64)  # X and Bluesky usually both cut the same body
def _break_points(body: str, *, words_only: bool) -> tuple[int, ...]:
    """Offsets where ``body`` may be cut: after a word, or between two CJK characters."""
    if words_only and body.isascii() and body.isprintable():
        # Fastest path, for the usual body: its only space is " ", so the points are the
        # offsets of the spaces that follow a word. Space k is at the length of the
        # words before it plus k, and follows a word when the word before it is not "".
        words = body.split(" ")
        offsets = map(operator.add, itertools.accumulate(map(len, words)), itertools.count())
        return tuple(itertools.compress(offsets, words[:-1]))
    if body.isascii() and "\r" not in body:
        # Fast path: in ASCII every character is its own grapheme cluster, so the points
        # are the offsets 1 <= i < len(body) where body[i - 1] is not a space and, for
        # words_only, body[i] is one; a regular expression finds them without a loop here.
        if words_only:
            return tuple(map(_MATCH_START, _ASCII_WORD_END.finditer(body)))
        return tuple(map(_MATCH_END, _ASCII_NON_SPACE.finditer(body, 0, len(body) - 1)))
    clusters = [(m.end(), m.group()) for m in _GRAPHEME.finditer(body)]
    points: list[int] = []
    for (end, cluster), (_, following) in itertools.pairwise(clusters):
        if cluster.isspace():
            continue
        no_space = _NO_SPACE_SCRIPT.match(cluster) is not None or _NO_SPACE_SCRIPT.match(following) is not None
        if not words_only or following.isspace() or no_space:
            points.append(end)
    return tuple(points)


def _cut(body: str, end: int) -> str:
    stem = body[:end].rstrip(_ELLIPSIS_STRIP)
    return stem + ELLIPSIS if stem else ""


def _largest_fitting(body: str, points: Sequence[int], fits: Callable[[str], bool]) -> str:
    """The longest ``_cut(body, p)`` that fits, by binary search (fitting is monotone in p)."""
    low, high = 0, len(points) - 1
    best = -1
    while low <= high:
        middle = (low + high) // 2
        candidate = _cut(body, points[middle])
        if candidate and fits(candidate):
            best = middle
            low = middle + 1
        else:
            high = middle - 1
    # Guard against a counting rule that is not monotone after all: walk down until one fits.
    for index in range(best, -1, -1):
        candidate = _cut(body, points[index])
        if candidate and fits(candidate):
            return candidate
    return ""


def _fit_body(body: str, fits: Callable[[str], bool]) -> tuple[str, bool]:
    """The body if it fits, else its longest fitting word-boundary prefix plus "…".

    Only when not even the first word fits is the body cut inside a word (at a grapheme
    boundary); when nothing fits the body is dropped (the caller knows "" fits).
    """
    if not body or fits(body):
        return body, False
    cut = _largest_fitting(body, _break_points(body, words_only=True), fits)
    if not cut:
        cut = _largest_fitting(body, _break_points(body, words_only=False), fits)
    return cut, True


# Characters that can never come just before a URL (twitter-text's
# valid_url_preceding_chars excludes them), so a text starting with one has its first
# URL found alike whether the text stands alone or follows a blank line.
_TAIL_START = re.compile(r"[A-Za-z0-9@＠$#＃]")


def _link_urls(text: str) -> set[str]:
    """Threads: "All unique URLs found in the text field are counted as links"."""
    return {str(entity["url"]) for entity in _urls(text)}


def _most_urls(text: str) -> int:
    """An upper bound on the URLs in ``text``, without twitter-text's slow expression.

    Every URL holds a "." followed by the first letter of a top-level domain (see
    ``_MAY_HOLD_URL``), and two URLs never overlap, so there are no more URLs than
    such dots.
    """
    return len(_MAY_HOLD_URL.findall(text))


def _fits_text(rules: _Rules, text: str) -> bool:
    """Whether ``text`` is within all of the platform's limits."""
    if rules.measure(text) > rules.limit:
        return False
    if rules.max_bytes is not None and len(text.encode("utf-8")) > rules.max_bytes:
        return False
    return rules.max_links is None or len(_link_urls(text)) <= rules.max_links


class _Tail:
    """What follows the body in a snippet (link, handle, hashtags), measured once.

    A snippet's text is ``shown + "\n\n" + tail`` (only ``tail`` when the body is
    empty), and while the body is trimmed only ``shown`` changes. Every check of the
    text is additive across that blank line, so each try measures the body alone:

    * the measures: X, Mastodon and Bluesky sum over paragraphs (``_by_paragraph``);
      Threads and the UTF-16 counts go cluster by cluster, and a newline is always a
      grapheme cluster of its own (UAX #29 GB4, GB5);
    * UTF-8 bytes;
    * Threads' unique links: twitter-text's URLs hold no whitespace, and the context
      it checks around one (the character before it, the lookahead after the
      top-level domain) takes a newline as it takes the start or end of the text,
      so the URLs of the whole are those of the body and those of the tail. This
      needs the tail to start with a character that cannot come before a URL
      (``_TAIL_START``; it starts with the link, "Read more", a handle or a hashtag),
      so that its first URL is found the same either way.

    A ``shown`` ending in a line break (the body is normalized, so only in theory)
    would join the blank line; such cases check the whole text instead.
    """

    def __init__(self, rules: _Rules, text: str) -> None:
        self.rules = rules
        self.text = text
        self.length = rules.measure(text)
        self.split_safe = _TAIL_START.match(text) is not None
        self.bytes = len(text.encode("utf-8"))
        self._links: set[str] | None = None  # computed when first needed (Threads only)
        self._most_links = _most_urls(text) if rules.max_links is not None else 0
        self._shown_lengths: dict[str, int] = {}  # the chosen body was measured by a try

    def _tail_links(self) -> set[str]:
        if self._links is None:
            self._links = _link_urls(self.text)
        return self._links

    def _fits(self, length: int, size: int, shown: str) -> bool:
        """Whether a snippet of this ``length`` and ``size`` in UTF-8 bytes fits, if its
        body (prepared) is ``shown`` ("" for none)."""
        rules = self.rules
        if length > rules.limit:
            return False
        if rules.max_bytes is not None and size > rules.max_bytes:
            return False
        if rules.max_links is None:
            return True
        if self._most_links + _most_urls(shown) <= rules.max_links:
            return True  # not even the bound is over: no need to find the links
        return len(_link_urls(shown) | self._tail_links()) <= rules.max_links

    def fits_alone(self) -> bool:
        """Whether the snippet fits with no body."""
        return self._fits(self.length, self.bytes, "")

    def _additive(self, shown: str) -> bool:
        return self.split_safe and not shown.endswith(("\n", "\r"))

    def _shown_length(self, shown: str) -> int:
        length = self._shown_lengths.get(shown)
        if length is None:
            length = self._shown_lengths[shown] = self.rules.measure(shown)
        return length

    def length_after(self, shown: str) -> int:
        """``measure`` of the snippet whose (prepared) body is ``shown``."""
        if not shown:
            return self.length
        if not self._additive(shown):
            return self.rules.measure(shown + _PARAGRAPH + self.text)
        return self._shown_length(shown) + self.rules.separator + self.length

    def fits_after(self, shown: str) -> bool:
        """Whether the snippet whose (prepared) body is ``shown`` fits."""
        if not shown:
            return self.fits_alone()
        if not self._additive(shown):
            return _fits_text(self.rules, shown + _PARAGRAPH + self.text)
        length = self._shown_length(shown) + self.rules.separator + self.length
        return self._fits(length, len(shown.encode("utf-8")) + len(_PARAGRAPH) + self.bytes, shown)


@functools.lru_cache(maxsize=64)  # one post's body is fitted for several platforms
def _is_plain(body: str) -> bool:
    """Whether every rule counts each character of ``body``, and of its cuts, as 1.

    So it is for ASCII (each character its own grapheme cluster, one UTF-8 byte, and
    weighing 100 on X) that holds no carriage return (CRLF is one cluster), no "@"
    (a Mastodon mention) and nothing that may be a URL, and does not end in a line
    break (which would join the blank line after it). A cut is a prefix of the body
    plus "…", which completes no URL and joins no cluster. Most posts' text is like
    this, and then no try of a cut needs measuring.
    """
    return (
        body.isascii()
        and "\r" not in body
        and not body.endswith("\n")
        and "@" not in body
        and "://" not in body
        and _MAY_HOLD_URL.search(body) is None
    )


def _plain_measures(rules: _Rules, body_text: str) -> tuple[int, int]:
    """``measure`` and UTF-8 bytes of a plain body (``_is_plain``) or of a cut of one."""
    if body_text.endswith(ELLIPSIS):  # a cut: "…" is its one character that is not ASCII
        return len(body_text) - 1 + rules.ellipsis, len(body_text) - 1 + len(ELLIPSIS.encode("utf-8"))
    return len(body_text), len(body_text)


# An http(s) URL with a plain host name and no whitespace: the links the pipeline makes.
_PLAIN_LINK = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?(?:[/?#]\S*)?")


def _check_link(link: str) -> None:
    if _PLAIN_LINK.fullmatch(link):
        return  # no need for urlsplit's slower look
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(link.split()) != 1:
        raise ValueError(f"link must be an absolute http(s) URL without spaces, not {link!r}")


def compose(
    platform: str,
    *,
    body: str,
    link: str,
    handle: str,
    hashtags: Sequence[str],
    mastodon_limit: int = 500,
) -> Snippet:
    """Build ``platform``'s snippet: body, blank line, link, blank line, handle and hashtags.

    When the whole does not fit, only the body is cut, at a word boundary, with "…"
    appended. The link, the handle and each hashtag kept are never cut: if not even an
    empty body fits, hashtags are dropped from the end, whole, first. ``ValueError`` if
    the link and handle alone do not fit, or for a bad platform, link or limit.

    Per platform: Bluesky shows the link shortened (``bluesky_link_display``) with link
    and tag facets; Threads keeps 1 hashtag and Instagram 5, fewer if the body already
    has some; Instagram leaves the link out of the text (``note`` carries it); LinkedIn
    escapes the body and a bare handle for the "little" format but leaves the URL and
    the hashtags live; Facebook keeps the body to 500 characters.
    """
    rules = _rules(platform, mastodon_limit)
    _check_link(link)
    handle = " ".join(handle.split())
    body = _normalize_body(body)

    if isinstance(hashtags, str):
        raise TypeError("hashtags must be a sequence of tag strings, not one string")
    tags = list(_cached_hashtags(tuple(hashtags)))
    if rules.max_hashtag_chars is not None:
        tags = [tag for tag in tags if graphemes(tag) - 1 <= rules.max_hashtag_chars]
    if rules.max_hashtags is not None:
        room = max(0, rules.max_hashtags - _body_hashtags(body))
        tags = tags[:room]

    soft_cut = False
    if rules.body_soft_limit is not None:
        soft_limit = rules.body_soft_limit
        body, soft_cut = _fit_body(body, lambda text: rules.measure(text) <= soft_limit)

    if platform == "linkedin":
        handle = _linkedin_handle(handle)
        prepare: Callable[[str], str] = escape_linkedin
    else:
        prepare = str
    bluesky = platform == "bluesky"
    # Bluesky shows the link shortened; its facet points at the full URL.
    link_text, link_uri = (bluesky_link_display(link), link) if bluesky else (link, "")

    def pieces(body_text: str, kept: Sequence[str]) -> list[_Piece]:
        return _layout(platform, prepare(body_text), link_text, link_uri, handle, kept)

    kept = len(tags)
    while not (tail := _Tail(rules, _render(pieces("", tags[:kept]), with_facets=False)[0])).fits_alone():
        if kept == 0:
            raise ValueError(
                f"{platform}: the link and handle alone measure {tail.length} {rules.unit}, "
                f"over the limit of {rules.limit}"
            )
        kept -= 1
    final_tags = tags[:kept]

    # Each try of a cut body is checked from the body's measures and the tail's (_Tail).
    if prepare is str and tail.split_safe and _is_plain(body):
        # The body and each of its cuts measure their length (see _is_plain) and hold no
        # link, so whether one fits is arithmetic: the tail's links already fit (above).
        length_room = rules.limit - rules.separator - tail.length
        byte_room = None if rules.max_bytes is None else rules.max_bytes - len(_PARAGRAPH) - tail.bytes

        def fits(body_text: str) -> bool:
            length, size = _plain_measures(rules, body_text)
            return length <= length_room and (byte_room is None or size <= byte_room)

        body_text, cut = _fit_body(body, fits)
        shown = body_text
        length = tail.length if not shown else _plain_measures(rules, shown)[0] + rules.separator + tail.length
    else:
        body_text, cut = _fit_body(body, lambda b: tail.fits_after(prepare(b)))
        shown = prepare(body_text)
        length = tail.length_after(shown)
    facets: tuple[Facet, ...] = ()
    if bluesky:
        text, facets = _render(pieces(body_text, final_tags), with_facets=True)
        facets = _body_link_facets(text, shown) + facets
    else:
        text = shown + _PARAGRAPH + tail.text if shown else tail.text  # as _layout joins its blocks
    return Snippet(
        platform=platform,
        text=text,
        length=length,
        limit=rules.limit,
        unit=rules.unit,
        link_in_text=platform != "instagram",
        note=f"link in bio: {link}" if platform == "instagram" else "",
        facets=facets,
        bytes=len(text.encode("utf-8")) if bluesky else None,
        truncated=soft_cut or cut,
        hashtags=tuple(final_tags),
    )


def _body_link_facets(text: str, body_text: str) -> tuple[Facet, ...]:
    """Link facets for the http(s) URLs written in the body, which starts the text."""
    if not body_text:
        return ()
    assert text.startswith(body_text)
    facets: list[Facet] = []
    for entity in _urls(body_text, False):
        start, end = (int(i) for i in entity["indices"])
        byte_start = len(body_text[:start].encode("utf-8"))
        byte_end = byte_start + len(body_text[start:end].encode("utf-8"))
        facets.append(Facet(byte_start, byte_end, uri=str(entity["url"])))
    return tuple(facets)

"""Per-platform length rules: how each platform counts a text, and its limits.

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
linkedin   3000                 UTF-16 code units
facebook   63206                UTF-16 code units; the body is kept to 500
instagram  2200                 UTF-16 code units; at most 5 hashtags; no link
=========  ===================  ==================================================

Sources:

* X: twitter-text config v3 (``twitter_text.config``, ``max_weighted_tweet_length``
  280, ``transformed_url_length`` 23, weight 100 for U+0000-U+10FF, U+2000-U+200D,
  U+2010-U+201F, U+2032-U+2037, 200 for everything else, an emoji 200, scale 100)
  and its ``parse_tweet`` counting loop. The twitter-text-parser package ships
  emoji data from Unicode 12 (``regexp/emoji-test.txt``), so it counts newer ZWJ
  sequences such as U+1F9D1 U+200D U+1F384 as 5 instead of 2. Handles are at most
  15 characters (checked in the settings).
* Mastodon: ``app/validators/status_length_validator.rb`` (``countable_length`` is
  ``str.each_grapheme_cluster.size``; ``countable_text`` rewrites each entity from
  ``Extractor.extract_urls_with_indices(str, extract_url_without_protocol: false)``
  to ``'x' * 23`` and each mention to ``"@#{screen_name.split('@').first}"``);
  the mention pattern is ``Account::MENTION_RE`` in ``app/models/account.rb``.
  The limit is a per-server setting (``configuration.statuses.max_characters``),
  read from the server's instance information when posting.
* Bluesky: lexicon ``app.bsky.feed.post`` (``text``: ``maxGraphemes`` 300,
  ``maxLength`` 3000; in Lexicon a string's ``maxLength`` counts UTF-8 bytes) and
  ``app.bsky.richtext.facet`` (see ``pipeline.channels.social.facets``).
* Threads: Meta's Threads API docs, "Posts" ("Text posts are limited to 500
  characters. Emojis are counted as the number of UTF-8 bytes.") and "Text
  attachments" ("The number of links is restricted to 5 or fewer"; "All unique URLs
  found in the text field are counted as links"); one tag per post.
* LinkedIn: 3,000 characters for a post's commentary. The text we write is meant to
  be pasted into LinkedIn's composer, which takes plain text: the backslash escapes
  of its API's "little" format would show there, so none are added.
* Instagram: captions of 2,200 characters; Instagram Help now allows 5 hashtags per
  post (it was 30); a link in a caption is not clickable.
* Facebook: 63,206 characters per post.

"Characters" on LinkedIn, Facebook and Instagram are counted as UTF-16 code units
(an emoji outside the BMP counts 2), which is what a JavaScript or Java ``length``
returns and is never lower than a code-point count, so we never overshoot.
"""

from __future__ import annotations

import functools
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import regex

from pipeline.config import PLATFORMS

with warnings.catch_warnings():
    # twitter-text-parser imports pkg_resources, which setuptools 80 warns about on every
    # import; the warning is for twitter-text's maintainers, not for the clinic's staff
    # (pyproject.toml pins setuptools below 81, the release that removed it).
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from twitter_text import extract_urls_with_indices
    from twitter_text.config import config as _twitter_text_config
    from twitter_text.get_character_weight import get_character_weight

BLUESKY_MAX_BYTES: Final = 3000
FACEBOOK_BODY_SOFT_LIMIT: Final = 500
THREADS_MAX_LINKS: Final = 5

_GRAPHEME = regex.compile(r"\X")
# A grapheme cluster is an emoji sequence when it holds an Extended_Pictographic
# code point (every emoji, ZWJ sequences and tag sequences included), a keycap
# (U+20E3), or a pair of regional indicators (a flag).
_EMOJI_PART = regex.compile(r"\p{Extended_Pictographic}|\u20e3|\p{Regional_Indicator}{2}")
_NEWLINES = regex.compile(r"\r\n|\r")


def graphemes(text: str) -> int:
    """Number of extended grapheme clusters (user-perceived characters) in ``text``."""
    if text.isascii():
        return len(text) - text.count("\r\n")  # one cluster per character, CRLF one
    return len(_GRAPHEME.findall(text))


def urls_in(text: str, without_protocol: bool = True) -> list[dict[str, Any]]:
    """twitter-text's URL entities of ``text`` (``url`` and ``indices``)."""
    return list(extract_urls_with_indices(text, without_protocol))


def _is_emoji(cluster: str) -> bool:
    return _EMOJI_PART.search(cluster) is not None


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- X

_X_OPTIONS: Final[dict[str, Any]] = _twitter_text_config["defaults"]  # config v3
_X_SCALE: Final = int(_X_OPTIONS["scale"])
_X_URL_WEIGHT: Final = int(_X_OPTIONS["transformed_url_length"]) * _X_SCALE
_X_EMOJI_WEIGHT: Final = int(_X_OPTIONS["default_weight"])


@functools.lru_cache(maxsize=4096)
def _x_char_weight(char: str) -> int:
    return int(get_character_weight(char, _X_OPTIONS))


# Every ASCII code point lies in the first range of weight 100 (config v3).
_X_ASCII_WEIGHT: Final = int(get_character_weight("a", _X_OPTIONS))


def _x_plain_weight(text: str) -> int:
    # Weighing cluster by cluster is most of a cold build's time, and needed only where a
    # cluster may be an emoji: without an emoji part anywhere, each code point weighs its
    # own (an emoji part inside a cluster is also one in the whole text, so this is exact).
    if text.isascii():
        return len(text) * _X_ASCII_WEIGHT
    if _EMOJI_PART.search(text) is None:
        return sum(_x_char_weight(char) for char in text)
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
    for entity in urls_in(normalized):
        start, end = (int(i) for i in entity["indices"])
        total += _x_plain_weight(normalized[position:start]) + _X_URL_WEIGHT
        position = end
    total += _x_plain_weight(normalized[position:])
    return total // _X_SCALE


# --------------------------------------------------------------------------- Mastodon

_MASTODON_URL_CHARS: Final = 23
# Account::MENTION_RE: (?<![=/[:word:]])@((USERNAME_RE)(?:@[[:word:]]+([.-]+[[:word:]]+)*)?)
# with USERNAME_RE = /[a-z0-9_]+([.-]+[a-z0-9_]+)*/i
MASTODON_MENTION = regex.compile(
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
    for entity in urls_in(text, False):  # extract_url_without_protocol: false
        start, end = (int(i) for i in entity["indices"])
        entities.append((start, end, "x" * _MASTODON_URL_CHARS))
    for match in MASTODON_MENTION.finditer(text):
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


def _mastodon_length(text: str) -> int:
    return graphemes(_mastodon_countable(text))


# --------------------------------------------------------------------------- Threads


def _threads_length(text: str) -> int:
    if _EMOJI_PART.search(text) is None:  # no cluster is an emoji (see _x_plain_weight)
        return utf16_units(text)
    total = 0
    for match in _GRAPHEME.finditer(text):
        cluster: str = match.group()
        total += len(cluster.encode("utf-8")) if _is_emoji(cluster) else utf16_units(cluster)
    return total


def link_urls(text: str) -> set[str]:
    """Threads: "All unique URLs found in the text field are counted as links"."""
    return {str(entity["url"]) for entity in urls_in(text)}


# --------------------------------------------------------------------------- the rules table

_UTF16_UNIT = "characters (UTF-16 code units)"


@dataclass(frozen=True)
class Rules:
    """One platform's limits and its way of measuring a text."""

    platform: str
    limit: int
    unit: str
    measure: Callable[[str], int]
    max_hashtags: int | None = None
    max_hashtag_chars: int | None = None
    max_links: int | None = None
    max_bytes: int | None = None
    body_soft_limit: int | None = None

    def length_if_fits(self, text: str) -> int | None:
        """``text``'s measured length when it is within all of the platform's limits, else
        None (the length comes back so that a snippet is measured once, not twice)."""
        length = self.measure(text)
        if length > self.limit:
            return None
        if self.max_bytes is not None and len(text.encode("utf-8")) > self.max_bytes:
            return None
        if self.max_links is not None and len(link_urls(text)) > self.max_links:
            return None
        return length


def rules_for(platform: str, mastodon_limit: int = 500) -> Rules:
    if isinstance(mastodon_limit, bool) or not isinstance(mastodon_limit, int) or mastodon_limit < 1:
        raise ValueError(f"mastodon_limit must be a positive integer, not {mastodon_limit!r}")
    if platform == "x":
        return Rules(platform, 280, "weighted characters", _x_weight)
    if platform == "mastodon":
        return Rules(platform, mastodon_limit, "graphemes", _mastodon_length)
    if platform == "bluesky":
        return Rules(platform, 300, "graphemes", graphemes, max_hashtag_chars=64, max_bytes=BLUESKY_MAX_BYTES)
    if platform == "threads":
        return Rules(
            platform,
            500,
            "characters (an emoji counts its UTF-8 bytes)",
            _threads_length,
            max_hashtags=1,
            max_hashtag_chars=50,
            max_links=THREADS_MAX_LINKS,
        )
    if platform == "linkedin":
        return Rules(platform, 3000, _UTF16_UNIT, utf16_units)
    if platform == "facebook":
        return Rules(platform, 63206, _UTF16_UNIT, utf16_units, body_soft_limit=FACEBOOK_BODY_SOFT_LIMIT)
    if platform == "instagram":
        return Rules(platform, 2200, _UTF16_UNIT, utf16_units, max_hashtags=5)
    raise ValueError(f"unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")


def measure(platform: str, text: str, *, mastodon_limit: int = 500) -> int:
    """Length of ``text`` as ``platform`` counts it against ``limit_for(platform)``.

    Bluesky's answer is graphemes; its second limit, UTF-8 bytes, is ``len(text.encode())``.
    """
    return rules_for(platform, mastodon_limit).measure(text)


def limit_for(platform: str, *, mastodon_limit: int = 500) -> int:
    """The platform's text limit, in the unit ``measure`` returns."""
    return rules_for(platform, mastodon_limit).limit

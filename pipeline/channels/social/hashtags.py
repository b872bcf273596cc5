"""Tags -> hashtags, and the hashtags a text already holds."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import regex

_TAG_WORD = regex.compile(r"[\p{L}\p{M}\p{Nd}]+")
_APOSTROPHES = regex.compile(r"['’ʼ]")
_HAS_LETTER = regex.compile(r"\p{L}")
# A hashtag already in a text (twitter-text style: needs a letter, not after a word char or &).
BODY_HASHTAG = regex.compile(r"(?<![\w&#＃])[#＃](?=[\p{L}\p{M}\p{Nd}_]*\p{L})[\p{L}\p{M}\p{Nd}_]+")


def hashtags_in(text: str) -> int:
    return len(BODY_HASHTAG.findall(text))


@functools.lru_cache(maxsize=1024)  # a clinic's posts share a few dozen tags; each is made once
def _hashtag_name(tag: str) -> str:
    """The hashtag's name for ``tag``, as ``make_hashtags`` makes it, or "" with no letter."""
    words = _TAG_WORD.findall(_APOSTROPHES.sub("", unicodedata.normalize("NFC", tag)))
    name = "".join(word[:1].upper() + word[1:] for word in words)
    return name if _HAS_LETTER.search(name) else ""


def make_hashtags(tags: Sequence[str]) -> list[str]:
    """Tag strings -> hashtags: "phantom limb pain" -> "#PhantomLimbPain".

    Words are the runs of letters, marks and digits; each word's first letter is
    upper-cased and the rest kept ("ACL tear" -> "#ACLTear"). Everything else is
    dropped (apostrophes first, so "women's health" -> "#WomensHealth"); underscores
    are dropped too. A tag with no letter ("2024") makes no hashtag, as on X.
    Duplicates are dropped case-insensitively, first one kept.
    """
    if isinstance(tags, str):
        raise TypeError("hashtags must be a sequence of tag strings, not one string")
    result: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        name = _hashtag_name(tag)
        if not name:
            continue
        key = name.casefold()
        if key not in seen:
            seen.add(key)
            result.append("#" + name)
    return result

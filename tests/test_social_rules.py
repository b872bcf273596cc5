"""Tests for pipeline.channels.social.measure and hashtags: how each platform counts a text."""

from __future__ import annotations

import pytest
from twitter_text import parse_tweet

from pipeline.channels.social.hashtags import make_hashtags
from pipeline.channels.social.measure import graphemes, limit_for, measure

LINK = (
    "https://jamesonprosthetics.com/archive/botox-for-limb-pain-what-the-evidence-says"
    "?utm_source=social&utm_medium=social&utm_campaign=botox-for-limb-pain"
)
HANDLES = {
    "x": "@JamesonProsth",
    "mastodon": "@JamesonProsthetics@mastodon.social",
    "bluesky": "@jamesonprosthetics.bsky.social",
    "threads": "@jamesonprosthetics",
    "linkedin": "@JamesonProsthetics",
    "facebook": "@JamesonProsthetics",
    "instagram": "@jamesonprosthetics",
}
TAGS = ["phantom limb pain", "botox", "amputee life"]
HASHTAGS = ["#PhantomLimbPain", "#Botox", "#AmputeeLife"]

# Newer emoji that twitter-text-parser's Unicode 12 data gets wrong, and older sequences.
EMOJI = {
    "santa (ZWJ, Unicode 13)": "\U0001f9d1\u200d\U0001f384",
    "heart on fire (ZWJ, Unicode 13.1)": "\u2764\ufe0f\u200d\U0001f525",
    "health worker, medium skin": "\U0001f469\U0001f3fd\u200d\u2695\ufe0f",
    "flag US": "\U0001f1fa\U0001f1f8",
    "keycap 1": "1\ufe0f\u20e3",
    "melting face (Unicode 14)": "\U0001fae0",
    "family": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "flag Scotland (tag sequence)": "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
}
FAMILY = EMOJI["family"]
SANTA = EMOJI["santa (ZWJ, Unicode 13)"]

WORDS = ["prosthetic", "socket", "liner", "gait", "comfort", "fitting", "residual", "limb", "care", "a"]


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("platform", "limit"),
    [
        ("x", 280),
        ("mastodon", 500),
        ("bluesky", 300),
        ("threads", 500),
        ("linkedin", 3000),
        ("facebook", 63206),
        ("instagram", 2200),
    ],
)
def test_limit_for(platform: str, limit: int) -> None:
    assert limit_for(platform) == limit


def test_mastodon_limit_is_per_server() -> None:
    assert limit_for("mastodon", mastodon_limit=11000) == 11000
    assert limit_for("x", mastodon_limit=11000) == 280
    with pytest.raises(ValueError, match="mastodon_limit"):
        limit_for("mastodon", mastodon_limit=0)


def test_unknown_platform_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown platform 'tiktok'"):
        measure("tiktok", "hi")


# --------------------------------------------------------------------------- X weighting


@pytest.mark.parametrize("name", sorted(EMOJI))
def test_x_counts_every_emoji_sequence_as_two(name: str) -> None:
    emoji = EMOJI[name]
    assert measure("x", emoji) == 2
    assert measure("x", f"Hi {emoji}!") == 6
    assert measure("x", emoji * 10) == 20


def test_x_fixes_twitter_text_unicode12_emoji() -> None:
    # The package weighs the parts of a ZWJ sequence it does not know (2 + 1 + 2);
    # if it ever learns them, the two must agree.
    for emoji in (SANTA, EMOJI["heart on fire (ZWJ, Unicode 13.1)"]):
        assert parse_tweet(emoji).weightedLength in (2, 5)
        assert measure("x", emoji) == 2


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII text",
        "english text 日本語 😷 https://example.com",
        "한국어 텍스트 and Кириллица",
        "curly “quotes” – dashes — and … ellipsis",
        "café e\u0301 NFC",
        "👍🏽 🇬🇧 👨\u200d👩\u200d👧 #️⃣ © ®",
        "two urls https://a.example/x and jamesonprosthetics.com/archive plus @mention",
        "line\r\nendings\rmixed\n",
        "https://example.com/" + "p" * 300,
    ],
)
def test_x_agrees_with_twitter_text_where_its_data_is_current(text: str) -> None:
    assert measure("x", text) == parse_tweet(text).weightedLength


def test_x_cjk_counts_two_latin_one() -> None:
    assert measure("x", "中文") == 4
    assert measure("x", "日本語のテキスト") == 16
    assert measure("x", "abc") == 3
    assert measure("x", "…") == 2  # U+2026 lies outside twitter-text's weight-1 ranges


def test_long_urls_count_23_on_x_and_mastodon() -> None:
    url = "https://jamesonprosthetics.com/" + "a" * 169
    assert len(url) == 200
    assert measure("x", url) == 23
    assert measure("mastodon", url) == 23
    assert measure("x", f"Read {url} now") == 5 + 23 + 4
    assert measure("mastodon", f"Read {url} now") == 5 + 23 + 4
    assert measure("bluesky", url) == 200


# --------------------------------------------------------------------------- Mastodon


def test_mastodon_counts_a_mention_as_its_user_part() -> None:
    assert measure("mastodon", "@JamesonProsthetics@mastodon.social") == len("@JamesonProsthetics")
    assert measure("mastodon", "Thanks (@gait.lab@example.org)!") == len("Thanks (@gait.lab)!")
    # Not mentions: an e-mail address, and a profile URL (which is a URL).
    assert measure("mastodon", "mail clinic@example.org") == len("mail clinic@example.org")
    assert measure("mastodon", "see https://mastodon.social/@Gargron") == 4 + 23


def test_mastodon_only_gives_urls_with_a_scheme_the_23_discount() -> None:
    assert measure("mastodon", "jamesonprosthetics.com") == 22
    assert measure("x", "jamesonprosthetics.com") == 23
    assert measure("mastodon", "http://a.co") == 23


def test_mastodon_counts_grapheme_clusters() -> None:
    assert measure("mastodon", FAMILY) == 1
    assert measure("mastodon", "e\u0301") == 1
    assert measure("mastodon", "中文") == 2


# --------------------------------------------------------------------------- other measures


def test_bluesky_measures_graphemes() -> None:
    assert measure("bluesky", FAMILY) == 1
    assert len(FAMILY.encode()) == 25
    assert measure("bluesky", "e\u0301 中文 😷") == 6
    assert graphemes(FAMILY * 3 + " a") == 5


def test_threads_counts_emoji_as_utf8_bytes() -> None:
    assert measure("threads", "abc") == 3
    assert measure("threads", "😷") == 4
    assert measure("threads", SANTA) == 11
    assert measure("threads", FAMILY) == 25
    assert measure("threads", "中文") == 2
    assert measure("threads", "café “ok” 中文") == 12  # no emoji: one per UTF-16 unit
    assert measure("threads", "é 😷") == 6


@pytest.mark.parametrize("platform", ["linkedin", "facebook", "instagram"])
def test_utf16_platforms(platform: str) -> None:
    assert measure(platform, "abc") == 3
    assert measure(platform, "😷") == 2
    assert measure(platform, "中文") == 2
    assert measure(platform, FAMILY) == 11


# --------------------------------------------------------------------------- hashtags


def test_make_hashtags() -> None:
    assert make_hashtags(
        [
            "phantom limb pain",
            "Phantom-Limb Pain",  # duplicate, case-insensitively
            "ACL tear",
            "women's health",
            "C++ / prosthetics!",
            "3D printing",
            "2024",  # no letter: not a hashtag
            "#already_tagged",
            "prótesis",
            "",
        ]
    ) == [
        "#PhantomLimbPain",
        "#ACLTear",
        "#WomensHealth",
        "#CProsthetics",
        "#3DPrinting",
        "#AlreadyTagged",
        "#Prótesis",
    ]


def test_make_hashtags_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        make_hashtags("phantom limb pain")

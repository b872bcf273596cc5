"""Tests for pipeline.channels.social.rules: platform length rules and snippet composition."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest
from twitter_text import extract_urls, parse_tweet

from pipeline import config
from pipeline.channels.social.rules import (
    PLATFORMS,
    Facet,
    Snippet,
    bluesky_link_display,
    compose,
    escape_linkedin,
    graphemes,
    limit_for,
    make_hashtags,
    measure,
)

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


def words_of_length(n: int) -> str:
    """ASCII words separated by single spaces, exactly ``n`` characters long."""
    out = ""
    for word in itertools.cycle(WORDS):
        candidate = f"{out} {word}" if out else word
        if len(candidate) > n - 2:  # leave room so the last word can be padded
            break
        out = candidate
    out = f"{out} " if out else ""
    return out + "s" * (n - len(out))


def split_body(snippet: Snippet, rest: str) -> str:
    """The body part of a snippet whose text is ``body + "\\n\\n" + rest``."""
    assert snippet.text.endswith("\n\n" + rest), snippet.text
    return snippet.text[: -len("\n\n" + rest)]


def assert_word_boundary_cut(original: str, shown: str) -> str:
    assert shown.endswith("…")
    stem = shown[:-1]
    assert stem, "the body was dropped instead of cut"
    assert original.startswith(stem)
    assert original[len(stem)] in " \n.,;:", f"cut inside a word: {original[len(stem) - 5 : len(stem) + 5]!r}"
    return stem


# --------------------------------------------------------------------------- limits


def test_platforms_match_the_settings_module() -> None:
    assert PLATFORMS == config.PLATFORMS


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
    with pytest.raises(ValueError, match="unknown platform"):
        compose("myspace", body="b", link=LINK, handle="@h", hashtags=[])


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


# --------------------------------------------------------------------------- at and around the limit


def empty_body_text(platform: str, *, mastodon_limit: int = 500) -> str:
    return compose(
        platform, body="", link=LINK, handle=HANDLES[platform], hashtags=TAGS, mastodon_limit=mastodon_limit
    ).text


@pytest.mark.parametrize(
    ("platform", "mastodon_limit"),
    [
        ("x", 500),
        ("mastodon", 500),
        ("mastodon", 180),
        ("bluesky", 500),
        ("threads", 500),
        ("linkedin", 500),
        ("instagram", 500),
    ],
)
def test_exactly_at_the_limit_and_one_over(platform: str, mastodon_limit: int) -> None:
    limit = limit_for(platform, mastodon_limit=mastodon_limit)
    rest = empty_body_text(platform, mastodon_limit=mastodon_limit)
    room = limit - measure(platform, rest, mastodon_limit=mastodon_limit) - 2  # the blank line takes 2
    body = words_of_length(room)

    at = compose(platform, body=body, link=LINK, handle=HANDLES[platform], hashtags=TAGS, mastodon_limit=mastodon_limit)
    assert at.text == f"{body}\n\n{rest}"
    assert at.length == limit
    assert not at.truncated

    longer = body + "s"  # one more character, in the last word
    over = compose(
        platform, body=longer, link=LINK, handle=HANDLES[platform], hashtags=TAGS, mastodon_limit=mastodon_limit
    )
    assert over.truncated
    assert over.length <= limit
    assert over.length == measure(platform, over.text, mastodon_limit=mastodon_limit)
    shown = split_body(over, rest)  # link, handle and every hashtag intact, unchanged
    stem = assert_word_boundary_cut(longer, shown)
    # The cut is the longest that fits: one more word would not.
    next_end = longer.find(" ", len(stem) + 1)
    next_end = len(longer) if next_end < 0 else next_end
    bigger = f"{longer[:next_end]}…\n\n{rest}"
    assert measure(platform, bigger, mastodon_limit=mastodon_limit) > limit


def test_every_kept_piece_is_whole_after_truncation() -> None:
    body = words_of_length(4000)
    for platform in PLATFORMS:
        snippet = compose(platform, body=body, link=LINK, handle=HANDLES[platform], hashtags=TAGS)
        assert snippet.truncated
        assert snippet.length <= snippet.limit
        if platform in ("x", "mastodon", "threads", "linkedin", "facebook"):
            assert LINK in snippet.text
        handle = escape_linkedin(HANDLES[platform]) if platform == "linkedin" else HANDLES[platform]
        assert handle in snippet.text
        expected_tags = HASHTAGS[:1] if platform == "threads" else HASHTAGS
        assert snippet.hashtags == tuple(expected_tags)
        for tag in expected_tags:
            assert re.search(re.escape(tag) + r"(\s|$)", snippet.text), (platform, tag)


def test_hashtags_are_dropped_whole_from_the_end_when_even_an_empty_body_does_not_fit() -> None:
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
    tags = [f"prosthetic topic number {word}" for word in words]
    hashtags = make_hashtags(tags)
    snippet = compose(
        "x", body="A short body that will not survive.", link=LINK, handle="@JamesonProsth", hashtags=tags
    )
    kept = len(snippet.hashtags)
    assert 0 < kept < len(hashtags)
    assert snippet.hashtags == tuple(hashtags[:kept])
    assert snippet.text.split("\n\n")[-1] == " ".join(["@JamesonProsth", *hashtags[:kept]])
    assert snippet.length <= 280
    # One more hashtag would not have fitted even with no body at all.
    assert measure("x", f"{LINK}\n\n@JamesonProsth {' '.join(hashtags[: kept + 1])}") > 280


def test_link_and_handle_that_cannot_fit_raise() -> None:
    with pytest.raises(ValueError, match="link and handle alone"):
        compose("x", body="body", link=LINK, handle="@" + "a" * 260, hashtags=TAGS)
    with pytest.raises(ValueError, match="link and handle alone"):
        compose("mastodon", body="body", link=LINK, handle="@" + "a" * 100, hashtags=[], mastodon_limit=100)


def test_bad_links_are_rejected() -> None:
    for link in ("jamesonprosthetics.com/archive", "ftp://jamesonprosthetics.com/x", "https://", "https://a.com/x y"):
        with pytest.raises(ValueError, match="link must be"):
            compose("x", body="b", link=link, handle="@h", hashtags=[])


def test_punctuation_before_the_ellipsis_is_dropped() -> None:
    body = ", ".join(["prosthetic"] * 60)
    snippet = compose("x", body=body, link=LINK, handle="@JamesonProsth", hashtags=[])
    shown = split_body(snippet, f"{LINK}\n\n@JamesonProsth")
    assert shown.endswith("prosthetic…")
    assert body.startswith(shown[:-1] + ", ")


def test_x_truncation_never_splits_an_emoji_sequence() -> None:
    body = " ".join([SANTA] * 200)
    snippet = compose("x", body=body, link=LINK, handle="@JamesonProsth", hashtags=[])
    assert snippet.length <= 280
    assert snippet.length >= 280 - 3  # only whole "🧑‍🎄 " steps of 3 are lost
    stem = assert_word_boundary_cut(body, split_body(snippet, f"{LINK}\n\n@JamesonProsth"))
    assert set(stem.split(" ")) == {SANTA}


def test_x_cjk_body_is_cut_between_characters() -> None:
    body = "義足のソケットの適合について" * 30  # no spaces at all
    snippet = compose("x", body=body, link=LINK, handle="@JamesonProsth", hashtags=[])
    shown = split_body(snippet, f"{LINK}\n\n@JamesonProsth")
    assert shown.endswith("…")
    assert body.startswith(shown[:-1])
    assert 280 - 2 <= snippet.length <= 280


def test_a_single_overlong_word_is_cut_inside_as_a_last_resort() -> None:
    body = "a" * 400
    snippet = compose("x", body=body, link=LINK, handle="@JamesonProsth", hashtags=[])
    shown = split_body(snippet, f"{LINK}\n\n@JamesonProsth")
    assert re.fullmatch(r"a+…", shown)
    assert snippet.length in (279, 280)


def test_body_whitespace_is_tidied() -> None:
    snippet = compose(
        "x", body="  Title\r\n\r\n\r\n  Summary\twith   spaces \x07 ", link=LINK, handle="@JamesonProsth", hashtags=[]
    )
    assert snippet.text.startswith("Title\n\nSummary with spaces\n\n")


# --------------------------------------------------------------------------- URLs


def test_a_200_character_link_counts_23() -> None:
    link = "https://jamesonprosthetics.com/archive/" + "botox-for-limb-pain-" * 8 + "x" * 1
    assert len(link) == 200
    x = compose("x", body="", link=link, handle="@JamesonProsth", hashtags=["phantom limb pain"])
    assert x.text == f"{link}\n\n@JamesonProsth #PhantomLimbPain"
    assert x.length == 23 + 2 + len("@JamesonProsth #PhantomLimbPain")
    mastodon = compose("mastodon", body="", link=link, handle=HANDLES["mastodon"], hashtags=["phantom limb pain"])
    assert mastodon.length == 23 + 2 + len("@JamesonProsthetics #PhantomLimbPain")


def test_mastodon_snippet_length_counts_the_handle_as_user_only() -> None:
    body = words_of_length(1000)
    snippet = compose("mastodon", body=body, link=LINK, handle=HANDLES["mastodon"], hashtags=TAGS)
    assert 500 - len("residual ") <= snippet.length <= 500
    assert len(snippet.text) == snippet.length + len("@mastodon.social") + len(LINK) - 23


# --------------------------------------------------------------------------- Bluesky


def test_bluesky_link_display() -> None:
    assert bluesky_link_display(LINK) == "jamesonprosthetics.com/archive/botox-for-limb-pain…"
    assert bluesky_link_display("https://www.Example.org/?utm_source=x") == "example.org"
    assert bluesky_link_display("https://example.org/short/path?q=1#f") == "example.org/short/path"
    assert bluesky_link_display("http://example.org:8080/" + "x" * 40) == "example.org:8080/" + "x" * 29 + "…"


def test_bluesky_link_facet_points_at_the_shortened_text() -> None:
    body = "Botox & limb pain — 義足 🧑\u200d🎄 what the evidence says"
    snippet = compose("bluesky", body=body, link=LINK, handle=HANDLES["bluesky"], hashtags=TAGS)
    data = snippet.text.encode("utf-8")
    links = [f for f in snippet.facets if f.uri]
    assert len(links) == 1
    (link,) = links
    assert data[link.byte_start : link.byte_end].decode() == "jamesonprosthetics.com/archive/botox-for-limb-pain…"
    assert link.uri == LINK
    assert LINK not in snippet.text
    assert link.as_record() == {
        "index": {"byteStart": link.byte_start, "byteEnd": link.byte_end},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": LINK}],
    }
    # The byte offsets are not character offsets: the body has multi-byte text before the link.
    assert link.byte_start != snippet.text.index("jamesonprosthetics.com/archive")
    tags = [f for f in snippet.facets if f.tag]
    assert [f.tag for f in tags] == ["PhantomLimbPain", "Botox", "AmputeeLife"]
    for facet in tags:
        assert data[facet.byte_start : facet.byte_end].decode() == "#" + facet.tag
        assert facet.as_record()["features"] == [{"$type": "app.bsky.richtext.facet#tag", "tag": facet.tag}]
    assert snippet.bytes == len(data)
    assert snippet.length == graphemes(snippet.text)


def test_bluesky_urls_in_the_body_get_link_facets_too() -> None:
    snippet = compose(
        "bluesky",
        body="Study: https://pubmed.ncbi.nlm.nih.gov/123 (2024).",
        link=LINK,
        handle=HANDLES["bluesky"],
        hashtags=[],
    )
    first = snippet.facets[0]
    assert first.uri == "https://pubmed.ncbi.nlm.nih.gov/123"
    assert snippet.text.encode()[first.byte_start : first.byte_end] == b"https://pubmed.ncbi.nlm.nih.gov/123"
    assert [f.uri for f in snippet.facets] == ["https://pubmed.ncbi.nlm.nih.gov/123", LINK]


def test_bluesky_grapheme_limit() -> None:
    snippet = compose("bluesky", body=words_of_length(1000), link=LINK, handle=HANDLES["bluesky"], hashtags=TAGS)
    assert snippet.truncated
    assert 290 < snippet.length <= 300
    assert snippet.bytes is not None and snippet.bytes < 3000


def test_bluesky_byte_limit_hits_before_the_grapheme_limit() -> None:
    # A family emoji is 1 grapheme but 25 UTF-8 bytes: 3000 bytes come long before 300 graphemes.
    word = FAMILY * 5
    body = " ".join([word] * 40)
    assert graphemes(body) < 300
    assert len(body.encode()) > 3000
    snippet = compose("bluesky", body=body, link=LINK, handle=HANDLES["bluesky"], hashtags=[])
    assert snippet.truncated
    assert snippet.bytes is not None
    assert 3000 - len(word.encode()) - 1 < snippet.bytes <= 3000  # within one word of the byte limit
    assert snippet.length < 250  # far from the grapheme limit
    assert snippet.length == graphemes(snippet.text)
    stem = assert_word_boundary_cut(body, snippet.text.split("\n\n")[0])
    assert set(stem.split(" ")) == {word}
    data = snippet.text.encode()
    (link,) = (f for f in snippet.facets if f.uri)
    assert data[link.byte_start : link.byte_end].decode() == bluesky_link_display(LINK)


def test_facet_validation() -> None:
    with pytest.raises(ValueError):
        Facet(5, 5, uri=LINK)
    with pytest.raises(ValueError):
        Facet(0, 4)
    with pytest.raises(ValueError):
        Facet(0, 4, uri=LINK, tag="Botox")


# --------------------------------------------------------------------------- Threads


def test_threads_keeps_only_the_first_hashtag() -> None:
    snippet = compose("threads", body="Body.", link=LINK, handle=HANDLES["threads"], hashtags=TAGS)
    assert snippet.hashtags == ("#PhantomLimbPain",)
    assert snippet.text.endswith("@jamesonprosthetics #PhantomLimbPain")
    assert "#Botox" not in snippet.text


def test_threads_counts_a_hashtag_already_in_the_body() -> None:
    snippet = compose("threads", body="Life as an #amputee.", link=LINK, handle=HANDLES["threads"], hashtags=TAGS)
    assert snippet.hashtags == ()
    assert snippet.text.endswith("\n\n@jamesonprosthetics")


def test_threads_allows_at_most_five_links() -> None:
    body = " ".join(f"Source {i}: https://study{i}.org/paper." for i in range(1, 8))
    snippet = compose("threads", body=body, link=LINK, handle=HANDLES["threads"], hashtags=TAGS)
    assert snippet.truncated
    assert len(set(extract_urls(snippet.text))) == 5
    assert LINK in snippet.text
    assert "https://study4.org/paper" in snippet.text
    assert "study5" not in snippet.text


def test_threads_emoji_bytes_drive_truncation() -> None:
    body = " ".join([SANTA] * 100)  # 11 per emoji on Threads, 1 per space
    snippet = compose("threads", body=body, link=LINK, handle=HANDLES["threads"], hashtags=[])
    assert snippet.truncated
    assert 500 - 12 <= snippet.length <= 500
    assert snippet.text.split("\n\n")[0].count(SANTA) < 45


# --------------------------------------------------------------------------- Instagram


def test_instagram_keeps_five_hashtags_and_no_link() -> None:
    tags = ["one tag", "two tag", "three tag", "four tag", "five tag", "six tag", "seven tag"]
    snippet = compose("instagram", body="New article.", link=LINK, handle=HANDLES["instagram"], hashtags=tags)
    assert snippet.hashtags == ("#OneTag", "#TwoTag", "#ThreeTag", "#FourTag", "#FiveTag")
    assert "#SixTag" not in snippet.text
    assert "http" not in snippet.text
    assert "jamesonprosthetics.com" not in snippet.text
    assert snippet.text.endswith("\n\nLink in bio.")
    assert snippet.link_in_text is False
    assert snippet.note == f"link in bio: {LINK}"
    assert snippet.limit == 2200


def test_instagram_hashtags_in_the_body_count_towards_five() -> None:
    tags = ["one tag", "two tag", "three tag", "four tag", "five tag"]
    snippet = compose("instagram", body="#Prosthetics and #gait.", link=LINK, handle="@j", hashtags=tags)
    assert snippet.hashtags == ("#OneTag", "#TwoTag", "#ThreeTag")


def test_other_platforms_put_the_link_in_the_text() -> None:
    for platform in PLATFORMS:
        snippet = compose(platform, body="b", link=LINK, handle="@j", hashtags=[])
        assert snippet.link_in_text is (platform != "instagram")
        assert (snippet.note == "") is (platform != "instagram")


# --------------------------------------------------------------------------- LinkedIn


def test_linkedin_escapes_reserved_characters_in_the_body_only() -> None:
    body = "Use (a) [b] {c} <d> #e @f *g* _h_ ~i~ | \\ end."
    snippet = compose("linkedin", body=body, link=LINK, handle=HANDLES["linkedin"], hashtags=TAGS)
    assert snippet.text == (
        "Use \\(a\\) \\[b\\] \\{c\\} \\<d\\> \\#e \\@f \\*g\\* \\_h\\_ \\~i\\~ \\| \\\\ end.\n\n"
        f"Read more: {LINK}\n\n"  # the URL, underscores and all, is left as it is
        "Follow us \\@JamesonProsthetics for more. #PhantomLimbPain #Botox #AmputeeLife"
    )
    assert snippet.length == len(snippet.text)


def test_linkedin_passes_a_real_mention_through() -> None:
    mention = "@[Jameson Prosthetics](urn:li:organization:2414183)"
    snippet = compose("linkedin", body="b", link=LINK, handle=mention, hashtags=[])
    assert snippet.text.endswith(f"Follow us {mention} for more.")


def test_linkedin_length_counts_the_escapes() -> None:
    body = " ".join(["(x)"] * 1500)
    snippet = compose("linkedin", body=body, link=LINK, handle=HANDLES["linkedin"], hashtags=TAGS)
    assert snippet.truncated
    assert 3000 - 7 <= snippet.length <= 3000
    shown = snippet.text.split("\n\n")[0]
    assert shown.endswith("\\)…")
    # Every backslash escapes a reserved character: no escape was cut in half.
    assert re.fullmatch(r"(?:[^\\]|\\[|{}@\[\]()<>#\\*_~])*", shown)


def test_script_tags_pass_through_as_plain_text() -> None:
    body = "<script>alert('hi')</script> Socket care tips"
    x = compose("x", body=body, link=LINK, handle="@JamesonProsth", hashtags=[])
    assert x.text.startswith(body + "\n\n")
    linkedin = compose("linkedin", body=body, link=LINK, handle="@j", hashtags=[])
    assert linkedin.text.startswith("\\<script\\>alert\\('hi'\\)\\</script\\> Socket care tips\n\n")


# --------------------------------------------------------------------------- Facebook


def test_facebook_keeps_the_body_to_500_characters() -> None:
    rest = f"Read more: {LINK}\n\nFollow us @JamesonProsthetics for more. #PhantomLimbPain #Botox #AmputeeLife"
    at = compose("facebook", body=words_of_length(500), link=LINK, handle=HANDLES["facebook"], hashtags=TAGS)
    assert not at.truncated
    assert len(split_body(at, rest)) == 500
    assert at.limit == 63206
    over = compose("facebook", body=words_of_length(501), link=LINK, handle=HANDLES["facebook"], hashtags=TAGS)
    assert over.truncated
    shown = split_body(over, rest)
    assert len(shown) <= 500
    assert_word_boundary_cut(words_of_length(501), shown)


# --------------------------------------------------------------------------- shape


def test_as_dict_is_json_friendly() -> None:
    snippet = compose("bluesky", body="Body", link=LINK, handle=HANDLES["bluesky"], hashtags=TAGS)
    data = json.loads(json.dumps(snippet.as_dict()))
    assert data["platform"] == "bluesky"
    assert data["text"] == snippet.text
    assert data["length"] == snippet.length
    assert data["limit"] == 300
    assert data["unit"] == "graphemes"
    assert data["bytes"] == len(snippet.text.encode())
    assert data["facets"][0]["features"][0]["uri"] == LINK
    assert data["hashtags"] == HASHTAGS
    x = compose("x", body="Body", link=LINK, handle="@JamesonProsth", hashtags=[]).as_dict()
    assert x["bytes"] is None
    assert x["facets"] == []
    assert x["unit"] == "weighted characters"


TOKENS = [
    *WORDS,
    "中文",
    "日本語",
    SANTA,
    FAMILY,
    "👍🏽",
    "(note)",
    "#tagged",
    "@someone@example.org",
    "https://ref.example/a_b?c=d",
    "café",
    "—",
    "\n\n",
]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_random_bodies_always_fit(platform: str) -> None:
    rng = random.Random(f"social-{platform}")
    for _ in range(6):
        body = " ".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 400)))
        tags = rng.sample(["gait", "socket fit", "phantom limb pain", "liner care", "amputee life", "osseo"], 4)
        snippet = compose(platform, body=body, link=LINK, handle=HANDLES[platform], hashtags=tags, mastodon_limit=300)
        assert snippet.length == measure(platform, snippet.text, mastodon_limit=300)
        assert snippet.length <= snippet.limit
        if snippet.bytes is not None:
            assert snippet.bytes <= 3000
        for tag in snippet.hashtags:
            assert tag in snippet.text


@pytest.mark.parametrize(
    "text",
    [
        "Intro paragraph 🧑‍🎄 with émoji\n\nhttps://example.com/a-long/path?x=1\n\n@JamesonProsth #Tag",
        "one\n\n\n\ntwo\n\n\nthree 義肢\n\nhttps://example.com\n\n",
        "@user@mastodon.social said\n\nsee example.com/x and https://a.co\n\n❤️‍🔥",
        "\n\nstarts blank\r\n\r\nwith CRLF\n\nend",
    ],
)
def test_measuring_by_paragraph_equals_measuring_whole(text: str) -> None:
    """The memoised per-paragraph measure must agree with the plain whole-text rules."""
    from pipeline.channels.social import rules as rules

    assert measure("x", text) == rules._x_weight(text)
    assert measure("bluesky", text) == graphemes(text)
    assert measure("mastodon", text) == graphemes(rules._mastodon_countable(text))


@pytest.mark.parametrize(
    "text",
    [
        "plain words only",
        "Sentence one. Sentence two… “quoted” — dash",
        "visit example.com today",
        "e.g. this",
        "see https://example.org/x?y=1 now",
        "例子.中国 and ｗｗｗ．example．com",
        "Ünïcödé ελληνικά café\r\nnext line",
        "combining e\u0301 and family 👨‍👩‍👧 and flag 🇺🇸",
    ],
)
def test_fast_paths_agree_with_the_full_rules(text: str) -> None:
    """The shortcuts (no URL possible, one cluster per character) never change a count."""
    import regex as full_regex
    from twitter_text import extract_urls_with_indices

    from pipeline.channels.social import rules as rules

    assert rules._urls(text) == list(extract_urls_with_indices(text))
    assert rules._urls(text, False) == list(extract_urls_with_indices(text, False))
    assert graphemes(text) == len(full_regex.findall(r"\X", text))


# --------------------------------------------------------------------------- shortcuts stay exact
# compose measures only the body on each try of a cut, and plain bodies not even that;
# these pin the facts that make those shortcuts give the same snippets as measuring
# the whole text each time.

# fmt: off
URLISH = [
    "example.com", "e.g.", "end.", ". ", ".:", "a.b", "K.com", "x.Com", "xn--p1ai", "例子.中国", "例example.com",
    "ｗｗｗ．x．com", "https://a.co/x", "http://", "://", "t.co/ab", "www.", ".org", "(", ")", "@", "#", "$", "/",
    "-", "_", " ", "\n", "a", "Z", "9", "é", "рф", "中国", "…",
    "\u212a",  # the Kelvin sign, which folds to "k"
    "\u200f",  # a right-to-left mark
]
# fmt: on


def random_text(rng: random.Random, pieces: list[str], most: int = 12) -> str:
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))


def test_url_prefilter_and_bound_hold_on_random_text() -> None:
    """No URL hides from the quick "." scan, and its count bounds the URLs from above."""
    from twitter_text import extract_urls_with_indices

    from pipeline.channels.social import rules as rules

    rng = random.Random("urls")
    for _ in range(3000):
        text = random_text(rng, URLISH)
        for without_protocol in (True, False):
            found = list(extract_urls_with_indices(text, without_protocol))
            assert rules._urls(text, without_protocol) == found, text
            assert rules._most_urls(text) >= len(found), text


def test_checks_are_additive_across_the_blank_line() -> None:
    """measure, bytes and Threads' links of body + blank line + tail, from the parts."""
    from pipeline.channels.social import rules as rules

    pieces = [*URLISH, *TOKENS, FAMILY, "\u0301", "\u20e3", "\U0001f1fa", "\r"]
    rng = random.Random("additive")
    for _ in range(400):
        body = random_text(rng, pieces).rstrip("\r\n") or "x"
        tail = rng.choice(["https://", "Read more: ", "@", "#", "Link", "h"]) + random_text(rng, pieces, 6)
        assert rules._TAIL_START.match(tail)
        whole = body + "\n\n" + tail
        for platform in PLATFORMS:
            assert measure(platform, whole) == measure(platform, body) + 2 + measure(platform, tail), (platform, whole)
        assert rules._link_urls(whole) == rules._link_urls(body) | rules._link_urls(tail), whole


def test_plain_bodies_and_their_cuts_measure_their_length() -> None:
    from pipeline.channels.social import rules as rules

    rng = random.Random("plain")
    alphabet = [*(chr(i) for i in range(32, 127)), " ", " ", "\n", "e.g.", "x.com", "a@b"]
    checked = 0
    for _ in range(2000):
        body = random_text(rng, alphabet, 30)
        if not rules._is_plain(body):
            continue
        checked += 1
        for end in range(len(body) + 1):
            cut = rules._cut(body, end) if end < len(body) else body
            for platform in PLATFORMS:
                expected, size = rules._plain_measures(rules._rules(platform, 500), cut)
                assert measure(platform, cut) == expected, (platform, cut)
                assert len(cut.encode("utf-8")) == size
    assert checked > 500


def test_break_point_shortcuts_agree_with_grapheme_clusters() -> None:
    """The ASCII shortcuts find the points the grapheme-cluster walk finds."""
    import regex as full_regex

    from pipeline.channels.social import rules as rules

    def by_clusters(body: str, words_only: bool) -> tuple[int, ...]:
        clusters = [(m.end(), m.group()) for m in full_regex.finditer(r"\X", body)]
        return tuple(
            end
            for (end, cluster), (_, following) in itertools.pairwise(clusters)
            if not cluster.isspace() and (not words_only or following.isspace())
        )

    rng = random.Random("points")
    alphabet = [*(chr(i) for i in range(128)), " ", " ", " ", "word"]
    for _ in range(3000):
        body = random_text(rng, alphabet, 20).replace("\r", "")
        for words_only in (True, False):
            assert rules._break_points(body, words_only=words_only) == by_clusters(body, words_only), body


def test_normalizing_an_already_normal_body_changes_nothing() -> None:
    from pipeline.channels.social import rules as rules

    rng = random.Random("normal")
    for _ in range(2000):
        body = " ".join(random_text(rng, [*WORDS, "(", ".", "#", "~"], 4) for _ in range(rng.randint(1, 5)))
        body = re.sub(" +", " ", body).strip()
        lines = (re.sub(r"[^\S\n]+", " ", line).strip() for line in body.split("\n"))
        assert rules._normalize_body(body) == "\n".join(lines).strip() == body


def test_escape_linkedin_escapes_each_reserved_character() -> None:
    from pipeline.channels.social.rules import LINKEDIN_RESERVED

    text = "".join(chr(i) for i in range(32, 127)) + "é \\\\g<0> \\1 " + FAMILY
    expected = "".join("\\" + char if char in LINKEDIN_RESERVED else char for char in text)
    assert escape_linkedin(text) == expected

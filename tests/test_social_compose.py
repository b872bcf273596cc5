"""Snippets as a person would write them: whole sentences, the link, hashtags that fit,
no self-mention, no guessed handle, no backslash escapes in text meant to be pasted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.channels.social.compose import NoRoom, compose
from pipeline.channels.social.facets import Facet, bluesky_facets, bluesky_link_display
from pipeline.channels.social.measure import graphemes, measure
from pipeline.channels.social.mentions import ClinicHandle, clean_mentions
from pipeline.channels.social.sentences import sentences
from pipeline.config import PLATFORMS

LINK = "https://jamesonprosthetics.com/archive/botox-for-limb-pain?utm_source=social&utm_medium=social&utm_campaign=b"
SUMMARY = (
    "Botulinum toxin injections are sometimes offered for residual limb pain and phantom limb pain. "
    "Here is what the studies found, where the evidence is thin, and what to ask your doctor."
)
TAGS = ["phantom limb pain", "botox", "amputee life"]
LONG_SENTENCE = (
    "This sentence about socket comfort and daily liner care keeps going " + "and going " * 30 + "to the end."
)


def body_of(text: str) -> str:
    return text.split("\n\n")[0]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_body_is_whole_sentences_and_never_title_glue(platform: str) -> None:
    snippet = compose(platform, body=SUMMARY, link=LINK, hashtags=TAGS)
    assert body_of(snippet.text) == SUMMARY
    assert ": Botulinum" not in snippet.text and "…" not in body_of(snippet.text)
    assert snippet.length <= snippet.limit


def test_sentences_are_dropped_whole_from_the_end_never_cut() -> None:
    body = " ".join(f"Sentence number {n} tells the reader one more useful thing about liners." for n in range(12))
    snippet = compose("x", body=body, link=LINK, hashtags=TAGS)
    shown = body_of(snippet.text)
    assert snippet.truncated
    assert shown.endswith("liners.") and body.startswith(shown)
    assert shown in [" ".join(sentences(body)[:k]) for k in range(1, 13)]
    assert measure("x", snippet.text) <= 280


def test_hashtags_give_way_before_a_sentence_does() -> None:
    one = "A" * 215 + " is a long word in one sentence."
    snippet = compose("x", body=one, link=LINK, hashtags=TAGS)
    assert body_of(snippet.text) == one
    assert snippet.hashtags == ()


def test_no_room_for_even_one_sentence_is_an_error_naming_the_platform() -> None:
    with pytest.raises(NoRoom, match="x: its first sentence does not fit") as caught:
        compose("x", body=LONG_SENTENCE, link=LINK, hashtags=TAGS)
    assert caught.value.platform == "x"
    # Mastodon's 500 has room for it.
    assert body_of(compose("mastodon", body=LONG_SENTENCE, link=LINK, hashtags=[]).text) == LONG_SENTENCE


def test_a_posts_own_text_is_used_whole_or_refused() -> None:
    own = "Our own words for X. Two sentences."
    assert body_of(compose("x", body=own, link=LINK, hashtags=[], own_text=True).text) == own
    with pytest.raises(NoRoom, match="its own social text does not fit"):
        compose("x", body=LONG_SENTENCE, link=LINK, hashtags=[], own_text=True)


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    assert sentences("Ask Dr. Lee and J. Smith about it. Then walk! Really? 義肢です。次。") == [
        "Ask Dr. Lee and J. Smith about it.",
        "Then walk!",
        "Really?",
        "義肢です。",
        "次。",
    ]


def test_linkedin_text_has_no_backslash_escapes() -> None:
    body = "Questions? Email us (or call) at 843 936 1642 #amputee_care @JamesonProsthetics."
    snippet = compose("linkedin", body=body, link=LINK, hashtags=TAGS)
    assert "\\" not in snippet.text
    assert snippet.text.startswith(body)


def test_threads_keeps_one_hashtag_and_instagram_five_and_no_link() -> None:
    many = [f"tag{chr(97 + i)}" for i in range(8)]
    assert len(compose("threads", body=SUMMARY, link=LINK, hashtags=many).hashtags) == 1
    instagram = compose("instagram", body=SUMMARY, link=LINK, hashtags=many)
    assert len(instagram.hashtags) == 5 and LINK not in instagram.text
    assert instagram.note == f"link in bio: {LINK}" and instagram.text.endswith("Link in bio.")


def test_facebook_keeps_the_body_to_500_characters_in_whole_sentences() -> None:
    body = " ".join(f"Sentence {n} is about the way a socket should fit as the limb changes shape." for n in range(20))
    snippet = compose("facebook", body=body, link=LINK, hashtags=[])
    shown = body_of(snippet.text)
    assert len(shown) <= 500 and shown.endswith("shape.") and snippet.truncated


# --------------------------------------------------------------------------- mentions

HANDLES = {
    "x": ClinicHandle("x", "@JamesonProsth", False),
    "mastodon": ClinicHandle("mastodon", "@JamesonProsthetics@mastodon.social", True),
    "bluesky": ClinicHandle("bluesky", "@jamesonprosthetics.bsky.social", False),
    "facebook": ClinicHandle("facebook", "@JamesonProsthetics", True),
}


def test_no_self_mention_and_no_unconfirmed_handle() -> None:
    text = "Follow @JamesonProsth and @jamesonprosthetics.bsky.social, or @JamesonProsthetics@mastodon.social."
    # X's own handle is a self-mention; Bluesky's is unconfirmed: both become the clinic's name.
    assert clean_mentions(text, "x", HANDLES, "Jameson Prosthetics") == (
        "Follow Jameson Prosthetics and Jameson Prosthetics, or @JamesonProsthetics@mastodon.social."
    )
    # On Mastodon its own full handle is the self-mention.
    assert "@JamesonProsthetics@mastodon.social" not in clean_mentions(text, "mastodon", HANDLES, "J P")
    # A bare @JamesonProsthetics (Facebook's, confirmed) would tag a stranger on X: not kept there.
    assert clean_mentions("Thanks @JamesonProsthetics!", "x", HANDLES, "J P") == "Thanks J P!"
    # Someone else's handle, written by staff, stays.
    assert clean_mentions("With @ampcoalition today.", "x", HANDLES, "J P") == "With @ampcoalition today."


# --------------------------------------------------------------------------- Bluesky facets


def test_bluesky_facets_cover_link_tags_and_mentions_by_utf8_bytes() -> None:
    body = "Botox & limb pain — 義足 🧑\u200d🎄 with @amp-coalition.bsky.social today."
    snippet = compose("bluesky", body=body, link=LINK, hashtags=TAGS)
    data = snippet.text.encode("utf-8")
    spans = {data[f.byte_start : f.byte_end].decode(): f for f in snippet.facets}
    assert spans["@amp-coalition.bsky.social"].handle == "amp-coalition.bsky.social"
    assert spans[bluesky_link_display(LINK)].uri == LINK
    assert [f.tag for f in snippet.facets if f.tag] == ["PhantomLimbPain", "Botox", "AmputeeLife"]
    assert LINK not in snippet.text and snippet.bytes == len(data) and snippet.length == graphemes(snippet.text)
    mention = spans["@amp-coalition.bsky.social"]
    assert mention.as_record("did:plc:abc")["features"] == [
        {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:abc"}
    ]


def test_bluesky_urls_written_in_the_body_get_link_facets() -> None:
    facets = bluesky_facets(
        "Study: https://pubmed.ncbi.nlm.nih.gov/123 (2024).\n\nexample.org/a", "example.org/a", LINK
    )
    assert [f.uri for f in facets] == ["https://pubmed.ncbi.nlm.nih.gov/123", LINK]


def test_bluesky_link_display() -> None:
    assert bluesky_link_display(LINK) == "jamesonprosthetics.com/archive/botox-for-limb-pain"
    assert bluesky_link_display("https://www.Example.org/?utm_source=x") == "example.org"
    assert bluesky_link_display("http://example.org:8080/" + "x" * 40) == "example.org:8080/" + "x" * 29 + "…"


def test_facet_validation() -> None:
    with pytest.raises(ValueError):
        Facet(5, 5, uri=LINK)
    with pytest.raises(ValueError):
        Facet(0, 4)
    with pytest.raises(ValueError):
        Facet(0, 4, uri=LINK, tag="Botox")


def test_bad_links_and_platforms_are_rejected() -> None:
    with pytest.raises(ValueError, match="link must be"):
        compose("x", body=SUMMARY, link="ftp://a.example/", hashtags=[])
    with pytest.raises(ValueError, match="unknown platform"):
        compose("myspace", body=SUMMARY, link=LINK, hashtags=[])


def test_the_shipped_templates_do_not_glue_title_and_summary() -> None:
    template = (Path(__file__).parent.parent / "templates" / "social" / "body.txt").read_text()
    assert "post.title }}:" not in template

"""The plain-text wrapper, UTM links and the .eml line limit: fast paths checked
against the plain rules they stand for."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import pytest

from pipeline.channels.templating import with_utm
from pipeline.content.plaintext import WIDTH, _fill
from pipeline.mail.message import _MAX_LINE, _wrap_long_lines


def greedy_wrap(words: list[str], first: str, indent: str) -> list[str]:
    """Textbook greedy wrapping: the rule ``_fill`` implements with one regex per line."""
    lines: list[str] = []
    current, empty = first, True
    for word in words:
        if not empty and len(current) + 1 + len(word) > WIDTH:
            lines.append(current)
            current = indent + word
        else:
            current += ("" if empty else " ") + word
        empty = False
    if not empty:
        lines.append(current)
    return lines


def test_fill_wraps_exactly_like_greedy_wrapping() -> None:
    rng = random.Random(7)
    sizes = [1, 2, 3, 5, 8, 13, 30, 68, 69, 70, 71, 72, 73, 90]
    for _ in range(5000):
        words = ["".join(rng.choice("abcé中🦿") for _ in range(rng.choice(sizes))) for _ in range(rng.randint(0, 40))]
        first = rng.choice(["", "*  ", "> ", "10. ", "> *  ", "x" * 80])
        indent = rng.choice(["", "   ", "> ", "y" * 75])
        assert _fill(words, first, indent) == greedy_wrap(words, first, indent)


def test_fill_keeps_lines_within_width_and_urls_whole() -> None:
    url = "https://pubmed.ncbi.nlm.nih.gov/" + "1234567890" * 8 + "/"
    words = [*("the socket fits well " * 10).split(), url, "and", "then", "more"]
    lines = _fill(words, "", "")
    assert url in lines
    assert all(len(line) <= WIDTH for line in lines if line != url)
    assert " ".join(lines).split() == words


@pytest.mark.parametrize(
    "source, medium, campaign",
    [
        ("x", "social", "botox-phantom-pain"),
        ("news letter", "e-mail", "ünïcode & more"),
        ("a+b", "c/d", "e?f=g#h"),
        ("", "~keep.this_", "100%"),
    ],
)
def test_utm_fast_path_matches_urlencode(source: str, medium: str, campaign: str) -> None:
    url = "https://jamesonprosthetics.com/archive/post"
    expected = url + "?" + urlencode([("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)])
    assert with_utm(url, source=source, medium=medium, campaign=campaign) == expected


def test_utm_replaces_existing_tags_and_keeps_other_query_parts() -> None:
    tagged = with_utm("https://a.example/p?id=3&utm_source=old#top", source="x", medium="social", campaign="c")
    assert tagged == "https://a.example/p?id=3&utm_source=x&utm_medium=social&utm_campaign=c#top"


def test_long_lines_are_broken_at_spaces_for_smtp() -> None:
    short = b"<p>short line</p>\n" * 3
    assert _wrap_long_lines(short) is short  # nothing to do: the same bytes back
    long_line = " ".join(["word"] * 600).encode()  # 2,999 octets
    wrapped = _wrap_long_lines(b"start\n" + long_line + b"\nend")
    lines = wrapped.split(b"\n")
    assert max(map(len, lines)) <= _MAX_LINE
    assert lines[0] == b"start" and lines[-1] == b"end"
    assert b" ".join(lines[1:-1]) == long_line


def test_the_line_limit_counts_octets_not_characters() -> None:
    line = " ".join(["ümlaut"] * 120).encode()  # 839 characters, 959 octets
    assert len(line.decode()) < _MAX_LINE < len(line)
    assert max(map(len, _wrap_long_lines(line).split(b"\n"))) <= _MAX_LINE


# --- two CommonMark parsers, one output ------------------------------------------------------------

PARSER_SAMPLES = [
    '# Title **bold**\n\nPara with [link](/x "t") and <https://a.b> and `code` ~~del~~ and <b>html</b>  \n'
    "hard break\nsoft break\n",
    "1. one\n2. two\n\n- a\n- b\n\n> quote\n\n```py\ncode\n```\n\n    indented\n\n<div>block</div>\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n![alt](/img.png) &amp; \\* text\n\n---\n\n1. loose\n\n2. list\n",
    '[ref] and [contact us](contact:)\n\n[ref]: /u "Title"\n\nline  \nnext <!-- comment -->\n',
    "Ünïcode — “quotes” 🦿 and a <script>alert(1)</script> raw block.\n\n<style>p{}</style>\n",
]


@pytest.mark.parametrize("source", PARSER_SAMPLES)
def test_the_reference_parser_gives_what_the_rust_one_gives(source: str) -> None:
    """Where markdown-it-pyrs has no wheel (CPython 3.13) markdown-it-py stands in: the same
    HTML, and its syntax tree read into the same shape, so the same plain text."""
    from pipeline.content import commonmark
    from pipeline.content.plaintext import tree_to_text

    reference = commonmark._Reference()
    try:
        rust = commonmark._Rust()
    except ImportError:
        pytest.skip("markdown-it-pyrs has no wheel for this Python: only the reference parser runs here")
    base = "https://jamesonprosthetics.com"
    assert reference.render(source) == rust.render(source)
    assert tree_to_text(reference.tree(source), base) == tree_to_text(rust.tree(source), base)

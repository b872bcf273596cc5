"""A text -> its sentences, so a snippet keeps whole ones and is never cut mid-sentence."""

from __future__ import annotations

import regex

# A sentence ends at . ! ? … (and the CJK full stops), with any closing quotes or
# brackets, before white space and the start of the next one. A full stop after a
# common abbreviation or a single letter (initials) ends nothing.
_END = regex.compile(r"(?<=[.!?…][\"'”’)\]]*)\s+(?=[\"'“‘(\[]*[\p{Lu}\p{Lt}\p{Lo}\p{N}])|(?<=[。！？])\s*(?=\S)")
_ABBREVIATIONS = frozenset(
    [
        "dr",
        "mr",
        "mrs",
        "ms",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "no",
        "fig",
        "prof",
        "jr",
        "sr",
        "inc",
        "ltd",
        "co",
    ]
)
_LAST_WORD = regex.compile(r"(\S+)\.[\"'”’)\]]*$")
_SPACES = regex.compile(r"\s+")
_BLANK_LINE = regex.compile(r"\n\s*\n")  # compiled once: regex's own cache lookup costs more than the split


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, each with its white space tidied; blank lines end one too."""
    found: list[str] = []
    for paragraph in _BLANK_LINE.split(text):
        paragraph = _SPACES.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        start = 0
        for match in _END.finditer(paragraph):
            candidate = paragraph[start : match.start()]
            word = _LAST_WORD.search(candidate)
            if word and (word.group(1).casefold() in _ABBREVIATIONS or len(word.group(1)) == 1):
                continue
            found.append(candidate)
            start = match.end()
        found.append(paragraph[start:])
    return [s for s in found if s]

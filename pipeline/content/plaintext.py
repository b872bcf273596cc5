"""CommonMark syntax tree -> readable plain text, for the e-mail's text part.

Rendered from the same parse as the HTML, so the two parts always say the same
thing. A link's text is followed by a number, [1], and the numbered addresses are
listed after the article (an address in the middle of a sentence is hard to read,
and a long one breaks the line); images become their alt text; raw HTML keeps only
its text (and its links), never what is inside <script> or <style>; paragraphs are
wrapped at 78 columns (RFC 5322's line length) and an address longer than a line
stands on a line of its own, whole, so a mail program can still open it.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import nh3

from pipeline.content.links import NO_LINKS, resolve_url

WIDTH = 78
# What raw HTML may hold that is never text: inline <script> and <style> in a paragraph
# arrive as an opening tag, text nodes, and a closing tag.
_HIDDEN_OPEN = re.compile(r"<(script|style)\b[^>]*>", re.IGNORECASE)
_HIDDEN_CLOSE = re.compile(r"</(script|style)\s*>", re.IGNORECASE)
_INLINE = {
    "text", "softbreak", "hardbreak", "strong", "em", "strikethrough", "code_inline",
    "link", "image", "html_inline", "autolink", "text_special",
}  # fmt: skip
_ANCHOR = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"[^>]*>(.*?)</a>', re.IGNORECASE | re.DOTALL)


class LinkList:
    """The numbered addresses of one text: the same address keeps its number."""

    def __init__(self) -> None:
        self.urls: dict[str, int] = {}

    def number(self, url: str) -> int:
        return self.urls.setdefault(url, len(self.urls) + 1)

    def mark(self, label: str, url: str) -> str:
        """``label`` as the text shows it: alone when it is the address itself, else
        followed by its number."""
        shown = url.removeprefix("mailto:").removeprefix("tel:")
        if not url or label in (url, shown):
            return label or shown
        return f"{label} [{self.number(url)}]"

    def lines(self) -> list[str]:
        """The list after the text: "[n] address", or the address on a line of its own
        after "[n]" when both do not fit."""
        out = []
        for url, number in self.urls.items():
            shown = url.removeprefix("mailto:").removeprefix("tel:")
            entry = f"[{number}] {shown}"
            out += [entry] if len(entry) <= WIDTH else [f"[{number}]", shown]
        return out


def _strip_html(
    fragment: str, base_url: str = "", links: Mapping[str, str] = NO_LINKS, numbered: LinkList | None = None
) -> str:
    """Text of raw HTML: links keep their address (numbered), everything else only its
    text; nothing of <script> or <style> (nh3 drops their content)."""
    if base_url:
        schemes = set(nh3.ALLOWED_URL_SCHEMES) | {name.partition(":")[0] for name in links}
        listed = numbered if numbered is not None else LinkList()
        fragment = _ANCHOR.sub(
            lambda m: listed.mark(m.group(2), resolve_url(html.unescape(m.group(1)), base_url, links)),
            nh3.clean(fragment, url_schemes=schemes),
        )
    return html.unescape(nh3.clean(fragment, tags=set()))


def _text_of(node: Any) -> str:
    return "".join(str(child.meta.get("content", "")) + _text_of(child) for child in node.children)


def _inline(
    nodes: Iterable[Any], base_url: str, links: Mapping[str, str] = NO_LINKS, numbered: LinkList | None = None
) -> str:
    parts: list[str] = []
    numbered = numbered if numbered is not None else LinkList()
    hidden = False  # inside an inline <script> or <style>: its text is not the reader's
    for node in nodes:
        name = node.name
        if name == "html_inline":
            tag = str(node.meta.get("content", ""))
            if _HIDDEN_OPEN.match(tag) and not tag.rstrip().endswith("/>"):
                hidden = True
            elif _HIDDEN_CLOSE.match(tag):
                hidden = False
            continue
        if hidden:
            continue
        if name in ("text", "text_special"):
            parts.append(str(node.meta.get("content", "")))
        elif name == "softbreak":
            parts.append(" ")
        elif name == "hardbreak":
            parts.append("\n")
        elif name in ("strong", "em", "strikethrough", "code_inline"):
            parts.append(_inline(node.children, base_url, links, numbered))
        elif name in ("link", "autolink"):
            href = str(node.meta.get("url", ""))
            label = _inline(node.children, base_url, links, numbered) or href.removeprefix("mailto:")
            url = resolve_url(href, base_url, links) if href and not href.startswith("#") else ""
            parts.append(numbered.mark(label, url))
        elif name == "image":
            alt = _text_of(node)
            parts.append(f"[{alt}]" if alt else "")
    return "".join(parts)


@functools.cache
def _line_pattern(room: int) -> re.Pattern[str]:
    """One line: the longest run of words that fits in ``room`` columns, else one long
    word. Two groups either way, so ``findall`` gives pairs."""
    if room < 1:
        return re.compile(r"(\S+)(?: |$)()")
    return re.compile(rf"(.{{1,{room}}})(?: |$)|(\S+)(?: |$)")


def _fill(words: list[str], first: str, indent: str) -> list[str]:
    """Greedy wrap at WIDTH; a word longer than a line (a URL) gets a line of its own."""
    text = " ".join(words)
    if not text:
        return []
    match = _line_pattern(WIDTH - len(first)).match(text)
    assert match is not None  # text is words joined by single spaces: one always matches
    lines = [first + (match.group(1) or match.group(2))]
    # The other lines in one pass: each match starts where the previous one ended.
    rest = _line_pattern(WIDTH - len(indent)).findall(text, match.end())
    lines.extend(indent + (fits or long) for fits, long in rest)
    return lines


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    lines: list[str] = []
    for number, piece in enumerate(text.split("\n")):
        start = first if first is not None and number == 0 else indent
        lines.extend(_fill(piece.split(), start, indent) or [indent.rstrip()])
    return lines


class _Writer:
    """Walks the block tree; a whole list is one block (no blank lines between items)."""

    def __init__(self, base_url: str, links: Mapping[str, str]) -> None:
        self.base_url = base_url
        self.links = links
        self.numbered = LinkList()
        self.blocks: list[list[str]] = []
        self.quote = 0
        self.depth = 0  # open lists
        self.marker: str | None = None  # the marker the next line of a list item starts with

    def prefix(self) -> str:
        return "> " * self.quote + "   " * self.depth

    def lines(self, lines: list[str]) -> None:
        if self.depth:
            self.blocks[-1].extend(lines)
        else:
            self.blocks.append(lines)

    def paragraph(self, text: str) -> None:
        if self.marker is not None:
            first = "> " * self.quote + "   " * (self.depth - 1) + self.marker
            self.marker = None
            self.lines(_wrap(text, indent=self.prefix(), first=first))
        else:
            self.lines(_wrap(text, indent=self.prefix()))

    def children(self, nodes: Sequence[Any]) -> None:
        run: list[Any] = []  # inline nodes straight inside a block (tight list items)
        for node in nodes:
            if node.name in _INLINE:
                run.append(node)
                continue
            if run:
                self.paragraph(_inline(run, self.base_url, self.links, self.numbered))
                run = []
            self.block(node)
        if run:
            self.paragraph(_inline(run, self.base_url, self.links, self.numbered))

    def block(self, node: Any) -> None:
        name = node.name
        if name == "paragraph":
            self.paragraph(_inline(node.children, self.base_url, self.links, self.numbered))
        elif name == "heading":
            title = " ".join(_inline(node.children, self.base_url, self.links, self.numbered).split())
            self.blocks.append([title, ("=" if node.meta.get("level") == 1 else "-") * len(title)])
        elif name in ("bullet_list", "ordered_list"):
            if not self.depth:
                self.blocks.append([])
            self.depth += 1
            number = int(node.meta.get("start", 1) or 1)
            for item in node.children:
                self.marker = "*  " if name == "bullet_list" else f"{number}. ".ljust(3)
                number += 1
                self.children(item.children)
            self.depth -= 1
        elif name == "blockquote":
            self.quote += 1
            self.children(node.children)
            self.quote -= 1
        elif name in ("code_block", "fence"):
            content = str(node.meta.get("content", "")).rstrip("\n")
            self.blocks.append(["    " + line for line in content.split("\n")])
        elif name == "html_block":
            text = _strip_html(str(node.meta.get("content", "")), self.base_url, self.links, self.numbered).strip()
            if text:
                self.blocks.append(_wrap(text, indent=self.prefix()))
        elif name == "hr":
            self.blocks.append(["-" * 24])
        elif name == "table":
            for section in node.children:
                for row in section.children:
                    cells = [
                        " ".join(_inline(cell.children, self.base_url, self.links, self.numbered).split())
                        for cell in row.children
                    ]
                    self.blocks.append([" | ".join(cells)])
        else:
            self.children(node.children)


LINKS_HEADING = "Links in this article:"
_MARKER = re.compile(r" *(?:\d+\.|[*-]|\[\d+\]) +")


def tree_to_text(root: Any, base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    writer = _Writer(base_url, links)
    writer.children(root.children)
    if writer.numbered.urls:
        writer.blocks.append([LINKS_HEADING, *writer.numbered.lines()])
    paragraphs = ["\n".join(block) for block in writer.blocks if block]
    return "\n\n".join(p for p in paragraphs if p.strip()).strip()


def wrap_text(text: str, *, stand_in: tuple[str, int] = ("", 0)) -> str:
    """Every line of ``text`` at most WIDTH columns: a longer line is wrapped at its
    spaces, with its indent kept and a word longer than a line (an address) on a line of
    its own. ``stand_in`` = (placeholder, width): the placeholder counts as that many
    columns (a token put in later), and a line holding it never shares the line's room
    with more than fits then."""
    placeholder, width = stand_in
    out = []
    for line in text.split("\n"):
        measured = line.replace(placeholder, "x" * width) if placeholder else line
        if len(measured) <= WIDTH:
            out.append(line)
            continue
        # A list item's lines after the first start under its text, not under its marker.
        # A link list's address goes under its number, from the first column (see LinkList).
        marker = _MARKER.match(line)
        indent = line[: len(line) - len(line.lstrip(" "))]
        if marker:
            indent = "" if marker.group(0).startswith("[") else " " * len(marker.group(0))
        words = line.split()
        if placeholder and any(placeholder in word for word in words):
            # Measure with the stand-in, then put the real words back in the same places.
            wide = [w.replace(placeholder, "x" * width) for w in words]
            first = line[: len(line) - len(line.lstrip(" "))]
            index = 0
            for number, piece in enumerate(_fill(wide, first, indent)):
                count = len(piece.split())
                out.append((first if number == 0 else indent) + " ".join(words[index : index + count]))
                index += count
        else:
            out.extend(_fill(words, line[: len(line) - len(line.lstrip(" "))], indent))
    return "\n".join(out)

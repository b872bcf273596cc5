"""CommonMark syntax tree -> readable plain text, for the e-mail's text part.

Rendered from the same parse as the HTML, so the two parts always say the same
thing. Links are written out after their text, images become their alt text, raw
HTML keeps only its text (and its links), and paragraphs are wrapped at 72
columns without ever breaking a URL.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import nh3

from pipeline.content.links import NO_LINKS, resolve_url

WIDTH = 72
_INLINE = {
    "text", "softbreak", "hardbreak", "strong", "em", "strikethrough", "code_inline",
    "link", "image", "html_inline", "autolink", "text_special",
}  # fmt: skip
_ANCHOR = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"[^>]*>(.*?)</a>', re.IGNORECASE | re.DOTALL)


def _strip_html(fragment: str, base_url: str = "", links: Mapping[str, str] = NO_LINKS) -> str:
    """Text of raw HTML: links keep their address, everything else only its text."""
    if base_url:
        schemes = set(nh3.ALLOWED_URL_SCHEMES) | {name.partition(":")[0] for name in links}
        fragment = _ANCHOR.sub(
            lambda m: f"{m.group(2)} ({resolve_url(html.unescape(m.group(1)), base_url, links)})",
            nh3.clean(fragment, url_schemes=schemes),
        )
    return html.unescape(nh3.clean(fragment, tags=set()))


def _text_of(node: Any) -> str:
    return "".join(str(child.meta.get("content", "")) + _text_of(child) for child in node.children)


def _inline(nodes: Iterable[Any], base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    parts: list[str] = []
    for node in nodes:
        name = node.name
        if name in ("text", "text_special"):
            parts.append(str(node.meta.get("content", "")))
        elif name == "softbreak":
            parts.append(" ")
        elif name == "hardbreak":
            parts.append("\n")
        elif name in ("strong", "em", "strikethrough", "code_inline"):
            parts.append(_inline(node.children, base_url, links))
        elif name in ("link", "autolink"):
            href = str(node.meta.get("url", ""))
            label = _inline(node.children, base_url, links) or href.removeprefix("mailto:")
            url = resolve_url(href, base_url, links) if href and not href.startswith("#") else ""
            same = not url or url in (label, f"mailto:{label}", f"tel:{label}")
            # A reader types an address or a number, not its scheme.
            shown = url.removeprefix("mailto:").removeprefix("tel:")
            parts.append(label if same else f"{label} ({shown})")
        elif name == "image":
            alt = _text_of(node)
            parts.append(f"[{alt}]" if alt else "")
        # html_inline: a tag on its own; its text, if any, is in the text nodes around it
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
                self.paragraph(_inline(run, self.base_url, self.links))
                run = []
            self.block(node)
        if run:
            self.paragraph(_inline(run, self.base_url, self.links))

    def block(self, node: Any) -> None:
        name = node.name
        if name == "paragraph":
            self.paragraph(_inline(node.children, self.base_url, self.links))
        elif name == "heading":
            title = " ".join(_inline(node.children, self.base_url, self.links).split())
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
            text = _strip_html(str(node.meta.get("content", "")), self.base_url, self.links).strip()
            if text:
                self.blocks.append(_wrap(text, indent=self.prefix()))
        elif name == "hr":
            self.blocks.append(["-" * 24])
        elif name == "table":
            for section in node.children:
                for row in section.children:
                    cells = [
                        " ".join(_inline(cell.children, self.base_url, self.links).split()) for cell in row.children
                    ]
                    self.blocks.append([" | ".join(cells)])
        else:
            self.children(node.children)


def tree_to_text(root: Any, base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    writer = _Writer(base_url, links)
    writer.children(root.children)
    paragraphs = ["\n".join(block) for block in writer.blocks if block]
    return "\n\n".join(p for p in paragraphs if p.strip()).strip()

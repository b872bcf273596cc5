"""CommonMark tokens -> readable plain text, for the e-mail's text part.

Rendered from the same markdown-it token stream as the HTML (one parse), so the
two parts always say the same thing. Links are written out after their text,
images become their alt text, raw HTML keeps only its text, and paragraphs are
wrapped at 72 columns without ever breaking a URL.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import nh3
from markdown_it.token import Token

from pipeline.markup import absolute_url

WIDTH = 72


_ANCHOR = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"[^>]*>(.*?)</a>', re.IGNORECASE | re.DOTALL)


def _strip_html(fragment: str, base_url: str = "") -> str:
    """Text of raw HTML: links keep their address, everything else only its text."""
    if base_url:
        fragment = _ANCHOR.sub(
            lambda m: f"{m.group(2)} ({absolute_url(html.unescape(m.group(1)), base_url)})", nh3.clean(fragment)
        )
    return html.unescape(nh3.clean(fragment, tags=set()))


def _inline(tokens: Sequence[Token], base_url: str) -> str:
    parts: list[str] = []
    links: list[str] = []
    for token in tokens:
        kind = token.type
        if kind == "text" or kind == "code_inline":
            parts.append(token.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link_open":
            href = str(token.attrs.get("href", ""))
            links.append(absolute_url(href, base_url) if href and not href.startswith("#") else "")
            parts.append("\x00")  # marks where the link text starts
        elif kind == "link_close":
            url = links.pop() if links else ""
            start = len(parts) - 1 - parts[::-1].index("\x00")
            label = "".join(parts[start + 1 :])
            del parts[start:]
            parts.append(label if not url or url in (label, f"mailto:{label}", f"tel:{label}") else f"{label} ({url})")
        elif kind == "image":
            alt = token.content or str(token.attrs.get("alt", ""))
            parts.append(f"[{alt}]" if alt else "")
        elif kind == "html_inline":
            parts.append(_strip_html(token.content) if not token.content.startswith("<") else "")
    return "".join(parts)


def _fill(words: list[str], first: str, indent: str) -> list[str]:
    """Greedy wrap at WIDTH; a word longer than a line (a URL) gets a line of its own."""
    lines: list[str] = []
    current = first
    empty = True
    for word in words:
        if not empty and len(current) + 1 + len(word) > WIDTH:
            lines.append(current)
            current, empty = indent + word, False
        else:
            current = current + (" " if not empty else "") + word
            empty = False
    if not empty:
        lines.append(current)
    return lines


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    lines: list[str] = []
    for number, piece in enumerate(text.split("\n")):
        start = first if first is not None and number == 0 else indent
        lines.extend(_fill(piece.split(), start, indent) or [indent.rstrip()])
    return lines


def tokens_to_text(tokens: Sequence[Token], base_url: str) -> str:
    blocks: list[list[str]] = []
    lists: list[list[int]] = []  # one counter per open list; -1 for bullets
    quote = 0
    pending_marker: str | None = None
    heading: str | None = None
    table_row: list[str] | None = None

    def prefix() -> str:
        return "> " * quote + "   " * len(lists)

    for token in tokens:
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            start = int(token.attrs.get("start", 1) or 1)
            if not lists:
                blocks.append([])  # a whole list is one block: no blank lines between items
            lists.append([start if kind == "ordered_list_open" else -1])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            counter = lists[-1]
            if counter[0] == -1:
                pending_marker = "*  "
            else:
                pending_marker = f"{counter[0]}. ".ljust(3)
                counter[0] += 1
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "heading_open":
            heading = token.tag
        elif kind == "inline":
            text = _inline(token.children or [], base_url)
            if table_row is not None:
                table_row.append(" ".join(text.split()))
                continue
            if heading is not None:
                title = " ".join(text.split())
                underline = "=" if heading == "h1" else "-"
                blocks.append([title, underline * len(title)])
                heading = None
                continue
            if pending_marker is not None:
                first = "> " * quote + "   " * (len(lists) - 1) + pending_marker
                pending_marker = None
                lines = _wrap(text, indent=prefix(), first=first)
            else:
                lines = _wrap(text, indent=prefix())
            if lists:
                blocks[-1].extend(lines)
            else:
                blocks.append(lines)
        elif kind in ("code_block", "fence"):
            blocks.append(["    " + line for line in token.content.rstrip("\n").split("\n")])
        elif kind == "html_block":
            text = _strip_html(token.content, base_url).strip()
            if text:
                blocks.append(_wrap(text, indent=prefix()))
        elif kind == "hr":
            blocks.append(["-" * 24])
        elif kind == "tr_open":
            table_row = []
        elif kind == "tr_close" and table_row is not None:
            blocks.append([" | ".join(table_row)])
            table_row = None
    paragraphs = ["\n".join(block) for block in blocks if block]
    return "\n\n".join(p for p in paragraphs if p.strip()).strip()

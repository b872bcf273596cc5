"""CommonMark, one parse for the HTML and the plain text, from either of two parsers.

markdown-it-pyrs (markdown-it in Rust, about 20 times faster) where it ships a wheel
(CPython 3.11 and 3.12 today); markdown-it-py, the reference it ports, everywhere
else (CPython 3.13), or when ``PIPELINE_MARKDOWN=markdown-it-py`` asks for it. Both
give the same HTML byte for byte (markdown-it-pyrs' own promise, and the golden
files run under both in CI); the syntax tree the plain-text part is written from is
read through ``Node``, whose shape is markdown-it-pyrs', so the text is the same too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

FORCE_ENV = "PIPELINE_MARKDOWN"


@dataclass
class Node:
    """A syntax tree node as markdown-it-pyrs names it: ``name``, ``meta`` (content, url,
    level, start, ...) and ``children``."""

    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)


class Parser(Protocol):
    name: str

    def render(self, source: str) -> str: ...

    def tree(self, source: str) -> Any:
        """The root node: ``Node`` or markdown-it-pyrs' own, which has the same shape."""


@functools.lru_cache(maxsize=1)
def parser() -> Parser:
    """The parser this machine runs: strict CommonMark, raw HTML allowed (it is
    sanitised after), with tables and strikethrough."""
    if os.environ.get(FORCE_ENV) != "markdown-it-py":
        try:
            return _Rust()
        except ImportError:  # no wheel for this Python: the reference parser
            pass
    return _Reference()


class _Rust:
    name = "markdown-it-pyrs"

    def __init__(self) -> None:
        from markdown_it_pyrs import MarkdownIt

        md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
        self.render = md.render
        self.tree = md.tree


class _Reference:
    """markdown-it-py, with its token stream read into markdown-it-pyrs' tree shape."""

    name = "markdown-it-py"

    def __init__(self) -> None:
        from markdown_it import MarkdownIt

        self._md = MarkdownIt("commonmark").enable("table").enable("strikethrough")

    def render(self, source: str) -> str:
        return str(self._md.render(source))

    def tree(self, source: str) -> Node:
        root = Node("root")
        stack = [root]
        for token in self._md.parse(source):
            if token.type == "inline":
                stack[-1].children.extend(_inline(token.children or []))
            elif token.nesting == 1:
                node = _block(token)
                if token.hidden:  # a tight list's paragraph: markdown-it-pyrs leaves it out
                    stack.append(stack[-1])
                else:
                    stack[-1].children.append(node)
                    stack.append(node)
            elif token.nesting == -1:
                stack.pop()
            else:
                stack[-1].children.append(_block(token))
        return root


_BLOCK_NAMES = {"tr": "trow", "th": "tcell", "td": "tcell"}


def _block(token: Any) -> Node:
    name = token.type.removesuffix("_open")
    meta: dict[str, Any] = {}
    if name == "heading":
        meta["level"] = int(token.tag[1:])
    elif name == "ordered_list":
        meta["start"] = int(token.attrGet("start") or 1)
    elif name in ("fence", "code_block", "html_block"):
        meta["content"] = token.content
        if name == "fence":
            meta["info"] = token.info
    return Node(_BLOCK_NAMES.get(name, name), meta)


def _inline(tokens: Sequence[Any]) -> list[Node]:
    out: list[Node] = []
    stack = [out]
    for token in tokens:
        kind = token.type
        if kind.endswith("_open"):
            name = {"s": "strikethrough", "link": "link"}.get(kind.removesuffix("_open"), kind.removesuffix("_open"))
            meta: dict[str, Any] = {}
            if name == "link":
                meta["url"] = token.attrGet("href") or ""
                if token.markup == "autolink":
                    name = "autolink"
                elif token.attrGet("title"):
                    meta["title"] = token.attrGet("title")
            node = Node(name, meta)
            stack[-1].append(node)
            stack.append(node.children)
        elif kind.endswith("_close"):
            stack.pop()
        elif kind == "image":
            node = Node("image", {"url": token.attrGet("src") or ""}, _inline(token.children or []))
            stack[-1].append(node)
        elif kind == "code_inline":
            stack[-1].append(Node("code_inline", {}, [Node("text", {"content": token.content})]))
        elif kind in ("text", "text_special", "html_inline"):
            stack[-1].append(Node(kind, {"content": token.content}))
        else:  # softbreak, hardbreak
            stack[-1].append(Node(kind))
    return out

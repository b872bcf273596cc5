"""Both versions of a newsletter, the e-mail and its web page, from one MJML compile.

The two differ only where a template says ``{% if web %}`` (or ``{% if not web %}``),
yet compiling MJML is most of a newsletter's cost. So the templates are also
loaded through a second environment whose ``VariantMarkers`` extension rewrites
each such block into marker words around both of its branches; the page renders
once, compiles once, and each version keeps its own branch of every pair.

This is only a shortcut: ``VariantRenderer.render`` returns None, and the caller renders
each version on its own, whenever the result could differ from that. That is when a
template uses ``web`` any other way, nests these blocks or gives one an ``elif``, when
a branch holds MJML elements (the compiler lays those out, and a page with both
branches would be laid out differently), when a branch's HTML tags do not pair up
(the compiler would repair them across the markers), and when the compiled markers
do not come back whole and in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.lexer import Token, TokenStream

_PREFIX = "__jp_variant_"
_WEB_FIRST = f"{_PREFIX}web__"  # opens a pair whose first branch is the web page's
_EMAIL_FIRST = f"{_PREFIX}email__"  # opens a pair whose first branch is the e-mail's
_OR = f"{_PREFIX}or__"
_END = f"{_PREFIX}end__"
# Starts with a literal, so the expression engine jumps from one marker to the next.
_PAIR = re.compile(f"{_PREFIX}(web|email)__(.*?){_OR}(.*?){_END}", re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z][\w:-]*)\b[^>]*?(/?)>")
# HTML elements that never have a closing tag.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


class _Unsupported(jinja2.TemplateSyntaxError):
    """A use of ``web`` the markers cannot stand for: render each version instead."""


class VariantMarkers(jinja2.ext.Extension):
    """Rewrites ``{% if [not] web %}A{% else %}B{% endif %}`` into ``MARK A OR B END``."""

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        return _rewrite(stream, stream.name, stream.filename)


def _marker(lineno: int, word: str) -> list[Token]:
    return [Token(lineno, "variable_begin", "{{"), Token(lineno, "string", word), Token(lineno, "variable_end", "}}")]


def _opens_pair(pending: list[Token], index: int) -> tuple[str, int] | None:
    """At a block_begin: (marker, tokens it replaces) for ``if web`` or ``if not web``."""
    head = [(t.type, t.value) for t in pending[index + 1 : index + 4]]
    ends = [t.type == "block_end" for t in pending[index + 3 : index + 5]]
    if head[:2] == [("name", "if"), ("name", "web")] and ends[:1] == [True]:
        return _WEB_FIRST, 4
    if head == [("name", "if"), ("name", "not"), ("name", "web")] and ends[1:] == [True]:
        return _EMAIL_FIRST, 5
    return None


def _rewrite(tokens: Iterable[Token], name: str | None, filename: str | None) -> Iterator[Token]:
    pending = list(tokens)
    # Each open block: "web" (a pair being rewritten), "if" or "for" (left as they are,
    # but an else belongs to the innermost block), and, for a pair, whether it had its else.
    open_blocks: list[tuple[str, list[bool]]] = []
    index = 0
    while index < len(pending):
        token = pending[index]
        if token.type != "block_begin" or index + 2 >= len(pending):
            if token.type == "name" and token.value == "web" and pending[index - 1].type != "dot":
                # Any other use: {{ web }}, "web and x", or a macro argument, loop variable
                # or {% set %} of that name, which would make "if web" mean something else.
                raise _Unsupported("'web' used outside {% if [not] web %}", token.lineno, name, filename)
            yield token
            index += 1
            continue
        keyword = pending[index + 1].value if pending[index + 1].type == "name" else ""
        opened = _opens_pair(pending, index)
        if opened is not None:
            if any(kind == "web" for kind, _ in open_blocks):
                raise _Unsupported("a web block inside a web block", token.lineno, name, filename)
            open_blocks.append(("web", [False]))
            yield from _marker(token.lineno, opened[0])
            index += opened[1]
            continue
        innermost = open_blocks[-1] if open_blocks else None
        if innermost is not None and innermost[0] == "web" and keyword in ("else", "elif", "endif"):
            if keyword == "elif" or pending[index + 2].type != "block_end":
                raise _Unsupported("elif in a web block", token.lineno, name, filename)
            had_else = innermost[1]
            if keyword == "else":
                had_else[0] = True
                yield from _marker(token.lineno, _OR)
            else:
                if not had_else[0]:
                    yield from _marker(token.lineno, _OR)
                yield from _marker(token.lineno, _END)
                open_blocks.pop()
            index += 3
            continue
        if keyword in ("if", "for"):
            open_blocks.append((keyword, [False]))
        elif keyword in ("endif", "endfor") and open_blocks:
            open_blocks.pop()
        yield token
        index += 1


class _Either:
    """``web`` while both versions render at once. Every use of it is rewritten or refused
    when the template is compiled; this is a second guard: any use of it fails."""

    def _refuse(self, *_: object) -> Any:
        raise jinja2.UndefinedError("'web' used outside {% if web %}")

    __bool__ = __str__ = __iter__ = __len__ = __eq__ = __html__ = _refuse  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]


def _tags_pair_up(fragment: str) -> bool:
    stack: list[str] = []
    for closing, tag, self_closing in _TAG.findall(fragment):
        tag = tag.lower()
        if tag in _VOID or self_closing:
            continue
        if not closing:
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            return False
    return not stack


def _splittable(source: str) -> bool:
    """Whether every marker stands in a whole pair whose branches are plain HTML or text."""
    pairs = 0
    for match in _PAIR.finditer(source):
        pairs += 1
        for branch in match.group(2, 3):
            if "<mj-" in branch or "</mj-" in branch or _PREFIX in branch or not _tags_pair_up(branch):
                return False
    return source.count(_PREFIX) == 3 * pairs  # no marker outside a pair


def _split(text: str) -> tuple[str, str]:
    """(e-mail, web): ``text`` with each pair replaced by that version's branch."""
    email: list[str] = []
    web: list[str] = []
    position = 0
    for match in _PAIR.finditer(text):
        before = text[position : match.start()]
        web_branch, email_branch = match.group(2, 3) if match.group(1) == "web" else match.group(3, 2)
        email += (before, email_branch)
        web += (before, web_branch)
        position = match.end()
    return "".join(email) + text[position:], "".join(web) + text[position:]


class VariantRenderer:
    """Renders both versions of a newsletter template at once, where that is exact."""

    def __init__(self, env: jinja2.Environment) -> None:
        cache = env.bytecode_cache
        if isinstance(cache, jinja2.FileSystemBytecodeCache):
            # Kept apart: the cache is keyed by template source, which both envs share.
            folder = Path(cache.directory) / "variants"
            folder.mkdir(parents=True, exist_ok=True)
            cache = jinja2.FileSystemBytecodeCache(str(folder))
        else:
            cache = None
        self.env = env.overlay(extensions=[VariantMarkers], bytecode_cache=cache)
        self.refused: set[str] = set()  # templates that use ``web`` in a way markers can't express

    def render(
        self, name: str, context: Mapping[str, object], compile_mjml: Callable[[str], str]
    ) -> tuple[str, str] | None:
        """(e-mail HTML, web HTML) from one render and one compile, or None when the two
        might differ from rendering and compiling each version on its own."""
        if name in self.refused:
            return None
        try:
            source = self.env.get_template(name).render({**context, "web": _Either()})
        except jinja2.TemplateError:
            # _Unsupported, or a real mistake that the caller's own render will report.
            self.refused.add(name)
            return None
        if _PREFIX not in source:
            html = compile_mjml(source)
            return html, html
        if not _splittable(source):
            return None
        email, web = _split(compile_mjml(source))
        if _PREFIX in email or _PREFIX in web:
            return None  # the compiler moved or split a marker
        return email, web

"""Checks of single front-matter fields, each noting its problems and going on.

``Findings`` collects every problem of one file (and every warning), so that
``parse_post`` reports them all at once instead of one per run of ``validate``.
A check that finds a problem notes it and returns None; the post is refused at
the end if anything was noted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.content.links import absolute_url
from pipeline.content.markup import strip_markup
from pipeline.errors import PipelineError, PipelineErrors

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?::\d+)?$")


@dataclass(frozen=True)
class Source:
    title: str
    url: str


@dataclass
class Findings:
    """Every problem and warning of one post file, each with its line and field."""

    path: str
    lines: Mapping[str, int]  # top-level key -> line
    items: Mapping[str, int]  # "sources[2]", "sources[2].url", "social.x" -> line
    problems: list[PipelineError] = field(default_factory=list)
    warnings: list[PipelineError] = field(default_factory=list)

    def line(self, key: str) -> int:
        """The line of a key or item; an item falls back to its key's line."""
        if key in self.items:
            return self.items[key]
        if key in self.lines:
            return self.lines[key]
        return self.lines.get(re.split(r"[.\[]", key, maxsplit=1)[0], 2)

    def problem(
        self, key: str, message: str, *, field: str | None = None, hint: str | None = None, line: int | None = None
    ) -> None:
        where = line if line is not None else self.line(key)
        self.problems.append(PipelineError(message, path=self.path, line=where, field=field or key, hint=hint))

    def warning(self, key: str, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        self.warnings.append(PipelineError(message, path=self.path, line=self.line(key), field=field or key, hint=hint))

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise PipelineErrors(sorted(self.problems, key=lambda p: p.line or 0))

    # --- text --------------------------------------------------------------------

    def text(self, value: Any, key: str) -> str | None:
        """One line of literal text (``<b>`` stays the three characters), or None."""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.problem(key, f"expected text, got {type(value).__name__}")
            return None
        # Whitespace (CR/LF included) collapses to single spaces, so a title can never
        # start a second e-mail header.
        return " ".join(str(value).split())

    def plain(self, value: Any, key: str, *, what: str) -> str | None:
        """Text that must hold no markup (a title, a tag): HTML tags are removed and
        entities decoded, with a warning. Feed readers that show such text as HTML
        would otherwise render the markup, and the W3C validator warns about it."""
        text = self.text(value, key)
        if text is None:
            return None
        stripped = strip_markup(text)
        if stripped != text:
            shown = repr(stripped) if stripped else "nothing"
            self.warning(
                key,
                f"HTML markup removed from the {what}: {text!r} is now {shown}",
                hint=f"write the {what} as plain text, without tags",
            )
        return stripped

    # --- addresses ------------------------------------------------------------------

    def web_url(self, value: Any, key: str) -> str | None:
        """An absolute http(s) URL with a host (a source), or None and a problem that says how to write it."""
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "expected a web address", hint="write it like https://pubmed.ncbi.nlm.nih.gov/22236475/")
            return None
        url = value.strip()
        trouble = web_url_trouble(url)
        if trouble is not None:
            self.problem(key, trouble[0], hint=trouble[1])
            return None
        return url

    def image_url(self, value: Any, key: str, base_url: str) -> str | None:
        """A picture: an absolute http(s) URL, or a path on the clinic's site ("/images/x.jpg")."""
        if isinstance(value, str) and value.strip().startswith("/") and not value.strip().startswith("//"):
            path = value.strip()
            if any(c.isspace() for c in path):
                self.problem(key, f"{path!r} has a space in it", hint="write %20 for a space in a file name")
                return None
            return absolute_url(path, base_url)
        if isinstance(value, str) and value.strip() and not urlsplit(value.strip()).scheme:
            text = value.strip()
            hint = f"write https://{text}" if _looks_like_host(text) else f"write /{text} for a picture on this site"
            self.problem(key, f"{text!r} is neither a full address nor a path on this site", hint=hint)
            return None
        return self.web_url(value, key)

    def sources(self, value: Any, key: str = "sources") -> tuple[Source, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(
                key, "expected a list of sources", hint="write '- title: ...' and 'url: ...' items, or bare URLs"
            )
            return ()
        found = []
        for number, item in enumerate(value, start=1):
            where = f"{key}[{number}]"
            if isinstance(item, str):
                url = self.web_url(item, where)
                if url is not None:
                    found.append(Source(title=url, url=url))
            elif isinstance(item, dict):
                if set(item) - {"title", "url"} or "url" not in item:
                    self.problem(
                        where,
                        "each source needs url (and optionally title)",
                        hint="write '- title: Study name' then '  url: https://...'",
                    )
                    continue
                url = self.web_url(item["url"], f"{where}.url")
                title = self.text(item["title"], f"{where}.title") if item.get("title") else url
                if url is not None and title is not None:
                    found.append(Source(title=title, url=url))
            else:
                self.problem(where, "expected a URL or a {title, url} mapping")
        return tuple(found)


def _looks_like_host(text: str) -> bool:
    return bool(_HOST.match(text.split("/", 1)[0]))


def web_url_trouble(url: str) -> tuple[str, str] | None:
    """(what is wrong, how to write it) when ``url`` is not an absolute http(s) URL with a host."""
    if any(c.isspace() for c in url):
        return f"{url!r} is not a web address", "write the full address, starting with https://"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        return f"{url!r} is not a web address", "write the full address, starting with https://"
    if not parts.scheme:
        if url.startswith("//"):
            return f"{url!r} has no https: in front", f"write https:{url}"
        if url.startswith("/"):
            return f"{url!r} is a path, not a full address", "write the full address, starting with https://"
        if _looks_like_host(url):
            return f"{url!r} has no https:// in front (it would link to a page on our own site)", f"write https://{url}"
        return f"{url!r} is not a web address", "write the full address, starting with https://"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http(s) address", "link to the web page, starting with https://"
    if not host:
        rest = url.split(":", 1)[1].lstrip("/")
        hint = f"write {parts.scheme}://{rest}" if _looks_like_host(rest) else "write it like https://example.org/page"
        return f"{url!r} has no host name", hint
    return None

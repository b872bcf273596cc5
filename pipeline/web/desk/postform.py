"""The desk's post form <-> a post file.

The file in ``posts/`` stays the one source of truth: the form is read from it, and
saving writes it. An existing file is edited line by line (``content.edit.set_key``)
where only single-line values changed, so a hand-written file keeps its comments,
quoting and order; otherwise (a block list of sources, say) the whole front matter is
written in the canonical form below. Either way the result goes through ``parse_post``,
as ``pipeline validate`` would, before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from starlette.datastructures import FormData

from pipeline.config import PLATFORMS
from pipeline.content.edit import set_key
from pipeline.content.frontmatter import parse_yaml, split_front_matter
from pipeline.content.posts import CHANNELS, SLUG_PATTERN
from pipeline.errors import PipelineError, decode_text

_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?:Z|[+-]\d{2}:\d{2})?$")
SOURCE_ROWS_EXTRA = 2  # empty source rows offered below the filled ones
# Front-matter keys the form does not show, carried over as they are.
_KEPT_KEYS = ("updated", "author", "draft")


@dataclass
class PostForm:
    title: str = ""
    date: str = ""
    slug: str = ""
    summary: str = ""
    tags: str = ""  # comma-separated
    sources: list[tuple[str, str]] = field(default_factory=list)  # (title, url)
    image: str = ""
    image_alt: str = ""
    channels: tuple[str, ...] = CHANNELS
    subject: str = ""
    preheader: str = ""
    social: dict[str, str] = field(default_factory=dict)
    body: str = ""

    def source_rows(self) -> list[tuple[str, str]]:
        return [*self.sources, *[("", "")] * SOURCE_ROWS_EXTRA]


def _line(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _tags_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_line(v) for v in value)
    return _line(value)


def _sources(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    rows = []
    for item in value:
        if isinstance(item, dict):
            url = _line(item.get("url"))
            title = _line(item.get("title"))
            rows.append((title if title != url else "", url))
        else:
            rows.append(("", _line(item)))
    return rows


def _channels(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(c for c in CHANNELS if value.get(c, True))
    if isinstance(value, list):
        return tuple(c for c in CHANNELS if c in value)
    return CHANNELS


def read_file(raw: bytes, path: str) -> tuple[PostForm, dict[str, Any]]:
    """The form as the file fills it, and the keys the form does not show.
    Raises ``PipelineError`` when the file is not front matter and a body at all."""
    text = decode_text(raw, path, hint="save the file as UTF-8").removeprefix("\ufeff")
    yaml_text, body, _line_no = split_front_matter(text, path)
    data, _lines, _items = parse_yaml(yaml_text, path)
    social = data.get("social")
    form = PostForm(
        title=_line(data.get("title")),
        date=_line(data.get("date")),
        slug=_line(data.get("slug")),
        summary=_line(data.get("summary")),
        tags=_tags_text(data.get("tags")),
        sources=_sources(data.get("sources")),
        image=_line(data.get("image")),
        image_alt=_line(data.get("image_alt")),
        channels=_channels(data.get("channels")),
        subject=_line(data.get("subject")),
        preheader=_line(data.get("preheader")),
        social={p: _line(social.get(p)) for p in PLATFORMS if social.get(p)} if isinstance(social, dict) else {},
        body=body.replace("\r\n", "\n").replace("\r", "\n"),
    )
    return form, {k: data[k] for k in _KEPT_KEYS if k in data}


def from_request(form: FormData, *, slug: str | None = None) -> PostForm:
    """What the staff member typed (``slug`` fixed for an existing post)."""

    def text(name: str) -> str:
        value = form.get(name)
        return _line(value) if isinstance(value, str) else ""

    titles = [v if isinstance(v, str) else "" for v in form.getlist("source_title")]
    urls = [v if isinstance(v, str) else "" for v in form.getlist("source_url")]
    sources = [(_line(t), _line(u)) for t, u in zip(titles, urls, strict=False) if _line(t) or _line(u)]
    body = form.get("body")
    return PostForm(
        title=text("title"),
        date=text("date"),
        slug=slug if slug is not None else text("slug"),
        summary=text("summary"),
        tags=text("tags"),
        sources=sources,
        image=text("image"),
        image_alt=text("image_alt"),
        channels=tuple(c for c in CHANNELS if c in form.getlist("channel")),
        subject=text("subject"),
        preheader=text("preheader"),
        social={p: text(f"social_{p}") for p in PLATFORMS if text(f"social_{p}")},
        # Browsers send a textarea's lines with CRLF.
        body=(body if isinstance(body, str) else "").replace("\r\n", "\n").replace("\r", "\n"),
    )


# --- YAML values, one line each ------------------------------------------------------------


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text, ensure_ascii=False)


def _tag_list(tags: str) -> list[str]:
    return [t for t in (_line(t) for t in tags.split(",")) if t]


def _source_item(title: str, url: str) -> str:
    return f"{{title: {quoted(title)}, url: {quoted(url)}}}" if title else quoted(url)


def yaml_value(form: PostForm, key: str) -> str:
    """The front-matter value of ``key`` on one line."""
    if key == "date":
        return form.date if _PLAIN_DATE.match(form.date) else quoted(form.date)
    if key == "slug":
        return form.slug if SLUG_PATTERN.match(form.slug) else quoted(form.slug)
    if key == "tags":
        return "[" + ", ".join(quoted(t) for t in _tag_list(form.tags)) + "]"
    if key == "sources":
        return "[" + ", ".join(_source_item(t, u) for t, u in form.sources) + "]"
    if key == "channels":
        return "{" + ", ".join(f"{c}: {'true' if c in form.channels else 'false'}" for c in CHANNELS) + "}"
    if key == "social":
        return "{" + ", ".join(f"{p}: {quoted(t)}" for p, t in form.social.items()) + "}"
    value = getattr(form, key)
    assert isinstance(value, str)
    return quoted(value)


_FRONT_KEYS = ("title", "date", "slug", "summary", "tags", "sources", "image", "image_alt", "channels",
               "subject", "preheader", "social")  # fmt: skip


def canonical(form: PostForm, kept: Mapping[str, Any], *, eol: str = "\n") -> bytes:
    """A whole post file written from the form (and the keys it does not show)."""
    lines = ["---", f"title: {yaml_value(form, 'title')}", f"date: {yaml_value(form, 'date')}"]
    for key in ("updated", "author"):
        if kept.get(key) not in (None, ""):
            lines.append(f"{key}: {quoted(_line(kept[key]))}")
    lines.append(f"slug: {yaml_value(form, 'slug')}")
    if "draft" in kept:
        lines.append(f"draft: {'true' if kept['draft'] is True else quoted(_line(kept['draft']))}")
    for key in ("summary", "image", "image_alt", "subject", "preheader"):
        if getattr(form, key):
            lines.append(f"{key}: {yaml_value(form, key)}")
    if form.tags:
        lines.append(f"tags: {yaml_value(form, 'tags')}")
    if form.sources:
        lines.append("sources:")
        for title, url in form.sources:
            if title:
                lines += [f"  - title: {quoted(title)}", f"    url: {quoted(url)}"]
            else:
                lines.append(f"  - {quoted(url)}")
    if set(form.channels) != set(CHANNELS):
        lines.append(f"channels: {yaml_value(form, 'channels')}")
    if form.social:
        lines.append("social:")
        lines += [f"  {p}: {quoted(t)}" for p, t in form.social.items()]
    lines.append("---")
    body = form.body if form.body.endswith("\n") else form.body + "\n"
    return (eol.join(lines) + eol + body.replace("\n", eol)).encode("utf-8")


def _eol(raw: bytes) -> str:
    found = re.search(rb"\r\n|\n|\r", raw)
    return found.group(0).decode("ascii") if found else "\n"


def _with_body(raw: bytes, body: str, eol: str) -> bytes:
    """``raw`` with everything after its closing ``---`` line replaced by ``body``."""
    lines = raw.splitlines(keepends=True)
    for index in range(1, len(lines)):
        if lines[index].strip() in (b"---", b"..."):
            text = body if body.endswith("\n") or not body else body + "\n"
            return b"".join(lines[: index + 1]) + text.replace("\n", eol).encode("utf-8")
    raise PipelineError("front matter is not closed", field="front matter")


def edited_file(raw: bytes, before: PostForm, after: PostForm, kept: Mapping[str, Any], path: str) -> bytes:
    """The new bytes of an existing file: only the changed lines, where that is possible."""
    eol = _eol(raw)
    changed = [
        f.name for f in fields(PostForm) if f.name != "body" and getattr(before, f.name) != getattr(after, f.name)
    ]
    edited = raw
    try:
        for key in changed:
            edited = set_key(edited, key, yaml_value(after, key), path=path)  # type: ignore[arg-type]
        if after.body != before.body:
            edited = _with_body(edited, after.body, eol)
    except PipelineError:  # a value that spans several lines: write the front matter anew
        return canonical(after, kept, eol=eol)
    return edited


def new_file(form: PostForm) -> bytes:
    """A new post: a draft with an explicit slug (as ``pipeline new`` writes)."""
    return canonical(replace(form), {"draft": True})

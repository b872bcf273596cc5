"""A post file (YAML front matter + CommonMark body) -> a validated ``Post``.

Every user mistake becomes a ``PipelineError`` with the file, line and field.
Loading a folder never stops at the first bad post: it returns the good posts
and every error, so one bad post never blocks the others.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.config import PLATFORMS, Settings
from pipeline.content.dates import DateProblem, parse_datetime
from pipeline.content.markup import absolute_url, markdown_inline_to_html, markdown_to_html_and_text, strip_tags
from pipeline.errors import FileFault, PipelineError, decode_text
from pipeline.faults import display_path, os_fault

CHANNELS = ("feed", "email", "social")
KNOWN_KEYS = (
    "title", "date", "updated", "slug", "author", "summary", "tags", "image", "image_alt",
    "sources", "draft", "channels", "social", "subject", "preheader",
)  # fmt: skip
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SUMMARY_CHARS = 240


@dataclass(frozen=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True)
class Post:
    path: str  # as given to the loader, for messages
    slug: str
    title: str  # plain text, one line
    date: datetime  # aware
    updated: datetime | None
    author: str
    summary: str  # plain text
    summary_html: str  # sanitised
    body_markdown: str
    body_html: str  # sanitised, absolute URLs
    body_text: str
    tags: tuple[str, ...]
    image: str | None  # absolute URL
    image_alt: str | None
    sources: tuple[Source, ...]
    draft: bool
    channels: frozenset[str]
    social: Mapping[str, str]
    subject: str
    preheader: str
    content_hash: str
    body_line: int  # first line of the body in the file
    lines: Mapping[str, int] = field(default_factory=dict)  # front-matter key -> line

    def line_of(self, key: str) -> int:
        return self.lines.get(key, 1)

    def is_released(self, now: datetime) -> bool:
        return not self.draft and self.date <= now

    @property
    def modified(self) -> datetime:
        return self.updated or self.date


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


class _StringDateLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that leaves dates as text, so we parse them in the clinic's zone."""


_StringDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def slugify(text: str) -> str:
    from slugify import slugify as make_slug  # loaded only when a post needs a slug made

    return str(make_slug(text))


def _split_front_matter(text: str, path: str) -> tuple[str, str, int]:
    """-> (yaml text, body, first body line)."""
    if not text.strip():
        raise PipelineError(
            "file is empty",
            path=path,
            line=1,
            field="front matter",
            hint="start with a '---' line, then title: and date:, then '---'",
        )
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        raise PipelineError(
            "missing front matter",
            path=path,
            line=1,
            field="front matter",
            hint="the first line must be '---', followed by title: and date: and a closing '---'",
        )
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise PipelineError(
        "front matter is not closed",
        path=path,
        line=1,
        field="front matter",
        hint="add a line '---' after the last front-matter key",
    )


def _parse_yaml(source: str, path: str) -> tuple[dict[str, Any], dict[str, int]]:
    loader = _StringDateLoader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PipelineError(
                "front matter is empty", path=path, line=2, field="front matter", hint="add at least title: and date:"
            )
        if not isinstance(node, yaml.MappingNode):
            raise PipelineError(
                "front matter is not a mapping",
                path=path,
                line=node.start_mark.line + 2,
                field="front matter",
                hint="write 'key: value' lines",
            )
        lines = {}
        for key_node, _ in node.value:
            lines[str(key_node.value)] = key_node.start_mark.line + 2
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else 2
        problem = exc.problem or "invalid YAML"
        raise PipelineError(
            f"invalid YAML: {problem}",
            path=path,
            line=line,
            field="front matter",
            hint="check indentation, colons and quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"invalid YAML: {exc}", path=path, line=2, field="front matter") from None
    finally:
        loader.dispose()
    return data, lines


def _plain(value: Any, path: str, line: int, field_name: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise PipelineError(f"expected text, got {type(value).__name__}", path=path, line=line, field=field_name)
    # Plain text, taken literally: "<b>" stays the four characters "<b>" and every
    # channel escapes it as its format needs. Whitespace (CR/LF included) collapses
    # to single spaces, so a title can never start a second e-mail header.
    return " ".join(str(value).split())


def _http_url(value: Any, settings: Settings, path: str, line: int, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PipelineError("expected a URL", path=path, line=line, field=field_name)
    url = absolute_url(value.strip(), settings.clinic.base_url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise PipelineError(
            f"{value!r} is not an http(s) URL", path=path, line=line, field=field_name, hint="use https://..."
        )
    return url


def _sources(value: Any, settings: Settings, path: str, line: int) -> tuple[Source, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PipelineError(
            "expected a list of sources",
            path=path,
            line=line,
            field="sources",
            hint="write '- title: ...' and 'url: ...' items, or bare URLs",
        )
    sources = []
    for number, item in enumerate(value, start=1):
        where = f"sources[{number}]"
        if isinstance(item, str):
            url = _http_url(item, settings, path, line, where)
            sources.append(Source(title=url, url=url))
        elif isinstance(item, dict):
            extra = set(item) - {"title", "url"}
            if extra or "url" not in item:
                raise PipelineError(
                    "each source needs url (and optionally title)",
                    path=path,
                    line=line,
                    field=where,
                    hint="write '- title: Study name' then '  url: https://...'",
                )
            url = _http_url(item["url"], settings, path, line, where)
            title = _plain(item.get("title") or url, path, line, where)
            sources.append(Source(title=title, url=url))
        else:
            raise PipelineError("expected a URL or a {title, url} mapping", path=path, line=line, field=where)
    return tuple(sources)


def _channels(value: Any, path: str, line: int) -> frozenset[str]:
    if value is None:
        return frozenset(CHANNELS)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        chosen = set(value)
    elif isinstance(value, dict) and all(isinstance(v, bool) for v in value.values()):
        chosen = {c for c in CHANNELS if value.get(c, True)}
        value = list(value)
    else:
        raise PipelineError(
            "expected e.g. 'channels: {email: false}' or a list like [feed, social]",
            path=path,
            line=line,
            field="channels",
        )
    unknown = sorted(set(value) - set(CHANNELS))
    if unknown:
        raise PipelineError(
            f"unknown channel {unknown[0]!r}",
            path=path,
            line=line,
            field="channels",
            hint=f"known channels: {', '.join(CHANNELS)}",
        )
    return frozenset(chosen)


def _derive_summary(body_html: str) -> str:
    text = strip_tags(body_html.split("</p>", 1)[0]) if "<p>" in body_html else strip_tags(body_html)
    if len(text) <= _SUMMARY_CHARS:
        return text
    cut = text[: _SUMMARY_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + "…"


def parse_post(raw: bytes, path: str, settings: Settings) -> Post:
    """Validate one post file's bytes. Raises ``PipelineError`` on the first mistake."""
    text = decode_text(raw, path, hint="save the file as UTF-8 in your editor")
    text = text.removeprefix("\ufeff")
    yaml_text, body, body_line = _split_front_matter(text, path)
    data, lines = _parse_yaml(yaml_text, path)
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
            raise PipelineError(
                f"unknown key {key!r}", path=path, line=lines.get(str(key), 2), field=str(key), hint=hint
            )
    zone = settings.clinic.zone

    def line(key: str) -> int:
        return lines.get(key, 2)

    for required in ("title", "date"):
        if data.get(required) in (None, ""):
            raise PipelineError(
                "is required",
                path=path,
                line=line(required) if required in lines else 2,
                field=required,
                hint=f"add '{required}: ...' to the front matter",
            )
    title = _plain(data["title"], path, line("title"), "title")
    if not title:
        raise PipelineError("is empty after removing markup", path=path, line=line("title"), field="title")

    def when(key: str) -> datetime | None:
        if data.get(key) is None:
            return None
        try:
            return parse_datetime(data[key], zone)
        except DateProblem as exc:
            raise PipelineError(str(exc), path=path, line=line(key), field=key) from None

    date = when("date")
    assert date is not None
    updated = when("updated")
    if updated is not None and updated < date:
        raise PipelineError(
            "is before date",
            path=path,
            line=line("updated"),
            field="updated",
            hint="updated must be the same as or later than date",
        )

    stem = Path(path).stem
    slug_value = data.get("slug")
    if slug_value is None:
        slug = slugify(re.sub(r"^\d{4}-\d{2}-\d{2}-", "", stem))
    else:
        slug = str(slug_value)
        if not _SLUG.match(slug):
            raise PipelineError(
                f"{slug!r} is not a valid slug",
                path=path,
                line=line("slug"),
                field="slug",
                hint=f"use lowercase letters, digits and hyphens, e.g. {slugify(slug) or 'my-post'!r}",
            )
    if not slug:
        raise PipelineError(
            "cannot derive a slug from the file name", path=path, line=1, field="slug", hint="add 'slug: my-post'"
        )

    base = settings.clinic.base_url
    body_html, body_text = markdown_to_html_and_text(body, base)
    if not body_html.strip():
        raise PipelineError(
            "post has no body",
            path=path,
            line=body_line,
            field="body",
            hint="write the article below the closing '---'",
        )
    if data.get("summary") is not None:
        summary_html = markdown_inline_to_html(_raw_text(data["summary"], path, line("summary"), "summary"), base)
        summary = strip_tags(summary_html)
    else:
        summary = _derive_summary(body_html)
        summary_html = summary.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    tags_value = data.get("tags") or []
    if isinstance(tags_value, str):
        tags_value = [t for t in re.split(r"[,\s]+", tags_value) if t]
    if not isinstance(tags_value, list):
        raise PipelineError(
            "expected a list of tags", path=path, line=line("tags"), field="tags", hint="write 'tags: [pain, research]'"
        )
    tags = tuple(dict.fromkeys(_plain(t, path, line("tags"), "tags") for t in tags_value if str(t).strip()))

    image = _http_url(data["image"], settings, path, line("image"), "image") if data.get("image") else None
    image_alt = _plain(data["image_alt"], path, line("image_alt"), "image_alt") if data.get("image_alt") else None
    if image and not image_alt:
        raise PipelineError(
            "image has no alt text",
            path=path,
            line=line("image"),
            field="image_alt",
            hint="add 'image_alt: a short description of the picture' for readers using screen readers",
        )
    if "<img" in body_html:
        _check_body_alt(body_html, body, path, body_line)

    draft = data.get("draft", False)
    if not isinstance(draft, bool):
        raise PipelineError("expected true or false", path=path, line=line("draft"), field="draft")

    social_value = data.get("social") or {}
    if not isinstance(social_value, dict):
        raise PipelineError(
            "expected a mapping of platform to text",
            path=path,
            line=line("social"),
            field="social",
            hint="write 'social: {x: \"...\"}'",
        )
    social: dict[str, str] = {}
    for platform, override in social_value.items():
        if platform not in PLATFORMS:
            close = difflib.get_close_matches(str(platform), PLATFORMS, n=1)
            raise PipelineError(
                f"unknown platform {platform!r}",
                path=path,
                line=line("social"),
                field="social",
                hint=f"did you mean {close[0]!r}?" if close else f"known: {', '.join(PLATFORMS)}",
            )
        social[str(platform)] = _plain(override, path, line("social"), f"social.{platform}")

    subject = _plain(data["subject"], path, line("subject"), "subject") if data.get("subject") else title
    preheader = _plain(data["preheader"], path, line("preheader"), "preheader") if data.get("preheader") else summary
    author = _plain(data["author"], path, line("author"), "author") if data.get("author") else settings.feed.author

    return Post(
        path=path,
        slug=slug,
        title=title,
        date=date,
        updated=updated,
        author=author,
        summary=summary,
        summary_html=summary_html,
        body_markdown=body,
        body_html=body_html,
        body_text=body_text,
        tags=tags,
        image=image,
        image_alt=image_alt,
        sources=_sources(data.get("sources"), settings, path, line("sources")),
        draft=draft,
        channels=_channels(data.get("channels"), path, line("channels")),
        social=social,
        subject=subject,
        preheader=preheader,
        content_hash=hashlib.sha256(raw).hexdigest(),
        body_line=body_line,
        lines=lines,
    )


def _raw_text(value: Any, path: str, line: int, field_name: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise PipelineError(f"expected text, got {type(value).__name__}", path=path, line=line, field=field_name)
    return str(value)


_IMG = re.compile(r"<img\b[^>]*>")


def _check_body_alt(body_html: str, body: str, path: str, body_line: int) -> None:
    for tag in _IMG.findall(body_html):
        alt = re.search(r'\balt="([^"]*)"', tag)
        if not alt or not alt.group(1).strip():
            src = re.search(r'\bsrc="([^"]*)"', tag)
            name = src.group(1).rsplit("/", 1)[-1] if src else ""
            offset = next((i for i, text in enumerate(body.splitlines()) if name and name in text), 0)
            raise PipelineError(
                f"image {name or ''} has no alt text".replace("  ", " "),
                path=path,
                line=body_line + offset,
                field="body",
                hint="write ![a short description](picture.jpg)",
            )


def post_files(posts_dir: Path) -> list[Path]:
    """Every post file (``*.md``, not hidden), sorted. A posts folder that is missing or
    cannot be read is an error: it must never pass for a folder without posts."""
    try:
        with os.scandir(posts_dir) as found:
            names = [entry.path for entry in found if entry.name.endswith(".md") and entry.is_file()]
    except OSError as exc:
        raise posts_folder_fault(exc, posts_dir) from None
    return sorted(Path(name) for name in names if not os.path.basename(name).startswith("."))


def posts_folder_fault(exc: OSError, posts_dir: Path) -> FileFault:
    if isinstance(exc, FileNotFoundError):
        return FileFault(
            "the posts folder does not exist",
            path=display_path(posts_dir),
            hint="create it, or set [paths] posts in pipeline.toml (or pass --posts DIR)",
        )
    return os_fault(exc, path=posts_dir, doing="cannot read the posts folder")


def errors_for_slug(errors: Iterable[PipelineError], slug: str) -> list[PipelineError]:
    """The errors that may belong to the post with ``slug``: those of files named like it."""
    return [e for e in errors if e.path and slug in Path(e.path).stem]


def drop_clashing(posts: Sequence[Post]) -> tuple[list[Post], list[PipelineError]]:
    """``posts`` without those whose slug another post already uses, and the clash errors."""
    clashes = check_unique_slugs(posts)
    clashing = {e.path for e in clashes}
    return [p for p in posts if p.path not in clashing], clashes


def check_unique_slugs(posts: Iterable[Post]) -> list[PipelineError]:
    """Two posts with one slug would share one URL and one feed id: refuse both."""
    seen: dict[str, Post] = {}
    errors = []
    for post in sorted(posts, key=lambda p: p.path):
        if post.slug in seen:
            first = seen[post.slug]
            errors.append(
                PipelineError(
                    f"slug {post.slug!r} is already used by {first.path}",
                    path=post.path,
                    line=post.line_of("slug") if "slug" in post.lines else 1,
                    field="slug",
                    hint="give one of them another 'slug:' or file name",
                )
            )
        else:
            seen[post.slug] = post
    return errors

"""A post file (YAML front matter + CommonMark body) -> a validated ``Post``.

Every user mistake becomes a ``PipelineError`` with the file, line and field, and
every problem of a file is reported at once. Loading a folder never stops at the
first bad post: it returns the good posts and every error, so one bad post never
blocks the others.
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

from pipeline.config import PLATFORMS, Settings
from pipeline.content.dates import DateProblem, parse_datetime
from pipeline.content.fields import Findings, Source
from pipeline.content.frontmatter import parse_yaml, split_front_matter
from pipeline.content.markup import markdown_inline_to_html, markdown_to_html_and_text, strip_tags
from pipeline.content.skeleton import find_placeholder
from pipeline.errors import FileFault, PipelineError, decode_text
from pipeline.faults import display_path, os_fault

__all__ = ["CHANNELS", "CONTACT_LINK", "KNOWN_KEYS", "SLUG_PATTERN", "Post", "Source", "parse_post", "slugify"]

CHANNELS = ("feed", "email", "social")
KNOWN_KEYS = (
    "title", "date", "updated", "slug", "author", "summary", "tags", "image", "image_alt",
    "sources", "draft", "channels", "social", "subject", "preheader",
)  # fmt: skip
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SUMMARY_CHARS = 240
# [book a visit](contact:) in a post links to clinic.contact_url, or an e-mail to the clinic.
CONTACT_LINK = "contact:"


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
    # Fixed on the way in (e.g. markup removed from a title): reported, never refused.
    warnings: tuple[PipelineError, ...] = ()

    def line_of(self, key: str) -> int:
        return self.lines.get(key, 1)

    def is_released(self, now: datetime) -> bool:
        return not self.draft and self.date <= now

    @property
    def modified(self) -> datetime:
        return self.updated or self.date


def slugify(text: str) -> str:
    from slugify import slugify as make_slug  # loaded only when a post needs a slug made

    return str(make_slug(text))


def parse_post(raw: bytes, path: str, settings: Settings) -> Post:
    """Validate one post file's bytes.

    Raises ``PipelineError`` for its one problem, or ``PipelineErrors`` with every
    problem found (each field is checked even when another is wrong). Only a file
    that cannot be read as front matter stops at its first problem.
    """
    text = decode_text(raw, path, hint="save the file as UTF-8 in your editor")
    text = text.removeprefix("\ufeff")
    yaml_text, body, body_line = split_front_matter(text, path)
    data, lines, items = parse_yaml(yaml_text, path)
    found = Findings(path, lines, items)
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
            found.problem(str(key), f"unknown key {key!r}", hint=hint)
    for required in ("title", "date"):
        if data.get(required) in (None, ""):
            found.problem(required, "is required", hint=f"add '{required}: ...' to the front matter")

    title = found.plain(data["title"], "title", what="title") if data.get("title") not in (None, "") else None
    if title == "":
        found.problem("title", "is empty after removing markup", hint="write the title as plain text")
    date = _when(found, data, "date", settings)
    updated = _when(found, data, "updated", settings)
    if date is not None and updated is not None and updated < date:
        found.problem("updated", "is before date", hint="updated must be the same as or later than date")
    slug = _slug(found, data.get("slug"), path)

    base = settings.clinic.base_url
    links = {CONTACT_LINK: settings.clinic.contact_link}
    body_html, body_text = markdown_to_html_and_text(body, base, links)
    if not body_html.strip():
        found.problem("body", "post has no body", hint="write the article below the closing '---'")
    elif "<img" in body_html:
        _check_body_alt(found, body_html, body, body_line)
    summary_text = found.text(data["summary"], "summary") if data.get("summary") is not None else None
    if summary_text is not None:
        summary_html = markdown_inline_to_html(str(data["summary"]), base, links)
        summary = strip_tags(summary_html)
    else:
        summary = _derive_summary(body_html)
        summary_html = summary.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    draft = data.get("draft", False)
    if not isinstance(draft, bool):
        found.problem("draft", "expected true or false")
    if draft is not True:
        _refuse_placeholders(found, body, body_line, summary_text)

    tags = _tags(found, data.get("tags"))
    image = found.image_url(data["image"], "image", base) if data.get("image") else None
    image_alt = found.text(data["image_alt"], "image_alt") if data.get("image_alt") else None
    if data.get("image") and not data.get("image_alt"):
        found.problem(
            "image",
            "image has no alt text",
            field="image_alt",
            hint="add 'image_alt: a short description of the picture' for readers using screen readers",
        )
    social = _social(found, data.get("social"))
    subject = found.text(data["subject"], "subject") if data.get("subject") else title
    preheader = found.text(data["preheader"], "preheader") if data.get("preheader") else summary
    author = found.text(data["author"], "author") if data.get("author") else settings.feed.author
    sources = found.sources(data.get("sources"))
    channels = _channels(found, data.get("channels"))

    found.raise_if_any()
    assert title and date and slug and subject is not None and preheader is not None and author is not None
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
        sources=sources,
        draft=bool(draft),
        channels=channels,
        social=social,
        subject=subject,
        preheader=preheader,
        content_hash=hashlib.sha256(raw).hexdigest(),
        body_line=body_line,
        lines=lines,
        warnings=tuple(found.warnings),
    )


def _when(found: Findings, data: Mapping[str, Any], key: str, settings: Settings) -> datetime | None:
    if data.get(key) in (None, ""):
        return None
    try:
        return parse_datetime(data[key], settings.clinic.zone)
    except DateProblem as exc:
        found.problem(key, str(exc))
        return None


def _slug(found: Findings, value: Any, path: str) -> str | None:
    if value is None:
        slug = slugify(re.sub(r"^\d{4}-\d{2}-\d{2}-", "", Path(path).stem))
        if not slug:
            found.problem("slug", "cannot derive a slug from the file name", hint="add 'slug: my-post'")
            return None
        return slug
    slug = str(value)
    if not SLUG_PATTERN.match(slug):
        found.problem(
            "slug",
            f"{slug!r} is not a valid slug",
            hint=f"use lowercase letters, digits and hyphens, e.g. {slugify(slug) or 'my-post'!r}",
        )
        return None
    return slug


def _refuse_placeholders(found: Findings, body: str, body_line: int, summary: str | None) -> None:
    """A post that may be released must not carry the skeleton's placeholder text."""
    if summary is not None and find_placeholder(summary) is not None:
        found.problem(
            "summary",
            "still holds the placeholder text of `pipeline new`",
            hint="replace it with one or two sentences about the article, or delete the summary line",
        )
    offset = find_placeholder(body)
    if offset is not None:
        found.problem(
            "body",
            "still holds the placeholder text of `pipeline new`",
            line=body_line + offset,
            hint="replace the placeholder with the article, or keep 'draft: true' until it is written",
        )


def _tags(found: Findings, value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = [t for t in re.split(r"[,\s]+", value) if t]
    if not isinstance(value, list):
        found.problem("tags", "expected a list of tags", hint="write 'tags: [pain, research]'")
        return ()
    tags = []
    for number, item in enumerate(value, start=1):
        if str(item).strip():
            tag = found.plain(item, f"tags[{number}]", what="tag")
            if tag:
                tags.append(tag)
    return tuple(dict.fromkeys(tags))


def _social(found: Findings, value: Any) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, dict):
        found.problem("social", "expected a mapping of platform to text", hint="write 'social: {x: \"...\"}'")
        return {}
    social: dict[str, str] = {}
    for platform, override in value.items():
        if platform not in PLATFORMS:
            close = difflib.get_close_matches(str(platform), PLATFORMS, n=1)
            found.problem(
                f"social.{platform}",
                f"unknown platform {platform!r}",
                field="social",
                hint=f"did you mean {close[0]!r}?" if close else f"known: {', '.join(PLATFORMS)}",
            )
            continue
        text = found.text(override, f"social.{platform}")
        if text is not None:
            social[str(platform)] = text
    return social


def _channels(found: Findings, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset(CHANNELS)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        chosen = set(value)
    elif isinstance(value, dict) and all(isinstance(v, bool) for v in value.values()):
        chosen = {c for c in CHANNELS if value.get(c, True)}
        value = list(value)
    else:
        found.problem("channels", "expected e.g. 'channels: {email: false}' or a list like [feed, social]")
        return frozenset(CHANNELS)
    unknown = sorted(set(value) - set(CHANNELS))
    if unknown:
        found.problem("channels", f"unknown channel {unknown[0]!r}", hint=f"known channels: {', '.join(CHANNELS)}")
    return frozenset(chosen)


def _derive_summary(body_html: str) -> str:
    text = strip_tags(body_html.split("</p>", 1)[0]) if "<p>" in body_html else strip_tags(body_html)
    if len(text) <= _SUMMARY_CHARS:
        return text
    cut = text[: _SUMMARY_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + "…"


_IMG = re.compile(r"<img\b[^>]*>")


def _check_body_alt(found: Findings, body_html: str, body: str, body_line: int) -> None:
    for tag in _IMG.findall(body_html):
        alt = re.search(r'\balt="([^"]*)"', tag)
        if not alt or not alt.group(1).strip():
            src = re.search(r'\bsrc="([^"]*)"', tag)
            name = src.group(1).rsplit("/", 1)[-1] if src else ""
            offset = next((i for i, text in enumerate(body.splitlines()) if name and name in text), 0)
            found.problem(
                "body",
                f"image {name or ''} has no alt text".replace("  ", " "),
                line=body_line + offset,
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

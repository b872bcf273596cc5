"""A post -> one snippet per platform, measured by each platform's own rules.

The text comes from the shared ``social/body.txt`` template (or the post's
per-platform override); ``social_rules.compose`` fits it to the platform,
keeping the link, the clinic's handle and the hashtags whole.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta

from pipeline import urls
from pipeline.channels.templating import render_template, utm_link
from pipeline.config import PLATFORMS, Settings
from pipeline.content.dates import to_utc_iso
from pipeline.content.posts import Post
from pipeline.spreadsheet import guard_cell

if TYPE_CHECKING:
    from pipeline.channels.social.rules import Snippet

SnippetData = Mapping[str, Any]  # Snippet.as_dict(): what the JSON file and the queue hold


def social_link(post: Post, settings: Settings, platform: str) -> str:
    return utm_link(settings, urls.post_url(settings, post.slug), platform=platform, medium="social", slug=post.slug)


@functools.lru_cache(maxsize=8)
def _template_uses_platform(env: jinja2.Environment) -> bool:
    assert env.loader is not None
    source = env.loader.get_source(env, "social/body.txt")[0]
    return "platform" in jinja2.meta.find_undeclared_variables(env.parse(source))


def render_snippets(post: Post, settings: Settings, env: jinja2.Environment) -> dict[str, Snippet]:
    # Imported here: twitter-text compiles large regular expressions at import (~0.3 s),
    # which a no-op rebuild, served from the cache, should not pay.
    from pipeline.channels.social.rules import compose

    snippets = {}
    per_platform = _template_uses_platform(env)
    bodies: dict[tuple[str, str], str] = {}
    for platform in PLATFORMS:
        override = post.social.get(platform, "")
        # The text is the same for every platform unless the template asks which one it
        # is for or the post overrides it: render each distinct text once.
        key = (platform if per_platform else "", override)
        if key not in bodies:
            bodies[key] = render_template(
                env, "social/body.txt", {"post": post, "platform": platform, "override": override}
            )
        body = bodies[key]
        snippets[platform] = compose(
            platform,
            body=" ".join(body.split()),
            link=social_link(post, settings, platform),
            handle=settings.social.handles[platform].handle,
            hashtags=post.tags,
            mastodon_limit=settings.social.mastodon_limit,
        )
    return snippets


def snippets_data(snippets: Mapping[str, Snippet]) -> dict[str, SnippetData]:
    return {platform: snippets[platform].as_dict() for platform in PLATFORMS}


# One encoder for every call: json.dumps with any option builds a new one each time.
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def snippets_json(post: Post, snippets: Mapping[str, SnippetData], settings: Settings) -> bytes:
    document = {
        "slug": post.slug,
        "title": post.title,
        "release_at": to_utc_iso(post.date),
        "url": urls.post_url(settings, post.slug),
        **{platform: dict(snippets[platform]) for platform in PLATFORMS},
    }
    # One key per line, each value compact: diff-friendly, and json's C encoder
    # (indent= falls back to the pure-Python one, ~1 ms a post) does the work.
    lines = [f"  {_to_json(key)}: {_to_json(value)}" for key, value in document.items()]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


QUEUE_COLUMNS = (
    "release_at_utc",
    "release_at_local",
    "platform",
    "slug",
    "handle",
    "text",
    "length",
    "limit",
    "link",
    "note",
)


def queue_csv(rows: Sequence[tuple[Post, Mapping[str, SnippetData]]], settings: Settings) -> bytes:
    """One row per platform and post, oldest release first, for a scheduler's bulk import."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(QUEUE_COLUMNS)
    for post, snippets in sorted(rows, key=lambda r: (r[0].date, r[0].slug)):
        local: datetime = post.date.astimezone(settings.clinic.zone)
        for platform in PLATFORMS:
            snippet = snippets[platform]
            cells = (
                to_utc_iso(post.date),
                local.isoformat(),
                platform,
                post.slug,
                settings.social.handles[platform].handle,
                snippet["text"],
                snippet["length"],
                snippet["limit"],
                social_link(post, settings, platform),
                snippet["note"],
            )
            # Staff open this file in a spreadsheet: no cell may run as a formula.
            writer.writerow(guard_cell(cell) if isinstance(cell, str) else cell for cell in cells)
    return buffer.getvalue().encode("utf-8")

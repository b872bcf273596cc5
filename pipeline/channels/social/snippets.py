"""A post -> one snippet per platform, measured by each platform's own rules.

The words come from ``templates/social/PLATFORM.txt`` when there is one, else from the
shared ``social/body.txt`` (both see the post, the platform, the post's own ``social:``
text for it as ``override``, and ``handles``: the clinic's confirmed handles a snippet
may name). ``mentions.clean_mentions`` keeps self-mentions and guessed handles out;
``compose`` keeps whole sentences beside the link and the hashtags.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2

from pipeline import urls
from pipeline.channels.social.compose import NoRoom, Snippet, compose
from pipeline.channels.social.mentions import clean_mentions, clinic_handles, usable_handles
from pipeline.channels.templating import render_template, utm_link
from pipeline.config import PLATFORMS, Settings
from pipeline.content.dates import to_utc_iso
from pipeline.content.posts import Post
from pipeline.errors import PipelineError
from pipeline.spreadsheet import guard_cell

SnippetData = Mapping[str, Any]  # Snippet.as_dict(): what the JSON file and the queue hold


def share_image_url(post: Post, settings: Settings) -> str:
    """The post's own ``image`` when it has one, else its generated share card."""
    return post.image or urls.share_image_url(settings, post.slug)


def social_link(post: Post, settings: Settings, platform: str) -> str:
    return utm_link(settings, urls.post_url(settings, post.slug), platform=platform, medium="social", slug=post.slug)


def _template_for(env: jinja2.Environment, platform: str) -> str:
    name = f"social/{platform}.txt"
    assert env.loader is not None
    try:
        env.loader.get_source(env, name)
    except jinja2.TemplateNotFound:
        return "social/body.txt"
    return name


def render_snippets(post: Post, settings: Settings, env: jinja2.Environment) -> dict[str, Snippet]:
    """Every platform's snippet; a ``PipelineError`` naming ``social.PLATFORM`` when one
    platform has no room for even the first sentence."""
    handles = clinic_handles(settings)
    snippets = {}
    for platform in PLATFORMS:
        override = post.social.get(platform, "")
        context = {
            "post": post,
            "platform": platform,
            "override": override,
            "handles": usable_handles(handles, platform),
        }
        body = render_template(env, _template_for(env, platform), context)
        body = clean_mentions(body, platform, handles, settings.clinic.name)
        try:
            snippets[platform] = compose(
                platform,
                body=body,
                link=social_link(post, settings, platform),
                hashtags=post.tags,
                own_text=bool(override),
                mastodon_limit=settings.social.mastodon_limit,
            )
        except NoRoom as problem:
            raise PipelineError(
                f"no room for a {platform} snippet: {str(problem).removeprefix(platform + ': ')}",
                path=post.path,
                field=f"social.{platform}",
                hint=f"write the post's own text for {platform}, e.g. 'social: {{{platform}: \"One short sentence.\"}}'",
            ) from None
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
    "image",
    "posted_by_pipeline",
)


def queue_csv(rows: Sequence[tuple[Post, Mapping[str, SnippetData]]], settings: Settings) -> bytes:
    """One row per platform and post, oldest release first, for a scheduler's bulk import.

    ``image`` is the picture for the post (Instagram needs one); ``posted_by_pipeline``
    says which rows the pipeline posts itself at release (``[social.post.*]``): those
    are not to be imported elsewhere."""
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
                share_image_url(post, settings),
                "yes" if platform in settings.social.post.platforms() else "",
            )
            # Staff open this file in a spreadsheet: no cell may run as a formula.
            writer.writerow(guard_cell(cell) if isinstance(cell, str) else cell for cell in cells)
    return buffer.getvalue().encode("utf-8")

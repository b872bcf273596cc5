"""What each file in ``out/`` holds: posts in, ``{path under out/: bytes}`` out. Pure.

Apart from build.py, which decides what to render and writes it, so that a build
with nothing to render never loads the renderers (MJML, twitter-text). The message
as a subscriber gets it (``.eml``) is the mail layer's: ``pipeline preview`` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2

from pipeline.channels.feed import render_feeds
from pipeline.channels.newsletter import Newsletter, render_digest, render_post_newsletter
from pipeline.channels.social.snippets import SnippetData, queue_csv, render_snippets, snippets_data, snippets_json
from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.errors import PipelineError


def post_snippets(post: Post, settings: Settings, env: jinja2.Environment) -> dict[str, SnippetData]:
    return snippets_data(render_snippets(post, settings, env))


def post_outputs(
    post: Post,
    settings: Settings,
    env: jinja2.Environment,
    snippets: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    newsletter: Newsletter | None = None,
) -> dict[str, bytes]:
    """Every file one released post contributes (from its newsletter and snippets when
    the caller has them already)."""
    newsletter = newsletter or render_post_newsletter(post, settings, env)
    if "email" in post.channels:
        outputs = newsletter_outputs(newsletter, settings)
    else:
        outputs = {f"archive/{post.slug}.html": newsletter.web_html.encode()}
    if "social" in post.channels:
        snippets = snippets or post_snippets(post, settings, env)
        outputs[f"social/{post.slug}.json"] = snippets_json(post, snippets, settings)
    return outputs


def newsletter_outputs(newsletter: Newsletter, settings: Settings, *, folder: str = "newsletter") -> dict[str, bytes]:
    return {
        f"{folder}/{newsletter.key}.html": newsletter.html.encode(),
        f"{folder}/{newsletter.key}.txt": newsletter.text.encode(),
        f"archive/{newsletter.key}.html": newsletter.web_html.encode(),
    }


def shared_outputs(
    settings: Settings,
    env: jinja2.Environment,
    feed_posts: Sequence[Post],
    queue: Sequence[tuple[Post, Mapping[str, SnippetData]]],
    digest_posts: Sequence[Post],
    now: datetime,
) -> tuple[dict[str, bytes], PipelineError | None]:
    """The feeds, the social queue and the latest digest, and the digest's error if it has one
    (the feeds and the queue are still made)."""
    feeds = render_feeds(feed_posts, settings, env)
    outputs = {"feed.xml": feeds.rss, "atom.xml": feeds.atom, "feed.json": feeds.json}
    outputs["social/queue.csv"] = queue_csv(queue, settings)
    if not digest_posts:
        return outputs, None
    try:
        digest = render_digest(digest_posts, settings, env, now=now)
    except PipelineError as error:
        return outputs, error
    for rel, data in newsletter_outputs(digest, settings).items():
        # The latest digest keeps one stable name; its web page keeps its dated one.
        outputs[rel if rel.startswith("archive/") else rel.replace(digest.key, "digest")] = data
    return outputs, None

"""Which newsletter a send is about: one post by slug, or a digest of recent posts.

Both are rendered from the posts folder at ``now``; a post that is a draft, not
released yet, or has e-mail turned off is refused with a reason.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.channels.newsletter import Newsletter, render_digest, render_post_newsletter
from pipeline.channels.templating import local_time, make_environment
from pipeline.config import Settings
from pipeline.content.posts import Post
from pipeline.errors import PipelineError
from pipeline.site.build import find_post, load_posts


def post_for_slug(settings: Settings, slug: str, now: datetime) -> Post:
    """The released, e-mailable post with this slug, or a ``PipelineError`` saying why not."""
    post = find_post(settings, slug)
    if post.draft:
        raise PipelineError(
            "is a draft; it is never e-mailed", path=post.path, field="draft", hint="remove 'draft: true'"
        )
    if post.date > now:
        raise PipelineError(
            f"is not released yet (it is dated {local_time(post.date, settings, '%Y-%m-%d %H:%M %Z')})",
            path=post.path,
            line=post.line_of("date"),
            field="date",
            hint="wait for its date, or pass --now",
        )
    if "email" not in post.channels:
        raise PipelineError("has e-mail turned off", path=post.path, line=post.line_of("channels"), field="channels")
    return post


def newsletter_for_slug(settings: Settings, slug: str, now: datetime) -> Newsletter:
    return render_post_newsletter(post_for_slug(settings, slug, now), settings, make_environment(settings))


def digest_posts(settings: Settings, since: datetime, now: datetime) -> list[Post]:
    """Posts released after ``since`` and up to ``now`` that go out by e-mail."""
    posts, _errors = load_posts(settings)
    return [p for p in posts if since < p.date <= now and not p.draft and "email" in p.channels]


def digest_newsletter(settings: Settings, since: datetime, now: datetime) -> Newsletter:
    posts = digest_posts(settings, since, now)
    if not posts:
        raise PipelineError(
            f"no post was released between {local_time(since, settings, '%Y-%m-%d %H:%M')} and "
            f"{local_time(now, settings, '%Y-%m-%d %H:%M')}; there is nothing to put in a digest",
            field="--since",
        )
    return render_digest(posts, settings, make_environment(settings), now=now)

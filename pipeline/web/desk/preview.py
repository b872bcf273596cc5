"""Preview (``/desk/posts/SLUG/preview``): the inbox line, the e-mail at phone and
desktop width in sandboxed frames, the plain-text part, the archive page, the feed
entry, and every platform's snippet with its measured length against the limit.
Drafts and future posts too: nothing here touches the ledger."""

from __future__ import annotations

import json
from email.utils import formataddr

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pipeline import urls
from pipeline.channels.feed import render_feeds
from pipeline.channels.newsletter import Newsletter, render_post_newsletter
from pipeline.channels.social.snippets import render_snippets
from pipeline.config import PLATFORMS
from pipeline.errors import PipelineError
from pipeline.ledger.staff import StaffMember
from pipeline.site.build import find_post
from pipeline.web.desk.actions import action_problem
from pipeline.web.desk.pages import desk_page, when
from pipeline.web.security import FRAMED_PREVIEW_HEADERS
from pipeline.web.state import WebState, web_state


def _newsletter(web: WebState, slug: str) -> Newsletter:
    return render_post_newsletter(find_post(web.settings, slug), web.settings, web.env)


def _preview(web: WebState, slug: str) -> dict[str, object]:
    post = find_post(web.settings, slug)
    newsletter = render_post_newsletter(post, web.settings, web.env)
    snippets = render_snippets(post, web.settings, web.env)
    feed = json.loads(render_feeds([post], web.settings, web.env).json)
    news = web.settings.newsletter
    return {
        "title": f"Preview: {post.title}",
        "post": post,
        "slug": slug,
        "when": when(web, post.date),
        "sender": formataddr((news.from_name, news.from_address)),
        "newsletter": newsletter,
        "text_part": newsletter.text.replace(urls.TOKEN_PLACEHOLDER, "(each subscriber's own link)").replace(
            urls.MANAGE_PLACEHOLDER, "(each subscriber's own link)"
        ),
        "snippets": [snippets[p] for p in PLATFORMS],
        "feed_item": (feed.get("items") or [None])[0],
    }


async def preview_page(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]
    try:
        context = await run_in_threadpool(_preview, web, slug)
    except PipelineError as error:
        return action_problem(request, staff, slug, error)
    return desk_page(request, staff, "preview.html", context)


async def framed(request: Request, staff: StaffMember) -> Response:
    """The e-mail (``email``), its web version (``web``) or the feed entry's content
    (``feed``), for a sandboxed frame on the preview page: no script, nothing sent."""
    web = web_state(request)
    slug, part = request.path_params["slug"], request.path_params["part"]
    try:
        if part in ("email", "web"):
            newsletter = await run_in_threadpool(_newsletter, web, slug)
            html = newsletter.html if part == "email" else newsletter.web_html
            html = html.replace(urls.TOKEN_PLACEHOLDER, "preview").replace(urls.MANAGE_PLACEHOLDER, "preview")
        elif part == "feed":
            item = (await run_in_threadpool(_preview, web, slug))["feed_item"]
            html = f"<!doctype html><meta charset='utf-8'><title>Feed entry</title>{item['content_html'] if isinstance(item, dict) else ''}"
        else:
            raise HTTPException(404)
    except PipelineError as error:
        raise HTTPException(400, str(error)) from None
    return HTMLResponse(html, headers={**FRAMED_PREVIEW_HEADERS, "cache-control": "no-store"})

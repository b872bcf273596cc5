"""The archive of sent newsletters and the feeds, served from the built ``out/``.

Built files go out through Starlette's ``FileResponse`` (ETag and Last-Modified from
the file's size and time: the build rewrites a shared output only when its bytes
change) and ``StaticFiles.is_not_modified`` (If-None-Match, then If-Modified-Since,
answered with 304).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles

from pipeline.content.dates import local_time
from pipeline.web.cards import share_card
from pipeline.web.state import WebState, web_state

FEEDS = {
    "feed.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
}
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,199}$")
_CONDITIONS = StaticFiles(directory=None, check_dir=False)  # only its is_not_modified is used


def built_response(
    web: WebState, request: Request, rel: str, media_type: str, extra: Mapping[str, str] = {}
) -> Response | None:
    """The built file ``out/REL`` (or a 304), or None when there is none."""
    path = web.settings.out_dir / rel
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not os.path.isfile(path):
        return None
    headers = {"cache-control": "public, max-age=300", **extra}
    response = FileResponse(path, media_type=media_type, headers=headers, stat_result=stat)
    if _CONDITIONS.is_not_modified(response.headers, request.headers):
        return NotModifiedResponse(response.headers)
    return response


async def archive_index(request: Request) -> Response:
    web = web_state(request)
    campaigns = await run_in_threadpool(web.store.list_campaigns)
    releases = await run_in_threadpool(web.store.list_releases)
    zone = web.settings.clinic.zone
    # A post's newsletter is listed under the article's own date; a digest under its sending day.
    dated = [(releases[c.key].post_date if c.key in releases else c.created_at, c) for c in campaigns]
    entries = [
        {
            "key": c.key,
            "subject": c.subject,
            "date": local_time(when, web.settings),
            "iso": when.astimezone(zone).date().isoformat(),
        }
        for when, c in sorted(dated, key=lambda pair: (pair[0], pair[1].id), reverse=True)
        if SLUG.match(c.key) and (web.settings.out_dir / "archive" / f"{c.key}.html").is_file()
    ]
    return web.page(
        "web/archive.html",
        {"title": "Newsletter archive", "entries": entries},
        headers={"cache-control": "public, max-age=60"},
    )


async def archive_page(request: Request) -> Response:
    slug = request.path_params["slug"]
    response = None
    if SLUG.match(slug):
        response = built_response(web_state(request), request, f"archive/{slug}.html", "text/html; charset=utf-8")
    elif slug.endswith(".png") and SLUG.match(slug.removesuffix(".png")):  # the post's share card
        response = await share_card(request, slug.removesuffix(".png"))
    if response is None:
        raise HTTPException(404)
    return response


async def archive_redirect(request: Request) -> Response:
    return RedirectResponse("/archive/", status_code=308)


async def feed(request: Request) -> Response:
    web = web_state(request)
    name = request.url.path.lstrip("/")
    response = built_response(web, request, name, FEEDS[name], {"access-control-allow-origin": "*"})
    if response is None:
        return web.error_page(404, "No feed yet", "The feed has not been published yet. Please come back later.")
    return response

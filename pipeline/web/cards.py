"""Share cards (``/archive/SLUG.png``), drawn when first asked for and kept.

An archive page's ``og:image`` points here. The card shows the page's own title (its
``og:title``), so it needs nothing but the built page; it is drawn once, in a worker
thread, kept in ``state/cards/`` under a name made from everything it shows, and sent
with an ETag. Drawing every card at build time would cost a 10,000-post archive
minutes of CPU for pictures almost nobody asks for.
"""

from __future__ import annotations

import hashlib
import html
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.files import write_atomic
from pipeline.web.state import WebState, web_state

CARD_VERSION = "1"  # part of every card's name: change it when the drawing changes
_OG_TITLE = re.compile(r'<meta property="og:title" content="([^"]*)"')
_HEAD_BYTES = 16384  # the head, where the page's meta tags are


def _title(web: WebState, slug: str) -> str | None:
    try:
        with (web.settings.out_dir / "archive" / f"{slug}.html").open("rb") as page:
            head = page.read(_HEAD_BYTES).decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    found = _OG_TITLE.search(head)
    return html.unescape(found.group(1)) if found else None


def _card(web: WebState, title: str, key: str) -> bytes:
    path = web.settings.state_dir / "cards" / f"{key}.png"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        from pipeline.channels.social.card import render_card  # Pillow loads with the first card

        data = render_card(title, web.settings)
        write_atomic(path, data)
        return data


async def share_card(request: Request, slug: str) -> Response | None:
    """The card of the archive page ``slug`` (or a 304), or None when there is no such page."""
    web = web_state(request)
    title = await run_in_threadpool(_title, web, slug)
    if title is None:
        return None
    clinic = web.settings.clinic
    key = hashlib.sha256("\0".join((CARD_VERSION, title, clinic.name, clinic.base_url)).encode()).hexdigest()[:32]
    headers = {"etag": f'"{key}"', "cache-control": "public, max-age=86400"}
    if request.headers.get("if-none-match", "").strip() in (f'"{key}"', f'W/"{key}"', "*"):
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(_card, web, title, key)
    return Response(data, media_type="image/png", headers=headers)

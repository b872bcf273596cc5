"""The web app: the public pages (subscribe, confirm, unsubscribe, the archive and the
feeds) and the staff desk under ``/desk/``.

``create_app(settings)`` returns a Starlette app; ``pipeline serve`` runs it with
uvicorn. The routes live in one module per area (``public``, ``archive``,
``desk/...``); security (headers, body limit, CSRF, log redaction, sessions) is decided
once, in ``security``, ``csrf``, ``logs`` and ``desk/auth``.

Public routes
    GET  / and /subscribe        the subscribe form (email, optional name, honeypot, CSRF token)
    POST /subscribe              the same neutral "check your inbox" page for every valid address
    GET  /confirm/{token}        one button; changes nothing (mail scanners open every link)
    POST /confirm/{token}        pending -> active, then a welcome page; no other field needed
    GET  /unsubscribe/{token}    one button; changes nothing (mail scanners prefetch links)
    POST /unsubscribe/{token}    RFC 8058 one-click: body ``List-Unsubscribe=One-Click``
    GET  /archive/               sent newsletters, newest first
    GET  /archive/{slug}         a newsletter's web version, as built into ``out/archive/``
    GET  /archive/{slug}.png     a post's share card (og:image), drawn when first asked for
    GET  /feed.xml, /atom.xml, /feed.json   the built feeds, with ETag / Last-Modified / 304

Every response carries a CSP (no script on public pages; only the desk's own script
on desk pages), ``nosniff`` and frame denial; request bodies are capped; tokens never
reach a log; a bug gets a plain 500 page, never a stack trace. Rate limits and the
login lockout are kept in memory: they hold for one server process (``pipeline
serve`` runs one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import load_secret
from pipeline.mail.transports import Transport, transport_from_spec
from pipeline.web import archive, public
from pipeline.web.csrf import CSRF_COOKIE
from pipeline.web.desk.routes import desk_routes
from pipeline.web.logs import RedactTokens, install_log_redaction, redact
from pipeline.web.public import mask_address
from pipeline.web.security import BodyLimit, BodyTooLarge, SecurityHeaders
from pipeline.web.state import WebLimits, WebState, web_state

__all__ = ["CSRF_COOKIE", "RedactTokens", "WebLimits", "create_app", "mask_address", "redact"]

logger = logging.getLogger("pipeline.web.app")

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(*, get: Endpoint, post: Endpoint) -> Endpoint:
    """One route per path, dispatching inside: a 405 then lists every allowed method."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


def public_routes() -> list[BaseRoute]:
    return [
        Route("/", public.subscribe_form, methods=["GET"]),
        Route("/subscribe", by_method(get=public.subscribe_form, post=public.subscribe), methods=["GET", "POST"]),
        Route("/confirm/{token}", by_method(get=public.confirm_page, post=public.confirm), methods=["GET", "POST"]),
        Route(
            "/unsubscribe/{token}",
            by_method(get=public.unsubscribe_page, post=public.unsubscribe),
            methods=["GET", "POST"],
        ),
        Route("/archive/", archive.archive_index, methods=["GET"]),
        Route("/archive", archive.archive_redirect, methods=["GET"]),
        Route("/archive/{slug}", archive.archive_page, methods=["GET"]),
        *(Route(f"/{name}", archive.feed, methods=["GET"]) for name in archive.FEEDS),
    ]


# --- errors ------------------------------------------------------------------------------


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {
        400: ("Something went wrong", exc.detail if exc.detail != "Bad Request" else "The request was incomplete."),
        403: ("Not allowed", exc.detail if exc.detail != "Forbidden" else "You may not do that."),
        404: ("Page not found", "There is nothing at this address. It may have moved, or the link is incomplete."),
        405: ("Not allowed", "This page cannot be used that way."),
    }
    title, message = titles.get(exc.status_code, (exc.detail, "Please go back and try again."))
    return web_state(request).error_page(exc.status_code, title, message, headers=exc.headers, path=request.url.path)


async def too_large_error(request: Request, exc: Exception) -> Response:
    return too_large(web_state(request))


def too_large(web: WebState) -> Response:
    return web.error_page(413, "Too much data", "That request was larger than any form on this site sends.")


async def server_error(request: Request, exc: Exception) -> Response:
    web = web_state(request)
    logger.error("internal error on %s %s: %r", request.method, redact(request.url.path), exc)
    return web.error_page(
        500,
        "Sorry, something broke",
        f"That is our fault, not yours. Please try again later, or write to {web.settings.clinic.email}.",
        path=request.url.path,
    )


# --- the factory ---------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    limits: WebLimits | None = None,
    clock: Callable[[], float] = time.time,
    transport: Transport | None = None,
) -> Starlette:
    """The ASGI app for ``settings``. Opens the ledger (and migrates it) at once, so a
    bad database URL or secret is reported before the server starts listening.
    ``clock`` (unix seconds) drives rate limits, CSRF tokens, sessions and lockouts."""
    web = WebState(
        settings=settings,
        store=Store.open(settings),
        transport=transport or transport_from_spec(settings.delivery.transport, settings),
        secret=load_secret(settings),
        limits=limits or WebLimits(),
        clock=clock,
    )
    desk = desk_routes(web)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            desk.close()
            web.store.close()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: http_error,
        BodyTooLarge: too_large_error,
        500: server_error,
    }
    app = Starlette(routes=[*public_routes(), *desk.routes], exception_handlers=handlers, lifespan=lifespan)
    # Outermost first: headers are added to every response, the 413 answer included.
    app.add_middleware(
        BodyLimit,
        max_bytes=web.limits.max_body_bytes,
        desk_max_bytes=web.limits.desk_max_body_bytes,
        too_large=lambda: too_large(web),
    )
    app.add_middleware(SecurityHeaders)
    app.state.web = web
    app.state.desk = desk
    install_log_redaction()
    return app

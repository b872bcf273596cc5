"""Security middleware: response headers (one CSP for the public pages, one for the
desk) and the request body limit."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DESK_PREFIX = "/desk"

_COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
SECURITY_HEADERS = {
    # No scripts anywhere; inline styles only (the newsletter's web pages and the shared
    # partials are styled inline, as e-mail HTML must be); images from anywhere secure.
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; font-src 'self' https:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    **_COMMON,
}
# The desk: its own script and style sheet only (no inline script, no inline style),
# previews framed from the desk itself, and never cached anywhere.
DESK_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "x-robots-tag": "noindex",
    **_COMMON,
}
# A newsletter or archive page shown inside the desk's preview frames: no script at all,
# sandboxed, and only the desk may frame it.
FRAMED_PREVIEW_HEADERS = {
    "content-security-policy": (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
        "font-src https:; frame-ancestors 'self'"
    ),
    "x-frame-options": "SAMEORIGIN",
}
NO_STORE = {"cache-control": "no-store", "x-robots-tag": "noindex"}


def headers_for(path: str) -> dict[str, str]:
    desk = path == DESK_PREFIX or path.startswith(DESK_PREFIX + "/")
    return DESK_HEADERS if desk else SECURITY_HEADERS


class BodyTooLarge(Exception):
    pass


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class SecurityHeaders:
    """Adds the path's security headers to every HTTP response (unless a route set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.public = _encoded(SECURITY_HEADERS)
        self.desk = _encoded(DESK_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.desk if headers_for(scope["path"]) is DESK_HEADERS else self.public

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in extra if name not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` (``desk_max_bytes`` under /desk/, where
    a post is saved): by Content-Length at once, or while streaming (``BodyTooLarge``,
    which the app turns into a 413 page)."""

    def __init__(self, app: ASGIApp, max_bytes: int, desk_max_bytes: int, too_large: Callable[[], Response]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.desk_max_bytes = desk_max_bytes
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.desk_max_bytes if headers_for(scope["path"]) is DESK_HEADERS else self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self.too_large()(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited, send)

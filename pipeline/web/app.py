"""The web app: subscribe with double opt-in, confirm, one-click unsubscribe, the archive and the feeds.

``create_app(settings)`` returns a Starlette app serving exactly the public URLs of
``pipeline.urls``; ``pipeline serve`` runs it with uvicorn.

Routes
    GET  / and /subscribe        the subscribe form (email, optional name, honeypot, CSRF token)
    POST /subscribe              the same neutral "check your inbox" page for every valid address
    GET  /confirm/{token}        one button; changes nothing (mail scanners open every link)
    POST /confirm/{token}        pending -> active, then a welcome page; no other field needed
    GET  /unsubscribe/{token}    one button; changes nothing (mail scanners prefetch links)
    POST /unsubscribe/{token}    RFC 8058 one-click: body ``List-Unsubscribe=One-Click``
    GET  /archive/               sent newsletters, newest first
    GET  /archive/{slug}         a newsletter's web version, as built into ``out/archive/``
    GET  /feed.xml, /atom.xml, /feed.json   the built feeds, with ETag / Last-Modified / 304

Privacy and safety, decided here once:

- No enumeration. ``POST /subscribe`` answers byte-identical pages whether the address
  is new, pending, active or unsubscribed, and whether a limit or the honeypot kicked in.
  The ledger write and the e-mail happen in a background task *after* the response, so
  the response time does not tell either.
- CSRF: the subscribe form carries a signed double-submit token (the same value in a
  SameSite=Strict cookie and in a hidden field, HMAC-signed with the pipeline secret).
  ``POST /unsubscribe/{token}`` and ``POST /confirm/{token}`` have none, on purpose: RFC
  8058 one-click requests come from mail providers without cookies, and the signed token
  in the path is itself a secret that a cross-site attacker cannot know. The button on
  the unsubscribe page posts the very same one-click body; the one on the confirm page
  posts nothing else.
- Opening a link changes nothing: mail scanners fetch every link in a message, so
  ``GET /confirm/...`` and ``GET /unsubscribe/...`` only show a button.
- Tokens never reach a log or another site: ``Referrer-Policy: no-referrer``, pages
  behind a token are ``no-store``, and ``RedactTokens`` scrubs ``/confirm/...`` and
  ``/unsubscribe/...`` from every log record (uvicorn's access log included).
- Every response carries a CSP without scripts, ``nosniff`` and frame denial;
  request bodies are capped (``WebLimits.max_body_bytes``).
- User mistakes and bad links get friendly pages; a bug gets a plain 500 page,
  never a stack trace.

Rate limits are kept in memory: they hold for one server process (``pipeline serve``
runs one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.channels.templating import local_time, make_environment, render_template
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store, Subscriber, email_key
from pipeline.ledger.subscribers import INACTIVE, add_subscriber, clean_name, normalise_address
from pipeline.ledger.tokens import CONFIRM_MAX_AGE, TokenError, load_secret, read_token, token_issued_at
from pipeline.mail.confirm import send_confirmation
from pipeline.mail.transports import Transport, transport_from_spec

logger = logging.getLogger("pipeline.web.app")

CSRF_COOKIE = "pipeline_csrf"
CSRF_FIELD = "csrf_token"
HONEYPOT_FIELD = "website"  # a field people never see; bots fill it in
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 section 3.1
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,199}$")


FEEDS = {
    "feed.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
}

SECURITY_HEADERS = {
    # No scripts anywhere; inline styles only (the newsletter's web pages and the shared
    # partials are styled inline, as e-mail HTML must be); images from anywhere secure.
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; font-src 'self' https:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
NO_STORE = {"cache-control": "no-store", "x-robots-tag": "noindex"}


# --- limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebLimits:
    """How much the app accepts. The defaults suit one clinic's public site."""

    max_body_bytes: int = 16 * 1024  # the subscribe form is a few hundred bytes
    client_requests: int = 10  # POST /subscribe per client address ...
    client_window: float = 3600.0  # ... per this many seconds
    address_requests: int = 3  # confirmation e-mails per subscriber address ...
    address_window: float = 3600.0  # ... per this many seconds
    csrf_max_age: float = 24 * 3600.0


class RateLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds (sliding window, in memory)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def hit(self, key: str) -> float | None:
        """Count one hit; None when allowed, else the seconds until the next is allowed."""
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % 1000 == 0:
                self._sweep(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window - now, 1.0)
            hits.append(now)
            return None

    def _sweep(self, now: float) -> None:
        """Forget keys with no recent hits, so memory stays bounded."""
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]


class CsrfTokens:
    """Signed double-submit tokens: ``nonce.issued.mac``; valid when the cookie and the
    form field carry the same value and its signature and age check out."""

    def __init__(self, secret: bytes, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, b"pipeline.web.app csrf", hashlib.sha256).digest()
        self._max_age = max_age
        self._clock = clock

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def new(self) -> str:
        body = f"{secrets.token_urlsafe(16)}.{int(self._clock()):x}"
        return f"{body}.{self._mac(body)}"

    def valid(self, value: str | None) -> bool:
        if not value or len(value) > 100:
            return False
        nonce, _, rest = value.partition(".")
        issued_hex, _, mac = rest.partition(".")
        try:
            issued = int(issued_hex, 16)
        except ValueError:
            return False
        body = f"{nonce}.{issued_hex}"
        if not nonce or not hmac.compare_digest(self._mac(body), mac):
            return False
        age = self._clock() - issued
        return -300 <= age <= self._max_age

    def check(self, cookie: str | None, submitted: str | None) -> bool:
        if not cookie or not submitted:
            return False
        return hmac.compare_digest(cookie.encode(), submitted.encode()) and self.valid(cookie)


# --- logs ----------------------------------------------------------------------------------

_TOKEN_PATH = re.compile(r"(/(?:unsubscribe|confirm)/)[^\s/?#\"']+")


def redact(text: str) -> str:
    """``/unsubscribe/<token>`` -> ``/unsubscribe/[redacted]`` (and the same for confirm)."""
    return _TOKEN_PATH.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Scrubs tokens from a log record's message and arguments.

    The arguments are redacted one by one instead of being merged into the message,
    because uvicorn's access formatter unpacks them (client, method, path, version,
    status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_log_redaction() -> None:
    """Add ``RedactTokens`` to uvicorn's loggers (once), whatever logging config is in use."""
    for name in ("uvicorn.access", "uvicorn.error", "pipeline"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())


# --- built files (feeds, archive pages) -------------------------------------------------------


@dataclass(frozen=True)
class BuiltFile:
    body: bytes
    etag: str
    last_modified: str  # an HTTP date
    mtime: int  # whole seconds, as HTTP dates have no more


class BuiltFiles:
    """Files from ``out/``, read once and kept while unchanged (a small LRU)."""

    def __init__(self, root: Path, max_entries: int = 64) -> None:
        self.root = root
        self._max = max_entries
        self._cache: OrderedDict[Path, tuple[tuple[int, int], BuiltFile]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, rel: str) -> BuiltFile | None:
        path = self.root / rel
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(path)
                return cached[1]
        try:
            body = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        mtime = int(stat.st_mtime)
        built = BuiltFile(
            body=body,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            last_modified=formatdate(mtime, usegmt=True),
            mtime=mtime,
        )
        with self._lock:
            self._cache[path] = (stamp, built)
            self._cache.move_to_end(path)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return built


def not_modified(request: Request, built: BuiltFile) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match wins; If-Modified-Since only without it."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or any(tag.removeprefix("W/") == built.etag for tag in tags)
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return built.mtime <= since.timestamp()
    return False


def built_response(request: Request, built: BuiltFile, media_type: str, extra: Mapping[str, str] = {}) -> Response:
    headers = {
        "etag": built.etag,
        "last-modified": built.last_modified,
        "cache-control": "public, max-age=300",
        **extra,
    }
    if not_modified(request, built):
        return Response(status_code=304, headers=headers)
    return Response(built.body, media_type=media_type, headers=headers)


# --- middleware --------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every HTTP response (unless a route set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in self.headers if name not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies over ``max_bytes``: by Content-Length at once, or while
    streaming (``BodyTooLarge``, which the app turns into a 413 page)."""

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: Callable[[], Response]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self.too_large()(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited, send)


# --- the app -----------------------------------------------------------------------------------


def mask_address(address: str) -> str:
    """``ann.lee@example.org`` -> ``a•••••e@example.org``: enough to recognise, not to harvest."""
    local, _, domain = address.rpartition("@")
    if len(local) <= 2:
        return f"{local[:1]}•@{domain}"
    return f"{local[0]}{'•' * min(len(local) - 2, 6)}{local[-1]}@{domain}"


@dataclass
class WebApp:
    """The app's state and handlers; ``create_app`` wires them into Starlette."""

    settings: Settings
    store: Store
    transport: Transport
    secret: bytes
    limits: WebLimits
    clock: Callable[[], float] = time.monotonic
    env: jinja2.Environment = field(init=False)
    csrf: CsrfTokens = field(init=False)
    client_limit: RateLimiter = field(init=False)
    address_limit: RateLimiter = field(init=False)
    files: BuiltFiles = field(init=False)

    def __post_init__(self) -> None:
        self.env = make_environment(self.settings)
        self.csrf = CsrfTokens(self.secret, self.limits.csrf_max_age)
        self.client_limit = RateLimiter(self.limits.client_requests, self.limits.client_window, self.clock)
        self.address_limit = RateLimiter(self.limits.address_requests, self.limits.address_window, self.clock)
        self.files = BuiltFiles(self.settings.out_dir)

    # --- rendering ---------------------------------------------------------------------------

    def page(
        self,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> HTMLResponse:
        html = render_template(self.env, f"web/{name}", {"noindex": False, **(context or {})})
        return HTMLResponse(html, status_code=status, headers=dict(headers or {}), background=background)

    def error_page(
        self, status: int, title: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> Response:
        # The security headers are set here too: a 500 answer leaves through Starlette's
        # outermost error middleware, outside SecurityHeaders.
        all_headers = {**SECURITY_HEADERS, **(headers or {})}
        try:
            return self.page(
                "error.html", {"title": title, "message": message, "status": status}, status=status, headers=all_headers
            )
        except Exception:  # the error page must never fail: fall back to plain text
            logger.exception("could not render the error page")
            return Response(f"{title}\n\n{message}\n", status_code=status, media_type="text/plain", headers=all_headers)

    def form_page(
        self,
        request: Request,
        *,
        template: str = "subscribe.html",
        status: int = 200,
        email: str = "",
        name: str = "",
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Response:
        """A page with the subscribe form; sets the CSRF cookie unless a valid one is present."""
        token = request.cookies.get(CSRF_COOKIE)
        fresh = not self.csrf.valid(token)
        if fresh or token is None:
            token = self.csrf.new()
        context = {
            "title": "Subscribe",
            "csrf_field": CSRF_FIELD,
            "csrf_token": token,
            "honeypot_field": HONEYPOT_FIELD,
            "email": email,
            "name": name,
            "error": error,
            "max_email": MAX_EMAIL_LENGTH,
            "max_name": MAX_NAME_LENGTH,
            "button": "Subscribe",
            **(extra or {}),
        }
        response = self.page(template, context, status=status, headers={"cache-control": "no-store"})
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                max_age=int(self.limits.csrf_max_age),
                path="/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def read_form(self, request: Request) -> FormData:
        try:
            return await request.form(max_files=0, max_fields=16, max_part_size=self.limits.max_body_bytes)
        except (HTTPException, BodyTooLarge):
            raise
        except Exception:  # malformed multipart and the like
            raise HTTPException(400, "The form could not be read.") from None

    # --- subscribe ------------------------------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        return self.form_page(request)

    async def subscribe(self, request: Request) -> Response:
        form = await self.read_form(request)
        email = str(form.get("email") or "").strip()
        name = str(form.get("name") or "").strip()
        if not self.csrf.check(request.cookies.get(CSRF_COOKIE), _text(form.get(CSRF_FIELD))):
            return self.form_page(
                request,
                status=403,
                email=email[:MAX_EMAIL_LENGTH],
                name=name[:MAX_NAME_LENGTH],
                error="This form had expired. Please check your address and press Subscribe again.",
            )
        client = request.client.host if request.client else "unknown"
        wait = self.client_limit.hit(client)
        if wait is not None:
            minutes = max(1, round(wait / 60))
            return self.error_page(
                429,
                "Too many attempts",
                f"We received many subscription requests from your network. Please try again in about "
                f"{minutes} minute{'s' if minutes != 1 else ''}.",
                headers={"retry-after": str(int(wait) + 1), "cache-control": "no-store"},
            )
        if _text(form.get(HONEYPOT_FIELD)):
            logger.info("subscribe: honeypot filled in; nothing done")
            return self.check_inbox()
        problem = None
        address = ""
        if len(email) > MAX_EMAIL_LENGTH:
            problem = f"That address is too long: e-mail addresses have at most {MAX_EMAIL_LENGTH} characters."
        elif len(name) > MAX_NAME_LENGTH:
            problem = f"That name is too long: please keep it under {MAX_NAME_LENGTH} characters."
        else:
            try:
                # In a thread: with check_deliverability on, this asks DNS.
                address = await run_in_threadpool(
                    normalise_address, email, check_deliverability=self.settings.delivery.check_deliverability
                )
            except PipelineError:
                problem = (
                    "Please enter your e-mail address, like name@example.com."
                    if not email
                    else "That does not look like a complete e-mail address. Please check it, e.g. name@example.com."
                )
        if problem:
            return self.form_page(request, status=400, email=email[:MAX_EMAIL_LENGTH], name=name, error=problem)
        if self.address_limit.hit(email_key(address)) is not None:
            logger.info("subscribe: too many requests for one address; nothing sent")
            return self.check_inbox()
        return self.check_inbox(BackgroundTask(run_in_threadpool, self._subscribe_and_confirm, address, name))

    def check_inbox(self, background: BackgroundTask | None = None) -> Response:
        """The one answer to every accepted subscribe request: same bytes whatever happened."""
        return self.page(
            "check_inbox.html",
            {"title": "Check your inbox", "valid_days": _confirm_days()},
            headers={"cache-control": "no-store"},
            background=background,
        )

    def _subscribe_and_confirm(self, address: str, name: str) -> None:
        """After the response: record the request and send the confirmation e-mail."""
        try:
            existing = self.store.get_subscriber_by_email(address)
            if existing is not None and existing.is_active:
                # Nothing to do, and nothing to change: a stranger's form must not set the name.
                logger.info("subscribe: subscriber %d is already active; nothing sent", existing.id)
                return
            result = add_subscriber(self.store, self.settings, address, clean_name(name), confirm=True, source="web")
            if not result.needs_confirmation:
                logger.info("subscribe: subscriber %d is already active; nothing sent", result.subscriber.id)
                return
            send_confirmation(self.settings, self.transport, result.subscriber, secret=self.secret, env=self.env)
            logger.info("subscribe: confirmation sent to subscriber %d", result.subscriber.id)
        except PipelineError as error:
            logger.error("subscribe: could not send a confirmation: %s", error)
        except Exception:
            logger.exception("subscribe: unexpected error")

    # --- confirm ---------------------------------------------------------------------------------

    def _confirm_target(self, token: str) -> tuple[Subscriber | None, str | None]:
        """The subscriber a confirm link is for, or the reason it does not work."""
        try:
            subscriber_id = read_token("confirm", token, self.secret)
        except TokenError:
            return None, "expired" if self._expired(token) else "damaged"
        subscriber = self.store.get_subscriber(subscriber_id)
        if subscriber is None:
            return None, "stale"
        if subscriber.status in INACTIVE:
            # Someone who left and asked to come back stays unsubscribed until they press
            # the button behind a link sent after they left: that is their consent. A link
            # from before they left is stale (it must not undo the unsubscribe).
            left_at = subscriber.unsubscribed_at or subscriber.updated_at
            if token_issued_at("confirm", token, self.secret) <= left_at.replace(microsecond=0):  # same second: ambiguous, so stale
                return None, "stale"
        return subscriber, None

    async def confirm_page(self, request: Request) -> Response:
        """GET: one button; changes nothing. Mail scanners open every link in a message,
        so only the button's POST may confirm (as with unsubscribe)."""
        token = request.path_params["token"]
        subscriber, problem = await run_in_threadpool(self._confirm_target, token)
        if problem is not None or subscriber is None:
            return self.confirm_problem(request, problem or "stale")
        if subscriber.is_active:
            return self.welcome_page(subscriber)
        return self.page(
            "confirm.html",
            {
                "title": "Confirm your subscription",
                "address": mask_address(subscriber.email),
                "action": request.url.path,
                "noindex": True,
            },
            headers=NO_STORE,
        )

    async def confirm(self, request: Request) -> Response:
        """POST from the page's button: pending (or a returning reader) -> active. No other
        field is needed: the signed token in the path is the secret a forger cannot know."""
        token = request.path_params["token"]
        subscriber, problem = await run_in_threadpool(self._confirm_target, token)
        if problem is not None or subscriber is None:
            return self.confirm_problem(request, problem or "stale")
        if not subscriber.is_active:
            returning = subscriber.status in INACTIVE
            subscriber = await run_in_threadpool(self.store.set_subscriber_status, subscriber.id, "active")
            logger.info("confirm: subscriber %d is active%s", subscriber.id, " again" if returning else "")
        return self.welcome_page(subscriber)

    def welcome_page(self, subscriber: Subscriber) -> Response:
        return self.page(
            "welcome.html",
            {"title": "You are subscribed", "address": mask_address(subscriber.email), "noindex": True},
            headers=NO_STORE,
        )

    def _expired(self, token: str) -> bool:
        """Authentic but too old (as opposed to forged or damaged)?"""
        try:
            read_token("confirm", token, self.secret, max_age=timedelta(days=365 * 100))
        except TokenError:
            return False
        return True

    def confirm_problem(self, request: Request, reason: str) -> Response:
        response = self.form_page(
            request,
            template="confirm_problem.html",
            status=400,
            extra={
                "title": "This link does not work",
                "reason": reason,
                "valid_days": _confirm_days(),
                "noindex": True,
                "button": "Send me a new link",
            },
        )
        response.headers["x-robots-tag"] = "noindex"
        return response

    # --- unsubscribe ------------------------------------------------------------------------------

    def _unsubscribe_target(self, token: str) -> int | None:
        try:
            return read_token("unsubscribe", token, self.secret)
        except TokenError:
            return None

    def bad_unsubscribe_link(self) -> Response:
        return self.error_page(
            400,
            "This unsubscribe link does not work",
            "The link seems incomplete or changed. Please open the Unsubscribe link in one of our e-mails again, "
            f"or write to {self.settings.clinic.email} and we will take you off the list.",
            headers=NO_STORE,
        )

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self._unsubscribe_target(token)
        if subscriber_id is None:
            return self.bad_unsubscribe_link()
        subscriber = await run_in_threadpool(self.store.get_subscriber, subscriber_id)
        if subscriber is None or subscriber.status in INACTIVE:
            return self.unsubscribed_page(subscriber)
        return self.page(
            "unsubscribe.html",
            {
                "title": "Unsubscribe",
                "address": mask_address(subscriber.email),
                "action": request.url.path,
                "field": ONE_CLICK[0],
                "value": ONE_CLICK[1],
                "noindex": True,
            },
            headers=NO_STORE,
        )

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click (and the page's button, which posts the same body)."""
        token = request.path_params["token"]
        subscriber_id = self._unsubscribe_target(token)
        if subscriber_id is None:
            return self.bad_unsubscribe_link()
        form = await self.read_form(request)
        if _text(form.get(ONE_CLICK[0])) != ONE_CLICK[1]:
            return self.error_page(
                400,
                "Nothing was changed",
                "This request did not say what to do. Please use the Unsubscribe button on the page.",
                headers=NO_STORE,
            )
        subscriber = await run_in_threadpool(self._unsubscribe, subscriber_id)
        return self.unsubscribed_page(subscriber)

    def _unsubscribe(self, subscriber_id: int) -> Subscriber | None:
        subscriber = self.store.get_subscriber(subscriber_id)
        if subscriber is None or subscriber.status in INACTIVE:
            return subscriber  # already off the list (bounced/complained stay as they are)
        subscriber = self.store.set_subscriber_status(subscriber_id, "unsubscribed")
        logger.info("unsubscribe: subscriber %d unsubscribed", subscriber_id)
        return subscriber

    def unsubscribed_page(self, subscriber: Subscriber | None) -> Response:
        return self.page(
            "unsubscribed.html",
            {
                "title": "You are unsubscribed",
                "address": mask_address(subscriber.email) if subscriber else None,
                "noindex": True,
            },
            headers=NO_STORE,
        )

    # --- archive and feeds --------------------------------------------------------------------------

    async def archive_index(self, request: Request) -> Response:
        campaigns = await run_in_threadpool(self.store.list_campaigns)
        zone = self.settings.clinic.zone
        entries = [
            {
                "key": c.key,
                "subject": c.subject,
                "date": local_time(c.created_at, self.settings),
                "iso": c.created_at.astimezone(zone).date().isoformat(),
            }
            for c in sorted(campaigns, key=lambda c: (c.created_at, c.id), reverse=True)
            if _SLUG.match(c.key) and (self.settings.out_dir / "archive" / f"{c.key}.html").is_file()
        ]
        return self.page(
            "archive.html",
            {"title": "Newsletter archive", "entries": entries},
            headers={"cache-control": "public, max-age=60"},
        )

    async def archive_page(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        built = self.files.get(f"archive/{slug}.html") if _SLUG.match(slug) else None
        if built is None:
            raise HTTPException(404)
        return built_response(request, built, "text/html; charset=utf-8")

    async def feed(self, request: Request) -> Response:
        name = request.url.path.lstrip("/")
        built = self.files.get(name)
        if built is None:
            return self.error_page(404, "No feed yet", "The feed has not been published yet. Please come back later.")
        return built_response(request, built, FEEDS[name], {"access-control-allow-origin": "*"})

    # --- errors -----------------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {
            400: ("Something went wrong", exc.detail if exc.detail != "Bad Request" else "The request was incomplete."),
            404: ("Page not found", "There is nothing at this address. It may have moved, or the link is incomplete."),
            405: ("Not allowed", "This page cannot be used that way."),
        }
        title, message = titles.get(exc.status_code, (exc.detail, "Please go back and try again."))
        return self.error_page(exc.status_code, title, message, headers=exc.headers)

    async def too_large_error(self, request: Request, exc: Exception) -> Response:
        return self.too_large()

    def too_large(self) -> Response:
        return self.error_page(413, "Too much data", "That request was larger than any form on this site sends.")

    async def server_error(self, request: Request, exc: Exception) -> Response:
        logger.error("internal error on %s %s: %r", request.method, redact(request.url.path), exc)
        return self.error_page(
            500,
            "Sorry, something broke",
            f"That is our fault, not yours. Please try again later, or write to {self.settings.clinic.email}.",
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _confirm_days() -> int:
    return CONFIRM_MAX_AGE.days


Endpoint = Callable[[Request], Awaitable[Response]]


def _by_method(*, get: Endpoint, post: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


def create_app(
    settings: Settings,
    *,
    limits: WebLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: Transport | None = None,
) -> Starlette:
    """The ASGI app for ``settings``. Opens the ledger (and migrates it) at once, so a
    bad database URL or secret is reported before the server starts listening."""
    web = WebApp(
        settings=settings,
        store=Store.open(settings),
        transport=transport or transport_from_spec(settings.delivery.transport, settings),
        secret=load_secret(settings),
        limits=limits or WebLimits(),
        clock=clock,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            web.store.close()

    routes = [
        Route("/", web.subscribe_form, methods=["GET"]),
        # One route per path and method dispatch inside: a 405 then lists every allowed method.
        Route("/subscribe", _by_method(get=web.subscribe_form, post=web.subscribe), methods=["GET", "POST"]),
        Route("/confirm/{token}", _by_method(get=web.confirm_page, post=web.confirm), methods=["GET", "POST"]),
        Route(
            "/unsubscribe/{token}", _by_method(get=web.unsubscribe_page, post=web.unsubscribe), methods=["GET", "POST"]
        ),
        Route("/archive/", web.archive_index, methods=["GET"]),
        Route("/archive", lambda request: RedirectResponse("/archive/", status_code=308), methods=["GET"]),
        Route("/archive/{slug}", web.archive_page, methods=["GET"]),
        *(Route(f"/{name}", web.feed, methods=["GET"]) for name in FEEDS),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: web.http_error,
        BodyTooLarge: web.too_large_error,
        500: web.server_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    # Outermost first: headers are added to every response, the 413 answer included.
    app.add_middleware(BodyLimit, max_bytes=web.limits.max_body_bytes, too_large=web.too_large)
    app.add_middleware(SecurityHeaders)
    app.state.web = web
    install_log_redaction()
    return app

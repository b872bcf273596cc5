"""What every route shares: settings, the ledger, the mail transport, the signing
secret, the app's clock, the limits, and page rendering. ``create_app`` makes one
``WebState``; routes find it as ``request.app.state.web``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pipeline.channels.templating import make_environment, render_template
from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.mail.transports import Transport
from pipeline.ratelimit import RateLimiter
from pipeline.web.csrf import CsrfTokens
from pipeline.web.security import BodyTooLarge, headers_for

logger = logging.getLogger("pipeline.web")


@dataclass(frozen=True)
class WebLimits:
    """How much the app accepts. The defaults suit one clinic's public site."""

    max_body_bytes: int = 16 * 1024  # the subscribe form is a few hundred bytes
    desk_max_body_bytes: int = 1024 * 1024  # a post saved from the desk
    client_requests: int = 10  # POST /subscribe (and failed desk logins) per client address ...
    client_window: float = 3600.0  # ... per this many seconds
    address_requests: int = 3  # confirmation e-mails per subscriber address ...
    address_window: float = 3600.0  # ... per this many seconds
    csrf_max_age: float = 24 * 3600.0
    login_failures: int = 5  # failed desk logins for one account ...
    login_window: float = 15 * 60.0  # ... within this many seconds lock it ...
    login_lockout: float = 15 * 60.0  # ... for this many seconds
    session_hours: float = 8.0


@dataclass
class WebState:
    settings: Settings
    store: Store
    transport: Transport
    secret: bytes
    limits: WebLimits
    clock: Callable[[], float] = time.time  # unix seconds: rate limits, signed values, sessions
    env: jinja2.Environment = field(init=False)
    csrf: CsrfTokens = field(init=False)
    client_limit: RateLimiter = field(init=False)
    address_limit: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.env = make_environment(self.settings)
        self.csrf = CsrfTokens(self.secret, self.limits.csrf_max_age, self.clock)
        self.client_limit = RateLimiter(self.limits.client_requests, self.limits.client_window, self.clock)
        self.address_limit = RateLimiter(self.limits.address_requests, self.limits.address_window, self.clock)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def page(
        self,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> HTMLResponse:
        """``templates/NAME`` (e.g. ``web/archive.html``, ``desk/queue.html``) as a page."""
        html = render_template(self.env, name, {"noindex": False, **(context or {})})
        return HTMLResponse(html, status_code=status, headers=dict(headers or {}), background=background)

    def error_page(
        self,
        status: int,
        title: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        path: str = "/",
    ) -> Response:
        # The security headers are set here too: a 500 answer leaves through Starlette's
        # outermost error middleware, outside SecurityHeaders.
        all_headers = {**headers_for(path), **(headers or {})}
        try:
            return self.page(
                "web/error.html",
                {"title": title, "message": message, "status": status},
                status=status,
                headers=all_headers,
            )
        except Exception:  # the error page must never fail: fall back to plain text
            logger.exception("could not render the error page")
            return Response(f"{title}\n\n{message}\n", status_code=status, media_type="text/plain", headers=all_headers)

    async def read_form(self, request: Request, *, max_fields: int = 16) -> FormData:
        try:
            return await request.form(max_files=0, max_fields=max_fields, max_part_size=self.limits.desk_max_body_bytes)
        except (HTTPException, BodyTooLarge):
            raise
        except Exception:  # malformed multipart and the like
            raise HTTPException(400, "The form could not be read.") from None


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def text_field(value: Any) -> str:
    return value if isinstance(value, str) else ""

"""CSRF tokens for forms that have no session yet (subscribe, the desk's login).

Signed double-submit: the same signed random value in a SameSite=Strict cookie and
in a hidden field; valid when both match and the signature and age check out. The
desk's forms behind a session use tokens bound to the session instead
(``pipeline.web.desk.auth``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from pipeline.ledger.tokens import SignedValues

CSRF_COOKIE = "pipeline_csrf"


class CsrfTokens:
    """Tokens signed with the app's secret and checked against the app's clock."""

    def __init__(self, secret: bytes, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self._signed = SignedValues(secret, "csrf", max_age, clock)
        self.max_age = max_age

    def new(self) -> str:
        return self._signed.sign(secrets.token_urlsafe(16))

    def valid(self, value: str | None) -> bool:
        return self._signed.read(value) is not None

    def check(self, cookie: str | None, submitted: str | None) -> bool:
        if not cookie or not submitted:
            return False
        return hmac.compare_digest(cookie.encode(), submitted.encode()) and self.valid(cookie)

    def for_request(self, request: Request) -> tuple[str, bool]:
        """The request's valid cookie token, or a new one (and True: set the cookie)."""
        token = request.cookies.get(CSRF_COOKIE)
        if token is not None and self.valid(token):
            return token, False
        return self.new(), True

    def set_cookie(self, response: Response, token: str, *, secure: bool) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            max_age=int(self.max_age),
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

"""Who is signed in to the desk, and what they may do.

- A session is a ledger row (``StaffRecords``); the cookie carries its random id,
  signed with the pipeline secret (``SignedValues``, purpose "session"): HttpOnly,
  SameSite=Strict, Secure whenever ``clinic.base_url`` is https, 8 hours. Signing out
  deletes the row; a password change deletes every row of that account.
- Every state-changing desk request carries a CSRF field bound to the session (a
  signed hash of the session id); the login form, which has no session yet, uses the
  public signed double-submit token.
- Brute force: 5 failed logins for one address within 15 minutes lock that address
  for 15 minutes, whether or not an account exists, and the answer is the same either
  way; failed logins also count against the client address's limit.
- A role that may not do something gets 403 from the server, whatever a page showed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pipeline.ledger.staff import StaffMember
from pipeline.ledger.tokens import SignedValues
from pipeline.ratelimit import RateLimiter
from pipeline.web.csrf import CSRF_COOKIE
from pipeline.web.public import client_address, too_many_attempts
from pipeline.web.state import WebState, text_field, web_state

logger = logging.getLogger("pipeline.web.desk")

SESSION_COOKIE = "pipeline_desk"
CSRF_FIELD = "csrf"
LOGIN_PATH = "/desk/login"
LOGIN_FAILED = (
    "That e-mail address and password do not match an account that may sign in now. Check them and try again; "
    "after 5 failed attempts an account waits 15 minutes. An admin can set a new password with `pipeline staff password`."
)

StaffEndpoint = Callable[[Request, StaffMember], Awaitable[Response]]


class Sessions:
    """Session cookies, session-bound CSRF tokens and the login lockout."""

    def __init__(self, web: WebState) -> None:
        self.web = web
        limits = web.limits
        self.lifetime = timedelta(hours=limits.session_hours)
        seconds = self.lifetime.total_seconds()
        self.cookies = SignedValues(web.secret, "session", seconds, web.clock)
        self.csrf = SignedValues(web.secret, "desk-csrf", seconds, web.clock)
        self.failures = RateLimiter(limits.login_failures, limits.login_window, web.clock)
        self.lockouts = RateLimiter(1, limits.login_lockout, web.clock)
        self.client_failures = RateLimiter(limits.client_requests, limits.client_window, web.clock)
        self.secure = web.settings.clinic.base_url.startswith("https://")

    # --- the cookie ----------------------------------------------------------------------

    def session_id(self, request: Request) -> str | None:
        return self.cookies.read(request.cookies.get(SESSION_COOKIE))

    def staff(self, request: Request) -> StaffMember | None:
        session_id = self.session_id(request)
        if session_id is None:
            return None
        return self.web.store.session_staff(session_id, now=self.web.now())

    def set_cookie(self, response: Response, session_id: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.cookies.sign(session_id),
            max_age=int(self.lifetime.total_seconds()),
            path="/desk",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/desk", httponly=True, samesite="strict", secure=self.secure)

    # --- CSRF bound to the session ----------------------------------------------------

    @staticmethod
    def _binding(session_id: str) -> str:
        return hashlib.sha256(f"csrf:{session_id}".encode()).hexdigest()[:32]

    def csrf_token(self, request: Request) -> str:
        session_id = self.session_id(request)
        return self.csrf.sign(self._binding(session_id)) if session_id else ""

    def csrf_ok(self, request: Request, submitted: str) -> bool:
        session_id = self.session_id(request)
        value = self.csrf.read(submitted)
        return session_id is not None and value is not None and hmac.compare_digest(value, self._binding(session_id))

    # --- the lockout ---------------------------------------------------------------------

    def locked(self, key: str) -> bool:
        return self.lockouts.peek(key) is not None

    def failed(self, key: str) -> None:
        self.failures.hit(key)
        if self.failures.peek(key) is not None:  # that was the 5th within the window
            self.lockouts.hit(key)
            self.failures.forget(key)


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.desk.sessions
    return found


def login_redirect() -> Response:
    return RedirectResponse(LOGIN_PATH, status_code=303)


def guarded(right: str | None, handler: StaffEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` for signed-in staff whose role has ``right`` (None: any role); a POST
    also needs the session's CSRF field. No session: to the login page (303)."""

    async def endpoint(request: Request) -> Response:
        auth = sessions(request)
        staff = await run_in_threadpool(auth.staff, request)
        if staff is None:
            if request.method == "GET":
                return login_redirect()
            raise HTTPException(403, "You are signed out (a session lasts 8 hours). Sign in again, then repeat this.")
        if request.method == "POST":
            form = await web_state(request).read_form(request, max_fields=200)
            if not auth.csrf_ok(request, text_field(form.get(CSRF_FIELD))):
                raise HTTPException(
                    403, "This form had expired or did not come from the desk. Reload the page and try again."
                )
        if right is not None and not staff.may(right):
            raise HTTPException(403, f"Your role ({staff.role}) may not {right}. Ask an admin if you need to.")
        return await handler(request, staff)

    return endpoint


# --- login and logout ------------------------------------------------------------------------


def login_page(request: Request, *, status: int = 200, email: str = "", error: str | None = None) -> Response:
    web = web_state(request)
    token, fresh = web.csrf.for_request(request)
    response = web.page(
        "desk/login.html",
        {
            "title": "Sign in",
            "csrf_field": CSRF_FIELD,
            "csrf_token": token,
            "email": email,
            "error": error,
            "staff": None,
            "note": None,
        },
        status=status,
    )
    if fresh:
        web.csrf.set_cookie(response, token, secure=sessions(request).secure)
    return response


async def login_form(request: Request) -> Response:
    if await run_in_threadpool(sessions(request).staff, request) is not None:
        return RedirectResponse("/desk/", status_code=303)
    return login_page(request)


async def login(request: Request) -> Response:
    web = web_state(request)
    auth = sessions(request)
    form = await web.read_form(request)
    email = text_field(form.get("email")).strip()[:320]
    password = text_field(form.get("password"))
    if not web.csrf.check(request.cookies.get(CSRF_COOKIE), text_field(form.get(CSRF_FIELD))):
        return login_page(request, status=403, email=email, error="This form had expired. Please sign in again.")
    client = client_address(request)
    wait = auth.client_failures.peek(client)
    if wait is not None:
        return too_many_attempts(web, wait, "failed sign-ins", path=LOGIN_PATH)
    key = email.lower()
    staff = None
    if not auth.locked(key):
        staff = await run_in_threadpool(web.store.check_staff_password, email, password)
    if staff is None:
        auth.failed(key)
        auth.client_failures.hit(client)
        logger.info("desk: failed sign-in")
        # The address is not echoed: the answer must be the same for every address.
        return login_page(request, status=401, error=LOGIN_FAILED)
    auth.failures.forget(key)
    session_id = await run_in_threadpool(web.store.start_session, staff.id, now=web.now(), lifetime=auth.lifetime)
    logger.info("desk: staff %d signed in", staff.id)
    response = RedirectResponse("/desk/", status_code=303)
    auth.set_cookie(response, session_id)
    return response


async def logout(request: Request) -> Response:
    auth = sessions(request)
    session_id = auth.session_id(request)
    form = await web_state(request).read_form(request)
    if session_id is not None:
        if not auth.csrf_ok(request, text_field(form.get(CSRF_FIELD))):
            raise HTTPException(403, "This form had expired. Reload the page and try again.")
        await run_in_threadpool(web_state(request).store.end_session, session_id)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    auth.clear_cookie(response)
    return response

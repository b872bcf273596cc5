"""The public routes: subscribe with double opt-in, confirm, one-click unsubscribe.

- No enumeration. ``POST /subscribe`` answers byte-identical pages whether the address
  is new, pending, active or unsubscribed, and whether a limit or the honeypot kicked in.
  The ledger write and the e-mail happen in a background task *after* the response, so
  the response time does not tell either.
- CSRF: the subscribe form carries a signed double-submit token (``csrf.py``).
  ``POST /unsubscribe/{token}`` and ``POST /confirm/{token}`` have none, on purpose: RFC
  8058 one-click requests come from mail providers without cookies, and the signed token
  in the path is itself a secret that a cross-site attacker cannot know.
- Opening a link changes nothing: mail scanners fetch every link in a message, so
  ``GET /confirm/...`` and ``GET /unsubscribe/...`` only show a button.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.errors import PipelineError
from pipeline.ledger.subscriber_rows import Subscriber, email_key
from pipeline.ledger.subscribers import INACTIVE, add_subscriber, clean_name, normalise_address
from pipeline.ledger.tokens import CONFIRM_MAX_AGE, TokenError, read_token, token_issued_at
from pipeline.mail.confirm import send_confirmation
from pipeline.web.csrf import CSRF_COOKIE
from pipeline.web.security import NO_STORE
from pipeline.web.state import WebState, text_field, web_state

logger = logging.getLogger("pipeline.web.app")

CSRF_FIELD = "csrf_token"
HONEYPOT_FIELD = "website"  # a field people never see; bots fill it in
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 section 3.1
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200


def mask_address(address: str) -> str:
    """``ann.lee@example.org`` -> ``a•••••e@example.org``: enough to recognise, not to harvest."""
    local, _, domain = address.rpartition("@")
    if len(local) <= 2:
        return f"{local[:1]}•@{domain}"
    return f"{local[0]}{'•' * min(len(local) - 2, 6)}{local[-1]}@{domain}"


def form_page(
    web: WebState,
    request: Request,
    *,
    template: str = "web/subscribe.html",
    status: int = 200,
    email: str = "",
    name: str = "",
    frequency: str = "each",
    error: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A page with the subscribe form; sets the CSRF cookie unless a valid one is present."""
    token, fresh = web.csrf.for_request(request)
    context = {
        "title": "Subscribe",
        "csrf_field": CSRF_FIELD,
        "csrf_token": token,
        "honeypot_field": HONEYPOT_FIELD,
        "email": email,
        "name": name,
        "frequency": frequency,
        "error": error,
        "max_email": MAX_EMAIL_LENGTH,
        "max_name": MAX_NAME_LENGTH,
        "button": "Subscribe",
        **(extra or {}),
    }
    response = web.page(template, context, status=status, headers={"cache-control": "no-store"})
    if fresh:
        web.csrf.set_cookie(response, token, secure=request.url.scheme == "https")
    return response


# --- subscribe ------------------------------------------------------------------------------


async def subscribe_form(request: Request) -> Response:
    return form_page(web_state(request), request)


async def subscribe(request: Request) -> Response:
    web = web_state(request)
    form = await web.read_form(request)
    email = str(form.get("email") or "").strip()
    name = str(form.get("name") or "").strip()
    # Each article unless they chose the digest: anything else is the default, not an error.
    frequency = "digest" if text_field(form.get("frequency")) == "digest" else "each"
    if not web.csrf.check(request.cookies.get(CSRF_COOKIE), text_field(form.get(CSRF_FIELD))):
        return form_page(
            web,
            request,
            status=403,
            email=email[:MAX_EMAIL_LENGTH],
            name=name[:MAX_NAME_LENGTH],
            frequency=frequency,
            error="This form had expired. Please check your address and press Subscribe again.",
        )
    wait = web.client_limit.hit(client_address(request))
    if wait is not None:
        return too_many_attempts(web, wait, "subscription requests")
    if text_field(form.get(HONEYPOT_FIELD)):
        logger.info("subscribe: honeypot filled in; nothing done")
        return check_inbox(web)
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
                normalise_address, email, check_deliverability=web.settings.delivery.check_deliverability
            )
        except PipelineError:
            problem = (
                "Please enter your e-mail address, like name@example.com."
                if not email
                else "That does not look like a complete e-mail address. Please check it, e.g. name@example.com."
            )
    if problem:
        return form_page(
            web, request, status=400, email=email[:MAX_EMAIL_LENGTH], name=name, frequency=frequency, error=problem
        )
    if web.address_limit.hit(email_key(address)) is not None:
        logger.info("subscribe: too many requests for one address; nothing sent")
        return check_inbox(web)
    return check_inbox(web, BackgroundTask(run_in_threadpool, _subscribe_and_confirm, web, address, name, frequency))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many_attempts(web: WebState, wait: float, what: str, *, path: str = "/") -> Response:
    minutes = max(1, round(wait / 60))
    return web.error_page(
        429,
        "Too many attempts",
        f"We received many {what} from your network. Please try again in about "
        f"{minutes} minute{'s' if minutes != 1 else ''}.",
        headers={"retry-after": str(int(wait) + 1), "cache-control": "no-store"},
        path=path,
    )


def check_inbox(web: WebState, background: BackgroundTask | None = None) -> Response:
    """The one answer to every accepted subscribe request: same bytes whatever happened."""
    return web.page(
        "web/check_inbox.html",
        {"title": "Check your inbox", "valid_days": CONFIRM_MAX_AGE.days},
        headers={"cache-control": "no-store"},
        background=background,
    )


def _subscribe_and_confirm(web: WebState, address: str, name: str, frequency: str = "each") -> None:
    """After the response: record the request and send the confirmation e-mail."""
    try:
        existing = web.store.get_subscriber_by_email(address)
        if existing is not None and existing.is_active:
            # Nothing to do, and nothing to change: a stranger's form must not set the name.
            logger.info("subscribe: subscriber %d is already active; nothing sent", existing.id)
            return
        # A new subscriber gets the form's choice; an existing one keeps theirs (a
        # stranger's form changes nothing for them).
        result = add_subscriber(
            web.store, web.settings, address, clean_name(name), confirm=True, source="web", frequency=frequency
        )
        if not result.needs_confirmation:
            logger.info("subscribe: subscriber %d is already active; nothing sent", result.subscriber.id)
            return
        send_confirmation(web.settings, web.transport, result.subscriber, secret=web.secret, env=web.env)
        logger.info("subscribe: confirmation sent to subscriber %d", result.subscriber.id)
    except PipelineError as error:
        logger.error("subscribe: could not send a confirmation: %s", error)
    except Exception:
        logger.exception("subscribe: unexpected error")


# --- confirm ---------------------------------------------------------------------------------


def _confirm_target(web: WebState, token: str) -> tuple[Subscriber | None, str | None]:
    """The subscriber a confirm link is for, or the reason it does not work."""
    try:
        subscriber_id = read_token("confirm", token, web.secret)
    except TokenError:
        return None, "expired" if _expired(web, token) else "damaged"
    subscriber = web.store.get_subscriber(subscriber_id)
    if subscriber is None:
        return None, "stale"
    if subscriber.status in INACTIVE:
        # Someone who left and asked to come back stays unsubscribed until they press
        # the button behind a link sent after they left: that is their consent. A link
        # from before they left is stale (it must not undo the unsubscribe).
        left_at = subscriber.unsubscribed_at or subscriber.updated_at
        if token_issued_at("confirm", token, web.secret) <= left_at.replace(microsecond=0):  # same second: stale
            return None, "stale"
    return subscriber, None


def _expired(web: WebState, token: str) -> bool:
    """Authentic but too old (as opposed to forged or damaged)?"""
    try:
        read_token("confirm", token, web.secret, max_age=timedelta(days=365 * 100))
    except TokenError:
        return False
    return True


async def confirm_page(request: Request) -> Response:
    """GET: one button; changes nothing. Mail scanners open every link in a message,
    so only the button's POST may confirm (as with unsubscribe)."""
    web = web_state(request)
    subscriber, problem = await run_in_threadpool(_confirm_target, web, request.path_params["token"])
    if problem is not None or subscriber is None:
        return confirm_problem(web, request, problem or "stale")
    if subscriber.is_active:
        return welcome_page(web, subscriber)
    return web.page(
        "web/confirm.html",
        {
            "title": "Confirm your subscription",
            "address": mask_address(subscriber.email),
            "action": request.url.path,
            "noindex": True,
        },
        headers=NO_STORE,
    )


async def confirm(request: Request) -> Response:
    """POST from the page's button: pending (or a returning reader) -> active. No other
    field is needed: the signed token in the path is the secret a forger cannot know."""
    web = web_state(request)
    subscriber, problem = await run_in_threadpool(_confirm_target, web, request.path_params["token"])
    if problem is not None or subscriber is None:
        return confirm_problem(web, request, problem or "stale")
    if not subscriber.is_active:
        returning = subscriber.status in INACTIVE
        subscriber = await run_in_threadpool(web.store.set_subscriber_status, subscriber.id, "active")
        logger.info("confirm: subscriber %d is active%s", subscriber.id, " again" if returning else "")
    return welcome_page(web, subscriber)


def welcome_page(web: WebState, subscriber: Subscriber) -> Response:
    return web.page(
        "web/welcome.html",
        {"title": "You are subscribed", "address": mask_address(subscriber.email), "noindex": True},
        headers=NO_STORE,
    )


def confirm_problem(web: WebState, request: Request, reason: str) -> Response:
    response = form_page(
        web,
        request,
        template="web/confirm_problem.html",
        status=400,
        extra={
            "title": "This link does not work",
            "reason": reason,
            "valid_days": CONFIRM_MAX_AGE.days,
            "noindex": True,
            "button": "Send me a new link",
        },
    )
    response.headers["x-robots-tag"] = "noindex"
    return response


# --- unsubscribe ------------------------------------------------------------------------------


def _unsubscribe_target(web: WebState, token: str) -> int | None:
    try:
        return read_token("unsubscribe", token, web.secret)
    except TokenError:
        return None


def bad_unsubscribe_link(web: WebState) -> Response:
    return web.error_page(
        400,
        "This unsubscribe link does not work",
        "The link seems incomplete or changed. Please open the Unsubscribe link in one of our e-mails again, "
        f"or write to {web.settings.clinic.email} and we will take you off the list.",
        headers=NO_STORE,
    )


async def unsubscribe_page(request: Request) -> Response:
    web = web_state(request)
    token = request.path_params["token"]
    subscriber_id = _unsubscribe_target(web, token)
    if subscriber_id is None:
        return bad_unsubscribe_link(web)
    subscriber = await run_in_threadpool(web.store.get_subscriber, subscriber_id)
    if subscriber is None or subscriber.status in INACTIVE:
        return unsubscribed_page(web, subscriber)
    return web.page(
        "web/unsubscribe.html",
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


async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click (and the page's button, which posts the same body)."""
    web = web_state(request)
    subscriber_id = _unsubscribe_target(web, request.path_params["token"])
    if subscriber_id is None:
        return bad_unsubscribe_link(web)
    form = await web.read_form(request)
    if text_field(form.get(ONE_CLICK[0])) != ONE_CLICK[1]:
        return web.error_page(
            400,
            "Nothing was changed",
            "This request did not say what to do. Please use the Unsubscribe button on the page.",
            headers=NO_STORE,
        )
    subscriber = await run_in_threadpool(_unsubscribe, web, subscriber_id)
    return unsubscribed_page(web, subscriber)


def _unsubscribe(web: WebState, subscriber_id: int) -> Subscriber | None:
    subscriber = web.store.get_subscriber(subscriber_id)
    if subscriber is None or subscriber.status in INACTIVE:
        return subscriber  # already off the list (bounced/complained stay as they are)
    subscriber = web.store.set_subscriber_status(subscriber_id, "unsubscribed")
    logger.info("unsubscribe: subscriber %d unsubscribed", subscriber_id)
    return subscriber


def unsubscribed_page(web: WebState, subscriber: Subscriber | None) -> Response:
    return web.page(
        "web/unsubscribed.html",
        {
            "title": "You are unsubscribed",
            "address": mask_address(subscriber.email) if subscriber else None,
            "noindex": True,
        },
        headers=NO_STORE,
    )

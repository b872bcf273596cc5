"""The "manage your e-mail" page: a subscriber chooses how often they are mailed.

Every newsletter links here with a signed token of its own purpose ("manage"): it
never passes for an unsubscribe or confirm token, names one subscriber, and expires
(``MANAGE_MAX_AGE``; every e-mail carries a fresh one). As with unsubscribe and
confirm, ``GET /manage/{token}`` changes nothing (mail scanners open every link): the
page shows the address half-masked, the current choice and a button per option, and
only the button's ``POST`` changes it, in one step, logged in the ledger. The form
also carries a signed double-submit CSRF token (``csrf.py``), like the subscribe form.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.ledger.columns import FREQUENCIES
from pipeline.ledger.subscriber_rows import Subscriber
from pipeline.ledger.subscribers import INACTIVE
from pipeline.ledger.tokens import MANAGE_MAX_AGE, TokenError, read_token
from pipeline.web.csrf import CSRF_COOKIE
from pipeline.web.public import CSRF_FIELD, form_page, mask_address
from pipeline.web.security import NO_STORE
from pipeline.web.state import WebState, text_field, web_state

logger = logging.getLogger("pipeline.web.app")

FREQUENCY_FIELD = "frequency"
# What each choice is called on the page, what it means for the reader, and how a change to it is confirmed.
CHOICES = {
    "each": ("Each article", "An e-mail whenever we publish an article.", "an e-mail for each article"),
    "digest": (
        "Weekly digest",
        "One e-mail a week with the articles of that week, and nothing in between.",
        "the weekly digest",
    ),
}
assert tuple(CHOICES) == FREQUENCIES


def _target(web: WebState, token: str) -> tuple[Subscriber | None, str | None]:
    """The subscriber a manage link is for, or why it does not work:
    "expired", "damaged" (forged, changed, or another purpose's token) or "gone"."""
    try:
        subscriber_id = read_token("manage", token, web.secret, now=web.now())
    except TokenError:
        return None, "expired" if _expired(web, token) else "damaged"
    subscriber = web.store.get_subscriber(subscriber_id)
    if subscriber is None or subscriber.status in INACTIVE:
        return subscriber, "gone"
    return subscriber, None


def _expired(web: WebState, token: str) -> bool:
    """Authentic but too old (as opposed to forged or damaged)?"""
    try:
        read_token("manage", token, web.secret, max_age=timedelta(days=365 * 100), now=web.now())
    except TokenError:
        return False
    return True


def _problem(web: WebState, reason: str) -> Response:
    contact = f"or write to {web.settings.clinic.email} and we will change it for you."
    title, message = {
        "expired": (
            "This link has expired",
            f"Links to manage your e-mail work for {MANAGE_MAX_AGE.days} days, and this one is older. "
            f"Please use the 'manage your e-mail' link in our most recent e-mail, {contact}",
        ),
        "gone": (
            "This address is not on our list",
            "We send no articles to this address any more, so there is nothing to choose. "
            "To get them again, subscribe on our website.",
        ),
    }.get(
        reason,
        (
            "This link does not work",
            f"The link seems incomplete or changed. Please open it again from one of our e-mails, {contact}",
        ),
    )
    return web.error_page(400, title, message, headers=NO_STORE)


def _page(
    web: WebState, request: Request, subscriber: Subscriber, *, saved: bool = False, error: str | None = None
) -> Response:
    status = 403 if error else 200
    response = form_page(
        web,
        request,
        template="web/manage.html",
        status=status,
        extra={
            "title": "Manage your e-mail",
            "address": mask_address(subscriber.email),
            "current": subscriber.frequency,
            "choices": CHOICES,
            "field": FREQUENCY_FIELD,
            "action": request.url.path,
            "saved": saved,
            "error": error,
            "digest_on": web.settings.scheduler.digest_cron is not None,
            "noindex": True,
        },
    )
    response.headers.update(NO_STORE)
    return response


async def manage_page(request: Request) -> Response:
    """GET: the current choice and a button per option; changes nothing."""
    web = web_state(request)
    subscriber, problem = await run_in_threadpool(_target, web, request.path_params["token"])
    if problem is not None or subscriber is None:
        return _problem(web, problem or "gone")
    return _page(web, request, subscriber)


async def manage(request: Request) -> Response:
    """POST from one of the page's buttons: the new choice, shown at once."""
    web = web_state(request)
    subscriber, problem = await run_in_threadpool(_target, web, request.path_params["token"])
    if problem is not None or subscriber is None:
        return _problem(web, problem or "gone")
    form = await web.read_form(request)
    if not web.csrf.check(request.cookies.get(CSRF_COOKIE), text_field(form.get(CSRF_FIELD))):
        return _page(web, request, subscriber, error="This page had expired. Please press your choice again.")
    choice = text_field(form.get(FREQUENCY_FIELD))
    if choice not in CHOICES:
        return web.error_page(
            400,
            "Nothing was changed",
            "This request did not say what to choose. Please use one of the buttons on the page.",
            headers=NO_STORE,
        )
    before = subscriber.frequency
    subscriber = await run_in_threadpool(
        lambda: web.store.set_subscriber_frequency(subscriber.id, choice, via="manage page", now=web.now())
    )
    if before != choice:
        logger.info("manage: subscriber %d chose %s (was %s)", subscriber.id, choice, before)
    return _page(web, request, subscriber, saved=True)

"""Subscribers (``/desk/subscribers``, admins): counts by status, search by address,
add (active, with the consent note kept in the audit log) or invite (double opt-in),
unsubscribe, and the CSV export. Through the same code as ``pipeline subscribers``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.errors import PipelineError
from pipeline.ledger.staff import StaffMember
from pipeline.ledger.subscriber_rows import Subscriber
from pipeline.ledger.subscribers import add_subscriber, export_csv, remove_subscriber
from pipeline.mail.confirm import send_confirmation
from pipeline.web.desk.pages import desk_page, see, when
from pipeline.web.state import WebState, text_field, web_state

SEARCH_LIMIT = 50


def _search(web: WebState, text: str) -> list[Subscriber]:
    """Subscribers whose address holds ``text`` (case-insensitive), at most ``SEARCH_LIMIT``;
    read a page at a time, so a large list is never all in memory."""
    needle = text.strip().lower()
    found = []
    if needle:
        for subscriber in web.store.iter_subscribers():
            if needle in subscriber.email.lower():
                found.append(subscriber)
                if len(found) >= SEARCH_LIMIT:
                    break
    return found


RECENT_LIMIT = 20


def _recently_lost(web: WebState) -> list[tuple[Subscriber, str]]:
    """The latest bounced and complained subscribers, with when (in the clinic's zone)."""
    lost = [s for status in ("bounced", "complained") for s in web.store.iter_subscribers(status)]
    lost.sort(key=lambda s: s.status_changed_at or s.updated_at, reverse=True)
    return [(s, when(web, s.status_changed_at) if s.status_changed_at else "") for s in lost[:RECENT_LIMIT]]


def _page(request: Request, staff: StaffMember, *, status: int = 200, **extra: object) -> Response:
    web = web_state(request)
    query = request.query_params.get("q", "")
    results = _search(web, query) if query else None
    context = {
        "title": "Subscribers",
        "counts": web.store.count_subscribers(),
        "lost": _recently_lost(web),
        "dates": {s.id: when(web, s.status_changed_at) for s in results or [] if s.status_changed_at},
        "query": query,
        "results": results,
        "limit": SEARCH_LIMIT,
        "problem": None,
        "email": "",
        "name": "",
        "consent": "",
        **extra,
    }
    return desk_page(request, staff, "subscribers.html", context, status=status)


async def subscribers_page(request: Request, staff: StaffMember) -> Response:
    return await run_in_threadpool(_page, request, staff)


async def add(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    form = await web.read_form(request)
    email, name = text_field(form.get("email")).strip(), text_field(form.get("name")).strip()
    consent, invite = " ".join(text_field(form.get("consent")).split()), form.get("how") == "invite"

    def work() -> str:
        if not invite and not consent:
            raise PipelineError(
                "say how they agreed to receive the articles",
                field="consent",
                hint="e.g. 'asked at the front desk, 3 Nov'",
            )
        result = add_subscriber(web.store, web.settings, email, name or None, confirm=invite, source="desk")
        if invite and result.needs_confirmation:
            send_confirmation(web.settings, web.transport, result.subscriber, secret=web.secret, env=web.env)
        action = "subscriber invite" if invite else "subscriber add"
        detail = f"{result.subscriber.email}: {result.outcome}" + (f"; consent: {consent}" if consent else "")
        web.store.audit(actor=staff.name, actor_email=staff.email, action=action, now=web.now(), detail=detail)
        return "subscriber-invited" if invite else "subscriber-added"

    try:
        note = await run_in_threadpool(work)
    except PipelineError as error:
        words = f"{error.message} ({error.hint})" if error.hint else error.message
        page = await run_in_threadpool(
            lambda: _page(request, staff, status=400, problem=words, email=email, name=name, consent=consent)
        )
        return page
    return see("/desk/subscribers", note)


async def unsubscribe(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    email = text_field((await web.read_form(request)).get("email"))

    def work() -> None:
        subscriber = remove_subscriber(web.store, email)
        web.store.audit(
            actor=staff.name, actor_email=staff.email, action="subscriber unsubscribe", now=web.now(),
            detail=f"{subscriber.email} unsubscribed by staff",
        )  # fmt: skip

    try:
        await run_in_threadpool(work)
    except PipelineError as error:
        words = error.message
        return await run_in_threadpool(lambda: _page(request, staff, status=400, problem=words))
    return see("/desk/subscribers", "subscriber-unsubscribed")


async def export(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)

    def work() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "subscribers.csv"
            count = export_csv(web.store, path)
            data = path.read_bytes()
        web.store.audit(
            actor=staff.name, actor_email=staff.email, action="subscriber export", now=web.now(),
            detail=f"{count} subscribers exported",
        )  # fmt: skip
        return data

    return Response(
        await run_in_threadpool(work),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="subscribers.csv"'},
    )

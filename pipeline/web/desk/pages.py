"""Rendering desk pages: the shared layout's context (who is signed in, the CSRF
field, the navigation their role sees) and the short notes shown after an action."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pipeline.content.dates import local_time
from pipeline.ledger.staff import StaffMember
from pipeline.schedule.when import relative
from pipeline.web.desk.auth import CSRF_FIELD, sessions
from pipeline.web.state import WebState, web_state

# What a redirect after an action may say (?note=KEY): fixed texts, never echoed input.
NOTES = {
    "saved": "Saved. The file in posts/ holds these words now.",
    "created": "Saved as a draft. Schedule it when it is ready.",
    "scheduled": "Scheduled.",
    "unscheduled": "Unscheduled: it is a draft again and will not be released.",
    "approved": "Approved, as it reads now. Any later edit voids the approval.",
    "proof": "A proof is on its way to your address.",
    "sending": "Sending has started. This page shows its progress.",
    "subscriber-added": "Subscriber added.",
    "subscriber-invited": "Invitation sent: they become active when they confirm.",
    "subscriber-unsubscribed": "Unsubscribed.",
}


def nav(staff: StaffMember) -> list[tuple[str, str]]:
    items = [("/desk/", "Queue"), ("/desk/posts/new", "New post"), ("/desk/campaigns", "Campaigns")]
    if staff.may("manage subscribers"):
        items.append(("/desk/subscribers", "Subscribers"))
    return items


def desk_page(
    request: Request,
    staff: StaffMember,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    web = web_state(request)
    note = NOTES.get(request.query_params.get("note", ""))
    full = {
        "staff": staff,
        "nav": nav(staff),
        "here": request.url.path,
        "csrf_field": CSRF_FIELD,
        "csrf_token": sessions(request).csrf_token(request),
        "note": note,
        "zone": web.settings.clinic.timezone,
        "noindex": True,
        **context,
    }
    return web.page(f"desk/{template}", full, status=status)


def see(path: str, note: str | None = None) -> Response:
    """303 to ``path`` after a POST, with a note from ``NOTES``."""
    return RedirectResponse(f"{path}?note={note}" if note else path, status_code=303)


def when(web: WebState, moment: datetime | None) -> str:
    """A time as staff read it: the clinic's wall clock and zone, and how far away."""
    if moment is None:
        return ""
    shown = local_time(moment, web.settings, "%a %b %-d, %Y %-I:%M %p %Z")
    return f"{shown} ({relative(moment, web.now())})"

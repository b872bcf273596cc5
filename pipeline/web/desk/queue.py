"""The queue and calendar (``/desk/``): drafts, upcoming posts by day (the clinic's
zone), posts held for approval, and released posts with each channel's state."""

from __future__ import annotations

from itertools import groupby

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.content.dates import local_time
from pipeline.errors import each_problem
from pipeline.ledger.social_rows import SocialPost
from pipeline.ledger.staff import StaffMember
from pipeline.site.build import load_posts
from pipeline.web.desk.pages import desk_page, when
from pipeline.web.desk.poststate import PostState, post_state
from pipeline.web.state import WebState, web_state


def _queue(web: WebState) -> dict[str, object]:
    posts, errors = load_posts(web.settings)
    store = web.store
    releases, holds, approvals = store.list_releases(), store.list_holds(), store.list_approvals()
    social: dict[str, list[SocialPost]] = {}
    for row in store.social_posts_for():
        social.setdefault(row.slug, []).append(row)
    pauses = store.platform_pauses()
    states = [
        post_state(web, p, releases=releases, holds=holds, approvals=approvals, social=social, pauses=pauses)
        for p in posts
    ]
    by_stage: dict[str, list[PostState]] = {}
    for state in states:
        by_stage.setdefault(state.stage, []).append(state)
    upcoming = sorted(by_stage.get("upcoming", []), key=lambda s: (s.date, s.slug))
    days = [
        (day, [(s, when(web, s.date)) for s in group])
        for day, group in groupby(upcoming, key=lambda s: local_time(s.date, web.settings, "%A, %B %-d, %Y"))
    ]
    released = sorted(
        by_stage.get("released", []), key=lambda s: s.release.released_at if s.release else s.date, reverse=True
    )
    return {
        "drafts": sorted(by_stage.get("draft", []), key=lambda s: s.title.lower()),
        "days": days,
        "held": [(s, when(web, s.date)) for s in by_stage.get("held", []) + by_stage.get("due", [])],
        "released": [(s, when(web, s.release.released_at if s.release else s.date)) for s in released],
        "errors": [str(e) for e in each_problem(errors)],
        "require_approval": web.settings.scheduler.require_approval,
    }


async def queue_page(request: Request, staff: StaffMember) -> Response:
    context = await run_in_threadpool(_queue, web_state(request))
    return desk_page(request, staff, "queue.html", {"title": "Queue", **context})

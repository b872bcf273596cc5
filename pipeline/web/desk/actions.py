"""Actions on a post's page: schedule, unschedule, approve, proof, send now, and the
audit log's export. Each goes through the same code as its command (``requeue``,
``unqueue``, ``approve``, ``send-test``, ``send``) and is recorded in the audit log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.channels.newsletter import render_post_newsletter
from pipeline.content.dates import DateProblem, localize, parse_datetime
from pipeline.content.edit import edit_post, format_date
from pipeline.errors import PipelineError
from pipeline.ledger.audit import audit_csv
from pipeline.ledger.staff import StaffMember
from pipeline.mail.sender import send_test
from pipeline.schedule import gate, plans, release
from pipeline.schedule.when import local
from pipeline.site.build import find_post
from pipeline.web.desk.pages import desk_page, see
from pipeline.web.state import WebState, text_field, web_state


def refuse_if_released(web: WebState, slug: str) -> None:
    record = web.store.get_release(slug)
    if record is None:
        return
    mailed = "; it was e-mailed to subscribers, so its archive page stays online" if web.store.get_mailing(slug) else ""
    raise PipelineError(
        f"{slug} was already released at {local(record.released_at, web.settings)}{mailed}",
        field="slug",
        hint="a released post keeps its date and URL; edit its text to correct it (feed readers see an update)",
    )


def action_problem(request: Request, staff: StaffMember, slug: str, error: PipelineError, **extra: object) -> Response:
    words = f"{error.message} ({error.hint})" if error.hint else error.message
    context = {"title": "Not done", "slug": slug, "problem": words, "choices": [], **extra}
    return desk_page(request, staff, "problem.html", context, status=400)


async def on_post_page(request: Request, staff: StaffMember, slug: str, work: Callable[[], str]) -> Response:
    """Run ``work`` (the ledger, the post file, the mail: blocking) off the event loop,
    then back to the post's page with the note it returns, or its problem in words."""
    try:
        note = await run_in_threadpool(work)
    except PipelineError as error:
        return action_problem(request, staff, slug, error)
    return see(f"/desk/posts/{slug}", note)


def audit(web: WebState, staff: StaffMember, action: str, slug: str, content_hash: str | None, detail: str) -> None:
    web.store.audit(
        actor=staff.name, actor_email=staff.email, action=action, now=web.now(),
        slug=slug, content_hash=content_hash, detail=detail,
    )  # fmt: skip


# --- schedule / unschedule ----------------------------------------------------------------------


def _ambiguous_choices(text: str, web: WebState) -> list[str]:
    """For a wall-clock time that happens twice, the two times with their offsets."""
    try:
        naive = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return []
    if naive.tzinfo is not None:
        return []
    zone = web.settings.clinic.zone
    try:
        localize(naive, zone)
    except DateProblem:
        first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        if first.utcoffset() != second.utcoffset():
            return [first.isoformat(timespec="minutes"), second.isoformat(timespec="minutes")]
    return []


async def schedule(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]
    at = text_field((await web.read_form(request)).get("at")).strip()
    try:
        when = parse_datetime(at, web.settings.clinic.zone).replace(microsecond=0)
    except DateProblem as problem:
        choices = _ambiguous_choices(at, web)
        return action_problem(request, staff, slug, PipelineError(str(problem), field="at"), choices=choices)

    def work() -> str:
        post = find_post(web.settings, slug)
        refuse_if_released(web, slug)
        changes = {"date": format_date(when, web.settings.clinic.zone)}
        if post.draft:
            changes["draft"] = "false"
        updated = edit_post(web.settings, post, changes)
        audit(web, staff, "schedule", slug, updated.content_hash, f"release at {local(updated.date, web.settings)}")
        return "scheduled"

    return await on_post_page(request, staff, slug, work)


async def unschedule(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]

    def work() -> str:
        post = find_post(web.settings, slug)
        refuse_if_released(web, slug)
        if post.draft:
            raise PipelineError(f"{slug} is already a draft", hint="it will not be released")
        updated = edit_post(web.settings, post, {"draft": "true"})
        audit(web, staff, "unschedule", slug, updated.content_hash, "back to draft")
        return "unscheduled"

    return await on_post_page(request, staff, slug, work)


# --- approve -----------------------------------------------------------------------------------


async def approve(request: Request, staff: StaffMember) -> Response:
    """Approvers only: binds the approval to the content hash of the version the
    approver was shown (the form says which); a newer file is refused."""
    web = web_state(request)
    slug = request.path_params["slug"]
    shown = text_field((await web.read_form(request)).get("content_hash"))

    def work() -> str:
        post = find_post(web.settings, slug)
        refuse_if_released(web, slug)
        if post.content_hash != shown:
            raise PipelineError(
                "the post changed after you opened it, so you have not read what would be approved",
                hint="read the post again, then approve",
            )
        approval = gate.approve(web.store, post, staff.name, web.now())
        audit(web, staff, "approve", slug, approval.content_hash, f"approved as {post.path} reads now")
        return "approved"

    return await on_post_page(request, staff, slug, work)


# --- proof -------------------------------------------------------------------------------------


async def proof(request: Request, staff: StaffMember) -> Response:
    """One proof copy to the signed-in staff member's own address (drafts and future posts too)."""
    web = web_state(request)
    slug = request.path_params["slug"]

    def work() -> str:
        post = find_post(web.settings, slug)
        newsletter = render_post_newsletter(post, web.settings, web.env)
        send_test(web.settings, web.transport, newsletter, staff.email, now=web.now())
        audit(web, staff, "proof", slug, post.content_hash, f"proof sent to {staff.email}")
        return "proof"

    return await on_post_page(request, staff, slug, work)


# --- send now (admins) ---------------------------------------------------------------------------


async def send_page(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]
    try:
        plan = await run_in_threadpool(plans.plan_send, web.settings, web.store, slug, web.now())
    except PipelineError as error:
        return action_problem(request, staff, slug, error)
    return desk_page(request, staff, "send.html", {"title": f"Send {plan.title}", "plan": plan, "slug": slug})


async def send_now(request: Request, staff: StaffMember) -> Response:
    """The same plan and release as ``pipeline send SLUG``; delivery runs in the background."""
    web = web_state(request)
    slug = request.path_params["slug"]
    sends = request.app.state.desk.sends
    now = web.now()

    def work() -> int:
        plan = plans.plan_send(web.settings, web.store, slug, now)
        if plan.done:
            raise PipelineError(plan.done)
        outcome = release.release_post(
            web.settings, slug, now, store=web.store, transport=web.transport, deliver_now=False, explicit=True
        )
        if outcome.campaign_id is None:
            raise PipelineError(outcome.message)
        post = find_post(web.settings, slug)
        audit(
            web,
            staff,
            "send",
            slug,
            post.content_hash,
            f"campaign {outcome.campaign_id} to {plan.recipients:,} subscribers",
        )
        return outcome.campaign_id

    try:
        campaign_id = await run_in_threadpool(work)
    except PipelineError as error:
        return action_problem(request, staff, slug, error)
    sends.start(campaign_id, slug)
    return see("/desk/campaigns", "sending")


async def audit_export(request: Request, staff: StaffMember) -> Response:
    """The audit log as CSV: one post's (?slug=), or all of it for admins."""
    web = web_state(request)
    slug = request.query_params.get("slug") or None
    if slug is None and not staff.may("manage staff"):
        from starlette.exceptions import HTTPException

        raise HTTPException(403, "Only admins may export the whole audit log; open a post to export its log.")
    entries = await run_in_threadpool(web.store.audit_entries, slug=slug)
    name = f"audit-{slug}.csv" if slug else "audit.csv"
    return Response(
        audit_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )

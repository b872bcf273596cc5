"""Writing posts: ``/desk/posts/new`` and ``/desk/posts/SLUG`` (the post's page).

Saving writes the file in ``posts/`` through ``parse_post``, the validator of ``pipeline
validate``; every problem is shown next to its field in the CLI's words, and the
staff member's text is kept. If the file changed on disk since the form was opened
(its content hash), saving refuses and shows both versions.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pipeline.config import PLATFORMS, Settings
from pipeline.content.markup import markdown_to_html_and_text
from pipeline.content.posts import CHANNELS, SLUG_PATTERN, Post, parse_post, post_files
from pipeline.errors import PipelineError, each_problem
from pipeline.files import write_atomic
from pipeline.ledger.staff import StaffMember
from pipeline.site.build import load_posts
from pipeline.web.desk import postform
from pipeline.web.desk.pages import desk_page, see, when
from pipeline.web.desk.poststate import post_state
from pipeline.web.state import WebState, text_field, web_state

save_lock = threading.Lock()  # one save at a time: check, then write


@dataclass
class Located:
    """A post file found by slug: its bytes, and the post if it is valid."""

    path: Path
    raw: bytes
    post: Post | None
    error: PipelineError | None = None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def display_path(settings: Settings, path: Path) -> str:
    try:
        return str(path.relative_to(settings.root.resolve()))
    except ValueError:
        return str(path)


def locate(settings: Settings, slug: str) -> Located | None:
    """The file whose post has ``slug`` (valid or not), or None."""
    if not SLUG_PATTERN.match(slug):
        return None
    for path in post_files(settings.posts_dir.resolve()):
        raw = path.read_bytes()
        shown = display_path(settings, path)
        try:
            post = parse_post(raw, shown, settings)
        except PipelineError as error:
            try:
                form, _kept = postform.read_file(raw, shown)
            except PipelineError:
                form = postform.PostForm()
            if (form.slug or path.stem) == slug:
                return Located(path, raw, None, error)
            continue
        if post.slug == slug:
            return Located(path, raw, post)
    return None


# --- problems next to their fields ----------------------------------------------------------

_FORM_FIELDS = {"title", "date", "slug", "summary", "tags", "image", "image_alt", "channels", "subject",
                "preheader", "body"}  # fmt: skip


def field_of(error: PipelineError) -> str:
    """The form field an error belongs to: ``sources[2]``, ``social.x``, ``title``, or ``general``."""
    name = error.field or ""
    found = re.match(r"^sources\[(\d+)\]", name)
    if found:
        return f"sources[{found.group(1)}]"
    if name.startswith("social."):
        return name
    base = re.split(r"[.\[]", name, maxsplit=1)[0]
    return base if base in _FORM_FIELDS else "general"


def problems_by_field(error: PipelineError) -> dict[str, list[str]]:
    """Each problem in the CLI's words (message and hint), by form field."""
    found: dict[str, list[str]] = {}
    for one in each_problem([error]):
        words = f"{one.message} ({one.hint})" if one.hint else one.message
        if field_of(one) == "general" and one.field:
            words = f"{one.field}: {words}"
        found.setdefault(field_of(one), []).append(words)
    return found


# --- pages -------------------------------------------------------------------------------------


@dataclass
class EditorView:
    form: postform.PostForm
    new: bool
    base_hash: str = ""
    problems: dict[str, list[str]] = field(default_factory=dict)
    conflict: dict[str, str] | None = None  # "theirs", "yours", "hash"
    warnings: list[str] = field(default_factory=list)


def editor_page(
    request: Request,
    staff: StaffMember,
    view: EditorView,
    *,
    status: int = 200,
    slug: str = "",
    post: Post | None = None,
) -> Response:
    web = web_state(request)
    context: dict[str, Any] = {
        "title": "New post" if view.new else view.form.title or view.form.slug,
        "view": view,
        "form": view.form,
        "platforms": PLATFORMS,
        "channels": CHANNELS,
        "slug": slug,
        "post": post,
        "state": None,
        "social_open": bool(view.form.social) or any(k.startswith("social") for k in view.problems),
        "require_approval": web.settings.scheduler.require_approval,
    }
    if post is not None:
        context.update(post_context(web, post))
    return desk_page(request, staff, "post.html", context, status=status)


def post_context(web: WebState, post: Post) -> dict[str, Any]:
    """The post's page beside the form: where it stands and its history."""
    state = post_state(web, post)
    history = [
        {
            "at": e.at,
            "when": when(web, e.at),
            "who": e.actor,
            "action": e.action,
            "detail": e.detail,
            "content_hash": e.content_hash,
        }
        for e in web.store.audit_entries(slug=post.slug)
    ]
    if state.release is not None:  # the release itself is the scheduler's (or a send's) record
        channels = ", ".join(state.release.channels) or "no channel"
        history.insert(
            0,
            {"at": state.release.released_at, "when": when(web, state.release.released_at), "who": "the scheduler", "action": "release",
             "detail": f"released: {channels}", "content_hash": state.release.content_hash},
        )  # fmt: skip
    history.sort(key=lambda row: cast(datetime, row["at"]), reverse=True)  # newest first
    return {
        "state": state,
        "history": history,
        "post_when": when(web, post.date),
        "released_at": when(web, state.release.released_at) if state.release else "",
        "approved_at": when(web, state.approval.at) if state.approval else "",
        "picker_value": post.date.astimezone(web.settings.clinic.zone).strftime("%Y-%m-%dT%H:%M:%S"),
    }


async def new_post_form(request: Request, staff: StaffMember) -> Response:
    return editor_page(request, staff, EditorView(form=postform.PostForm(), new=True))


async def post_page(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]
    found = await run_in_threadpool(locate, web.settings, slug)
    if found is None:
        return desk_page(request, staff, "missing.html", {"title": "No such post", "slug": slug}, status=404)
    try:
        form, _kept = postform.read_file(found.raw, str(found.path))
    except PipelineError as error:
        return desk_page(
            request, staff, "unreadable.html", {"title": slug, "error": str(error), "path": found.path}, status=422
        )
    view = EditorView(form=form, new=False, base_hash=found.content_hash)
    if found.error is not None:
        view.problems = problems_by_field(found.error)
    return await run_in_threadpool(lambda: editor_page(request, staff, view, post=found.post, slug=slug))


# --- saving --------------------------------------------------------------------------------------


async def create_post(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    form = postform.from_request(await web.read_form(request, max_fields=200))
    view = EditorView(form=form, new=True)
    outcome = await run_in_threadpool(_create, web, form)
    if isinstance(outcome, dict):
        view.problems = outcome
        return editor_page(request, staff, view, status=400)
    web.store.audit(
        actor=staff.name, actor_email=staff.email, action="create", now=web.now(),
        slug=outcome.slug, content_hash=outcome.content_hash, detail=f"new draft {outcome.path}",
    )  # fmt: skip
    return see(f"/desk/posts/{outcome.slug}", "created")


def _create(web: WebState, form: postform.PostForm) -> Post | dict[str, list[str]]:
    if not form.slug:
        return {"slug": ["is required (lowercase letters, digits and hyphens, e.g. socket-fit-after-surgery)"]}
    path = web.settings.posts_dir.resolve() / f"{form.slug}.md"
    raw = postform.new_file(form)
    with save_lock:
        try:
            post = parse_post(raw, display_path(web.settings, path), web.settings)
        except PipelineError as error:
            return problems_by_field(error)
        posts, _errors = load_posts(web.settings)
        taken = next((p for p in posts if p.slug == post.slug), None)
        if taken is not None or path.exists():
            where = taken.path if taken is not None else display_path(web.settings, path)
            return {"slug": [f"slug {form.slug!r} is already used by {where} (choose another slug)"]}
        write_atomic(path, raw)
    return post


async def save_post(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    slug = request.path_params["slug"]
    submitted = await web.read_form(request, max_fields=200)
    form = postform.from_request(submitted, slug=slug)
    base_hash = text_field(submitted.get("base_hash"))
    outcome = await run_in_threadpool(_save, web, slug, form, base_hash, text_field(submitted.get("replace_hash")))
    if isinstance(outcome, EditorView):
        outcome.form, outcome.base_hash = form, base_hash
        status = 409 if outcome.conflict else 400
        found = await run_in_threadpool(locate, web.settings, slug)
        post = found.post if found else None
        return await run_in_threadpool(
            lambda: editor_page(request, staff, outcome, status=status, post=post, slug=slug)
        )
    if outcome is None:
        return see(f"/desk/posts/{slug}")
    web.store.audit(
        actor=staff.name, actor_email=staff.email, action="save", now=web.now(),
        slug=slug, content_hash=outcome.content_hash, detail=f"saved {outcome.path}",
    )  # fmt: skip
    return see(f"/desk/posts/{slug}", "saved")


def _save(
    web: WebState, slug: str, form: postform.PostForm, base_hash: str, replace_hash: str
) -> Post | EditorView | None:
    with save_lock:
        found = locate(web.settings, slug)
        if found is None:
            return EditorView(form=form, new=False, problems={"general": [f"the file of {slug} is gone from posts/"]})
        current = found.content_hash
        shown = display_path(web.settings, found.path)
        if current != base_hash and current != replace_hash:
            theirs = found.raw.decode("utf-8", "replace")
            yours = postform.canonical(form, {}).decode("utf-8")
            return EditorView(form=form, new=False, conflict={"theirs": theirs, "yours": yours, "hash": current})
        try:
            before, kept = postform.read_file(found.raw, shown)
        except PipelineError:  # not front matter at all: the form's version replaces it
            new_raw = postform.canonical(form, {})
        else:
            new_raw = postform.edited_file(found.raw, before, form, kept, shown)
        if new_raw == found.raw:
            return None
        try:
            post = parse_post(new_raw, shown, web.settings)
        except PipelineError as error:
            return EditorView(form=form, new=False, problems=problems_by_field(error))
        if found.path.read_bytes() != found.raw:
            return EditorView(
                form=form, new=False, problems={"general": ["the file changed while it was being saved; save again"]}
            )
        write_atomic(found.path, new_raw, mode=found.path.stat().st_mode & 0o777)
    return post


async def live_preview(request: Request, staff: StaffMember) -> Response:
    """The body's HTML as the e-mail and archive will show it (sanitised), for the editor's live preview."""
    web = web_state(request)
    form = await web.read_form(request, max_fields=8)
    settings = web.settings
    html, _text = markdown_to_html_and_text(
        text_field(form.get("body")), settings.clinic.base_url, {"contact:": settings.clinic.contact_link}
    )
    return HTMLResponse(html)

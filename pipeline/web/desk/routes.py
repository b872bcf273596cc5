"""The staff desk's routes under ``/desk/``, each with the right it needs.

GET  /desk/login, POST /desk/login, POST /desk/logout
GET  /desk/                             queue and calendar              any role
GET  /desk/posts/new, POST             write a new post (a draft)      write
GET  /desk/posts/SLUG, POST            the post's page; save           write
GET  /desk/posts/SLUG/preview          e-mail, text, archive, feed, snippets
POST /desk/posts/SLUG/schedule|unschedule                               schedule
POST /desk/posts/SLUG/approve                                           approve
POST /desk/posts/SLUG/proof                                             proof
GET  /desk/posts/SLUG/send, POST       send now                        send now
GET  /desk/subscribers (+ add, unsubscribe, export.csv)                 manage subscribers
GET  /desk/campaigns                    progress, bounces               any role
GET  /desk/audit.csv[?slug=SLUG]        the audit log (all of it: admins)
GET  /desk/static/...                   the desk's style sheet and script
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.web.desk import actions, auth, campaigns, editor, preview, queue, subscribers
from pipeline.web.state import WebState

STATIC = Path(__file__).resolve().parent.parent / "static"


@dataclass
class Desk:
    sessions: auth.Sessions
    sends: campaigns.Sends
    routes: list[BaseRoute] = field(default_factory=list)

    def close(self) -> None:
        self.sends.join(timeout=5)


async def _to_queue(request: Request) -> Response:
    return RedirectResponse("/desk/", status_code=308)


def desk_routes(web: WebState) -> Desk:
    g = auth.guarded
    desk = Desk(sessions=auth.Sessions(web), sends=campaigns.Sends(web))
    desk.routes = [
        Route("/desk", _to_queue, methods=["GET"]),
        Route("/desk/login", auth.login_form, methods=["GET"]),
        Route("/desk/login", auth.login, methods=["POST"]),
        Route("/desk/logout", auth.logout, methods=["POST"]),
        Route("/desk/", g(None, queue.queue_page), methods=["GET"]),
        Route("/desk/posts/new", g("write", editor.new_post_form), methods=["GET"]),
        Route("/desk/posts/new", g("write", editor.create_post), methods=["POST"]),
        Route("/desk/live-preview", g("write", editor.live_preview), methods=["POST"]),
        Route("/desk/posts/{slug}", g(None, editor.post_page), methods=["GET"]),
        Route("/desk/posts/{slug}", g("write", editor.save_post), methods=["POST"]),
        Route("/desk/posts/{slug}/preview", g(None, preview.preview_page), methods=["GET"]),
        Route("/desk/posts/{slug}/frame/{part}", g(None, preview.framed), methods=["GET"]),
        Route("/desk/posts/{slug}/schedule", g("schedule", actions.schedule), methods=["POST"]),
        Route("/desk/posts/{slug}/unschedule", g("schedule", actions.unschedule), methods=["POST"]),
        Route("/desk/posts/{slug}/approve", g("approve", actions.approve), methods=["POST"]),
        Route("/desk/posts/{slug}/proof", g("proof", actions.proof), methods=["POST"]),
        Route("/desk/posts/{slug}/send", g("send now", actions.send_page), methods=["GET"]),
        Route("/desk/posts/{slug}/send", g("send now", actions.send_now), methods=["POST"]),
        Route("/desk/subscribers", g("manage subscribers", subscribers.subscribers_page), methods=["GET"]),
        Route("/desk/subscribers/add", g("manage subscribers", subscribers.add), methods=["POST"]),
        Route("/desk/subscribers/unsubscribe", g("manage subscribers", subscribers.unsubscribe), methods=["POST"]),
        Route("/desk/subscribers/export.csv", g("manage subscribers", subscribers.export), methods=["GET"]),
        Route("/desk/campaigns", g(None, campaigns.campaigns_page), methods=["GET"]),
        Route("/desk/audit.csv", g(None, actions.audit_export), methods=["GET"]),
        Mount("/desk/static", app=StaticFiles(directory=STATIC), name="desk-static"),
    ]
    return desk

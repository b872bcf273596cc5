"""Campaigns (``/desk/campaigns``): each send's progress and outcome, the bounces and
failures with their SMTP replies; and the background sends that "send now" starts.

A send started from the desk is delivered by a thread of the web process, so the
request returns at once. The campaign's lease keeps a scheduler that resumes
unfinished campaigns from sending the same one; if the web process stops midway,
the scheduler's delivery job (or ``pipeline send --resume``) finishes it.
"""

from __future__ import annotations

import logging
import threading

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipeline.ledger.staff import StaffMember
from pipeline.schedule.sending import deliver_and_log
from pipeline.web.desk.pages import desk_page, when
from pipeline.web.state import WebState, web_state

logger = logging.getLogger("pipeline.web.desk")


class Sends:
    """Deliveries running in background threads, by campaign id."""

    def __init__(self, web: WebState) -> None:
        self.web = web
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, campaign_id: int, slug: str) -> None:
        with self._lock:
            running = self._threads.get(campaign_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._deliver, args=(campaign_id, slug), name=f"desk-send-{campaign_id}", daemon=True
            )
            self._threads[campaign_id] = thread
            thread.start()

    def _deliver(self, campaign_id: int, slug: str) -> None:
        web = self.web
        try:
            deliver_and_log(
                web.store, web.settings, web.transport, campaign_id, slug,
                stopped_prefix=f"{slug}: ", stopped_tail=" so far; the scheduler's delivery job resumes it",
            )  # fmt: skip
        except Exception:
            logger.exception("desk: sending campaign %d stopped", campaign_id)

    def running(self) -> set[int]:
        with self._lock:
            return {cid for cid, thread in self._threads.items() if thread.is_alive()}

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)


def _campaigns(web: WebState, running: set[int]) -> list[dict[str, object]]:
    rows = []
    for campaign in sorted(web.store.list_campaigns(), key=lambda c: c.id, reverse=True):
        counts = web.store.delivery_counts(campaign.id)
        rows.append(
            {
                "campaign": campaign,
                "created": when(web, campaign.created_at),
                "finished": when(web, campaign.finished_at) if campaign.finished_at else "",
                "counts": counts,
                "total": sum(counts.values()),
                "running": campaign.id in running,
                "problems": web.store.problem_deliveries(campaign.id, limit=50),
                "rates": web.store.campaign_rates(campaign.id),
            }
        )
    return rows


async def campaigns_page(request: Request, staff: StaffMember) -> Response:
    web = web_state(request)
    sends: Sends = request.app.state.desk.sends
    running = sends.running()
    rows = await run_in_threadpool(_campaigns, web, running)
    unfinished = any(row["campaign"].status != "finished" for row in rows)  # type: ignore[attr-defined]
    context = {"title": "Campaigns", "rows": rows, "refresh": bool(running) or unfinished}
    return desk_page(request, staff, "campaigns.html", context)

"""What ``pipeline send`` shows while and after it delivers: a progress bar per
campaign, then the summary table, each problem address, the rates and the advice."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.mail import sender as delivery
from pipeline.mail.transports import OutboxTransport, Transport

console = Console(stderr=True, highlight=False)


class ProgressBar:
    """A rich progress bar per campaign: sent, failed, remaining."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("sent {task.fields[sent]} · failed {task.fields[failed]} · remaining {task.fields[remaining]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.progress.stop()

    def update(self, event: delivery.Progress) -> None:
        task = self.tasks.get(event.campaign)
        if task is None:
            task = self.tasks[event.campaign] = self.progress.add_task(
                event.campaign, total=event.total, sent=0, failed=0, remaining=event.total
            )
        self.progress.update(
            task,
            completed=event.total - event.remaining,
            sent=event.sent,
            failed=event.failed,
            remaining=event.remaining,
        )


def print_summary(summary: delivery.Summary, transport: Transport) -> None:
    if not summary.campaigns:
        return
    table = Table(
        "campaign", "sent", "failed", "bounced", "skipped", "retried", "re-sent", "left", "held", "state", box=None
    )
    for c in summary.campaigns:
        table.add_row(
            c.key,
            str(c.sent),
            str(c.failed),
            str(c.bounced),
            str(c.skipped),
            str(c.retried),
            str(c.recovered),
            str(c.remaining),
            str(c.held),
            _state(c),
        )
    console.print(table)
    for c in summary.campaigns:
        for address, status, reply in c.problems:
            console.print(f"{c.key}: {address}: {status}: {reply}", markup=False)
        for address, why in c.held_addresses:
            console.print(f"{c.key}: {address}: {why}", markup=False)
    rate = summary.sent / summary.seconds if summary.seconds else 0.0
    if isinstance(transport, OutboxTransport):
        console.print(
            f"{summary.sent} message(s) written to the outbox {transport.path} in {summary.seconds:.1f} s: "
            "nothing was delivered to anyone (the outbox only keeps files; set delivery.transport to smtp://... "
            "to send for real)",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(f"{summary.sent} sent in {summary.seconds:.1f} s ({rate:.0f}/s)")

    for c in summary.campaigns:
        if c.rates is not None and c.rates.attempted:
            console.print(f"{c.key}: {c.rates.describe()}", markup=False, soft_wrap=True)
            for warning in c.rates.warnings():
                console.print(f"warning: {c.key}: {warning}", markup=False, soft_wrap=True)
    for c in summary.campaigns:
        for line in c.advice():
            console.print(line, markup=False)
    if summary.remaining and not summary.paused:
        console.print(f"{summary.remaining} left to send: run `pipeline send --resume` later")


def _state(c: delivery.CampaignResult) -> str:
    if c.busy_with:
        return f"busy ({c.busy_with})"
    if c.paused:
        return "paused"
    return "finished" if c.finished else "unfinished"

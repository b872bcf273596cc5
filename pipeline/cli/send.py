"""``pipeline send``, ``send-test`` and ``doctor``: newsletters to subscribers."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.channels.newsletter import render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.cli.common import config_option, parse_when, pass_settings
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.mail import sender as delivery
from pipeline.mail.doctor import diagnose
from pipeline.mail.transports import transport_from_spec
from pipeline.schedule.campaigns import digest_newsletter, newsletter_for_slug, post_for_slug

console = Console(stderr=True, highlight=False)

transport_option = click.option(
    "--transport",
    "transport_spec",
    metavar="SPEC",
    help='Override delivery.transport for this run: "outbox:PATH" or "smtp://[user@]host:port[?tls=starttls|ssl]".',
)
now_option = click.option(
    "--now", "now_text", metavar="TIME", help="Act as if it were TIME (ISO 8601; clinic zone if none). Default: now."
)


def _now(settings: Settings, now_text: str | None) -> datetime:
    return parse_when(now_text, settings) if now_text else datetime.now(UTC)


@click.command("send")
@config_option
@click.argument("slug", required=False)
@click.option("--digest", is_flag=True, help="Send a digest of every post released since --since.")
@click.option("--since", "since_text", metavar="TIME", help="With --digest: posts released after TIME.")
@click.option(
    "--resume", is_flag=True, help="Continue every unfinished campaign (after a crash, deferrals or a pause)."
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: also send deliveries held after two interrupted sends (they may arrive twice).",
)
@transport_option
@now_option
@click.option(
    "--no-wait",
    is_flag=True,
    help="End when only deferred (4xx) deliveries remain instead of waiting to retry them.",
)
@pass_settings
def send_command(
    settings: Settings,
    slug: str | None,
    digest: bool,
    since_text: str | None,
    resume: bool,
    force: bool,
    transport_spec: str | None,
    now_text: str | None,
    no_wait: bool,
) -> None:
    """Send the newsletter for SLUG to every active subscriber (or --digest, or --resume).

    The campaign and all its deliveries are written to the ledger first; then
    each message is marked before and after it is handed to the server. If the
    run is interrupted, `pipeline send --resume` (or the same command again)
    sends what is left, and nobody gets a second copy except, at most, the
    messages that were in flight. Exits 1 if any delivery failed or bounced.
    """
    chosen = [name for name, on in (("SLUG", bool(slug)), ("--digest", digest), ("--resume", resume)) if on]
    if len(chosen) != 1:
        raise PipelineError(
            "say what to send" if not chosen else f"{' and '.join(chosen)} cannot be combined",
            field="send",
            hint="pipeline send SLUG, pipeline send --digest --since TIME, or pipeline send --resume",
        )
    if since_text and not digest:
        raise PipelineError("--since only goes with --digest", field="--since")
    if force and not resume:
        raise PipelineError("--force only goes with --resume", field="--force", hint="pipeline send --resume --force")
    transport = transport_from_spec(transport_spec, settings)  # a bad spec fails before anything is written
    now = _now(settings, now_text)
    with Store.open(settings) as store:
        campaign_id: int | None = None
        if slug:
            post = post_for_slug(settings, slug, now)
            newsletter = render_post_newsletter(post, settings, make_environment(settings))
            campaign_id = delivery.start_campaign(store, settings, newsletter, kind="post")
            store.record_publication(post.slug, "email", now, post.content_hash)
        elif digest:
            if not since_text:
                raise PipelineError("--digest needs --since TIME", field="--since", hint="e.g. --since 2026-11-01")
            newsletter = digest_newsletter(settings, parse_when(since_text, settings, option="--since"), now)
            campaign_id = delivery.start_campaign(store, settings, newsletter, kind="digest")
        console.print(f"sending via {transport.description}")
        with _ProgressBar() as bar:
            try:
                summary = delivery.deliver(
                    store,
                    settings,
                    transport,
                    campaign_id,
                    bar.update,
                    wait_for_retries=not no_wait,
                    resume_paused=resume,
                    force=force,
                )
            except delivery.DeliveryAborted as aborted:
                bar.stop()
                _print_summary(aborted.summary)
                raise
    _print_summary(summary)
    if not summary.campaigns:
        console.print("nothing to send: every campaign is finished")
    busy = [c for c in summary.campaigns if c.busy_with]
    stopped = summary.paused or summary.held
    if not summary.ok or stopped or (busy and campaign_id is not None):
        raise click.exceptions.Exit(1)


class _ProgressBar:
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

    def __enter__(self) -> _ProgressBar:
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


def _print_summary(summary: delivery.Summary) -> None:
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
    console.print(f"{summary.sent} sent in {summary.seconds:.1f} s ({rate:.0f}/s)")
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


@click.command("send-test")
@config_option
@click.argument("slug")
@click.option("--to", "to", required=True, metavar="ADDRESS", help="Where to send the proof.")
@transport_option
@now_option
@pass_settings
def send_test_command(settings: Settings, slug: str, to: str, transport_spec: str | None, now_text: str | None) -> None:
    """Send one proof copy of SLUG's newsletter to ADDRESS. Touches no subscriber or ledger."""
    transport = transport_from_spec(transport_spec, settings)
    newsletter = newsletter_for_slug(settings, slug, _now(settings, now_text))
    reply = delivery.send_test(settings, transport, newsletter, to)
    click.echo(f"proof sent to {to} via {transport.description}: {reply}")


@click.command("doctor")
@config_option
@click.argument("slug")
@now_option
@pass_settings
def doctor_command(settings: Settings, slug: str, now_text: str | None) -> None:
    """Check SLUG's newsletter as it would be sent (offline) and list every problem.

    Headers, one-click unsubscribe, DKIM coverage and alignment, HTML size,
    plain-text part, postal address and unsubscribe link. Exits 1 if any.
    """
    newsletter = newsletter_for_slug(settings, slug, _now(settings, now_text))
    problems = diagnose(settings, newsletter)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{len(problems)} problem(s) in the newsletter for {slug}")
        raise click.exceptions.Exit(1)
    click.echo(f"no problems found in the newsletter for {slug}")


COMMANDS: list[click.Command] = [send_command, send_test_command, doctor_command]

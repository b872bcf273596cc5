"""The release queue: ``schedule run``, ``queue``, ``unqueue``, ``requeue``, ``approve``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pipeline import DEFAULT_CONFIG
from pipeline.cli.common import config_option, parse_when, pass_settings
from pipeline.config import Settings
from pipeline.content.edit import edit_post, format_date
from pipeline.errors import PipelineError
from pipeline.ledger.locks import DatabaseLock
from pipeline.ledger.store import Store
from pipeline.schedule.gate import approval_problem, approve, backfill_reason
from pipeline.schedule.singleton import describe
from pipeline.schedule.when import local, relative
from pipeline.site.loading import find_post, load_posts

out = Console(highlight=False, soft_wrap=True)


def _refuse_if_released(store: Store, slug: str, settings: Settings) -> None:
    record = store.get_release(slug)
    if record is None:
        return
    mailing = store.get_mailing(slug)
    mailed = (
        "; it was e-mailed to subscribers, so its archive page stays online and every link in that e-mail keeps working"
        if mailing is not None
        else ""
    )
    raise PipelineError(
        f"{slug} was already released at {local(record.released_at, settings)}{mailed}",
        field="slug",
        hint="a released post keeps its date and URL; edit the file to correct it (feed readers see an update)",
    )


# --- schedule run ---------------------------------------------------------------------------


@click.group("schedule")
def schedule_group() -> None:
    """The scheduler that releases queued posts at their time."""


@schedule_group.command("run")
@config_option
@click.option(
    "--transport",
    "transport_spec",
    metavar="SPEC",
    help='Override delivery.transport for this run: "outbox:PATH" or "smtp://[user@]host:port[?tls=starttls|ssl]".',
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug details too.")
@pass_settings
def run_command(settings: Settings, transport_spec: str | None, verbose: bool) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C (also: python scheduler.py).

    Releases each queued post at its time (feed, newsletter, social queue), once,
    across restarts; rescans posts/ every scheduler.rescan_seconds; resumes
    unfinished deliveries; sends the optional digest. Only one runs per database.
    """
    from pipeline.schedule import runner  # APScheduler and the release path: for this command only

    ctx = click.get_current_context()
    config_path = Path(ctx.params.get("config_path") or DEFAULT_CONFIG)
    ctx.exit(runner.run(settings, config_path, transport_spec=transport_spec, verbose=verbose))


# --- queue ------------------------------------------------------------------------------------


def _print_social(settings: Settings, rows: list[Any], pauses: dict[str, Any]) -> None:
    """Direct posting, per platform: red when paused or failed (pipeline.posting)."""
    for platform, pause in sorted(pauses.items()):
        out.print(
            f"[bold red]{platform} posting is PAUSED[/] since {local(pause.since, settings)}: {pause.reason}. "
            "Set a new credential in the environment; posting resumes by itself."
        )
    if not rows:
        return
    table = Table(title="Social posts (posted by the pipeline)", title_justify="left")
    for column in ("slug", "platform", "state", "detail"):
        table.add_column(column)
    colour = {"posted": "green", "pending": "yellow", "posting": "yellow", "failed": "bold red"}
    for row in rows[-20:]:
        state = "paused" if row.platform in pauses and row.status != "posted" else row.status
        detail = row.remote_url if row.status == "posted" else (row.last_error or "")
        table.add_row(row.slug, row.platform, f"[{colour.get(state, 'bold red')}]{state}[/]", detail or "")
    out.print(table)


@click.command("queue")
@config_option
@click.option("--recent", default=10, show_default=True, type=click.IntRange(0, 1000), help="Recent releases shown.")
@pass_settings
def queue_command(settings: Settings, recent: int) -> None:
    """List upcoming releases, held and overdue ones (loudly), and recent releases."""
    now = datetime.now(UTC)
    posts, errors = load_posts(settings)
    with Store.open(settings) as store:
        released = store.list_releases()
        held = store.list_holds()
        recorded = store.recorded_first_run()
        first_run = recorded or now
        approvals = store.list_approvals()
        problems = {
            p.slug: approval_problem(p, approvals.get(p.slug), settings)
            for p in posts
            if settings.scheduler.require_approval and p.slug not in released and p.date >= first_run
        }
        running = DatabaseLock(store, seconds=settings.scheduler.lock_seconds).holder()
        social_rows = store.social_posts_for() if settings.social.post.platforms() else []
        pauses = store.platform_pauses()
    _print_social(settings, social_rows, pauses)
    if recorded is None:
        out.print("The scheduler has never run: posts dated before its first start go to the feed only.")
    if running is None:
        out.print(
            "[bold red]The scheduler is not running:[/] nothing is released until it starts "
            "(`python scheduler.py` or `pipeline schedule run`)."
        )
    else:
        out.print(f"Scheduler running ({describe(running)}).")

    pending = sorted((p for p in posts if not p.draft and p.slug not in released), key=lambda p: (p.date, p.slug))
    attention = [p for p in pending if p.date <= now]
    upcoming = [p for p in pending if p.date > now]

    if attention:
        table = Table(title="[bold red]NEEDS ATTENTION: held or overdue[/]", title_justify="left", border_style="red")
        for column in ("due (local)", "late by", "state", "slug", "what to do"):
            table.add_column(column)
        for post in attention:
            problem = problems.get(post.slug)
            backfill = backfill_reason(post, now, first_run, settings)
            if post.slug in held or problem is not None:
                state = "[bold red]HELD[/]"
                todo = f"{problem or 'awaiting approval'}: pipeline approve {post.slug} --by NAME"
            elif backfill:
                state = "[yellow]OVERDUE (backfill)[/]"
                why = "dated before the first run" if post.date < first_run else "too late for e-mail"
                todo = f"feed only, when the scheduler runs ({why})"
            else:
                state = "[bold red]OVERDUE[/]"
                todo = "the scheduler releases it as soon as it runs"
            table.add_row(local(post.date, settings), relative(post.date, now), state, post.slug, todo)
        out.print(table)

    table = Table(title="Upcoming releases", title_justify="left")
    for column in ("when (local)", "", "channels", "title") + (
        ("approval",) if settings.scheduler.require_approval else ()
    ):
        table.add_column(column)
    for post in upcoming:
        row = [
            local(post.date, settings),
            relative(post.date, now),
            ", ".join(sorted(post.channels)) or "-",
            post.title,
        ]
        if settings.scheduler.require_approval:
            problem = problems.get(post.slug)
            row.append("[green]approved[/]" if problem is None else f"[bold red]{problem}[/]")
        table.add_row(*row)
    if not upcoming:
        table.caption = 'nothing queued: `pipeline new "Title" --at TIME` queues a post'
    out.print(table)

    if recent:
        table = Table(title="Recent releases", title_justify="left")
        for column in ("released (local)", "", "slug", "channels", "notes"):
            table.add_column(column)
        latest = sorted(released.values(), key=lambda r: r.released_at, reverse=True)[:recent]
        for record in latest:
            at = record.released_at
            notes = f"backfill: not {' or '.join(record.skipped)}" if record.skipped else ""
            table.add_row(local(at, settings), relative(at, now), record.slug, ", ".join(record.channels) or "-", notes)
        if not latest:
            table.caption = "nothing released by the scheduler yet"
        out.print(table)

    drafts = [p for p in posts if p.draft]
    if drafts:
        out.print(f"{len(drafts)} draft(s), never released while draft: " + ", ".join(p.slug for p in drafts))
    if errors:
        out.print(f"[bold red]{len(errors)} post(s) have errors and are not queued[/]: run `pipeline validate`")


# --- unqueue / requeue / approve ------------------------------------------------------------------


@click.command("unqueue")
@config_option
@click.argument("slug")
@pass_settings
def unqueue_command(settings: Settings, slug: str) -> None:
    """Stop SLUG from being released: sets 'draft: true' in its file."""
    post = find_post(settings, slug)
    with Store.open(settings) as store:
        _refuse_if_released(store, slug, settings)
    if post.draft:
        click.echo(f"{slug} is already a draft ({post.path}); it will not be released")
        return
    edit_post(settings, post, {"draft": "true"})
    click.echo(
        f"{slug} will not be released: set 'draft: true' in {post.path}. The scheduler drops its job within "
        f"{settings.scheduler.rescan_seconds:g} s; `pipeline requeue {slug} --at TIME` puts it back."
    )


@click.command("requeue")
@config_option
@click.argument("slug")
@click.option(
    "--at", "at_text", required=True, metavar="TIME", help="New release time (ISO 8601; clinic zone if none)."
)
@pass_settings
def requeue_command(settings: Settings, slug: str, at_text: str) -> None:
    """Queue SLUG for release at TIME: sets its 'date:' (and clears 'draft: true')."""
    when = parse_when(at_text, settings, option="--at").replace(microsecond=0)
    post = find_post(settings, slug)
    with Store.open(settings) as store:
        _refuse_if_released(store, slug, settings)
        changes = {"date": format_date(when, settings.clinic.zone)}
        if post.draft:
            changes["draft"] = "false"
        updated = edit_post(settings, post, changes)
        now = datetime.now(UTC)
        click.echo(f"{slug} queued for {local(updated.date, settings)} ({relative(updated.date, now)}) in {post.path}")
        if updated.date <= now:
            click.echo(
                f"  that time has passed: the scheduler releases it within {settings.scheduler.rescan_seconds:g} s"
            )
            reason = backfill_reason(updated, now, store.recorded_first_run() or now, settings)
            if reason:
                click.echo(f"  note: it is {reason}, so it goes to the feed only (not e-mailed, not queued for social)")
    if settings.scheduler.require_approval:
        click.echo(f"  the file changed, so any approval is void: pipeline approve {slug} --by NAME")


@click.command("approve")
@config_option
@click.argument("slug")
@click.option("--by", "by", required=True, metavar="NAME", help="Who approves the post (recorded with the time).")
@pass_settings
def approve_command(settings: Settings, slug: str, by: str) -> None:
    """Approve SLUG for release as its file is now (any later edit voids the approval)."""
    post = find_post(settings, slug)
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        _refuse_if_released(store, slug, settings)
        approval = approve(store, post, by, now)
    click.echo(f"{slug} approved by {approval.by} at {local(now, settings)} (content {post.content_hash[:12]})")
    if not settings.scheduler.require_approval:
        click.echo("  note: scheduler.require_approval is false, so posts are released without approval anyway")
    if post.draft:
        click.echo("  it is a draft: removing 'draft: true' changes the file and voids this approval; approve it after")
    elif post.date <= now:
        click.echo(f"  it is due: the scheduler releases it within {settings.scheduler.rescan_seconds:g} s")
    else:
        click.echo(f"  it is released at {local(post.date, settings)} ({relative(post.date, now)})")


COMMANDS = [schedule_group, queue_command, unqueue_command, requeue_command, approve_command]

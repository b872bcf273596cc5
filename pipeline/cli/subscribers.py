"""``pipeline subscribers ...``: add, remove, list, import, export, count."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.content.dates import to_utc_iso
from pipeline.ledger.columns import FREQUENCIES, SUBSCRIBER_STATUSES
from pipeline.ledger.store import Store

console = Console(stderr=True, highlight=False)
_STATUS = click.Choice(SUBSCRIBER_STATUSES)
_FREQUENCY_WORDS = {"each": "each article", "digest": "the weekly digest"}


@click.group("subscribers")
def subscribers_group() -> None:
    """Manage the newsletter's subscribers."""


@subscribers_group.command("add")
@config_option
@click.argument("email")
@click.option("--name", help="The subscriber's name, for the To: line.")
@click.option(
    "--confirm",
    is_flag=True,
    help="Send a double opt-in e-mail; the subscriber stays pending until they click it.",
)
@click.option("--transport", "transport_spec", metavar="SPEC", help="Send the confirmation through SPEC.")
@click.option(
    "--frequency",
    type=click.Choice(FREQUENCIES),
    help="'each': an e-mail per article (the default for a new subscriber); 'digest': the weekly digest only. "
    "Changes an existing subscriber's choice too.",
)
@pass_settings
def add_command(
    settings: Settings,
    email: str,
    name: str | None,
    confirm: bool,
    transport_spec: str | None,
    frequency: str | None,
) -> None:
    """Add EMAIL as an active subscriber (staff hold the consent), or pending with --confirm."""
    # Each command imports what it alone uses: `subscribers count` loads no mail layer.
    from pipeline.ledger.subscribers import add_subscriber
    from pipeline.mail.confirm import send_confirmation
    from pipeline.mail.transports import transport_from_spec

    transport = transport_from_spec(transport_spec, settings) if confirm else None
    with Store.open(settings) as store:
        before = store.get_subscriber_by_email(email)
        result = add_subscriber(store, settings, email, name, confirm=confirm, source="cli", frequency=frequency)
        subscriber = result.subscriber
        if before is not None and before.frequency != subscriber.frequency:
            click.echo(f"{subscriber.email}: now gets {_FREQUENCY_WORDS[subscriber.frequency]}")
        if result.needs_confirmation:
            assert transport is not None
            send_confirmation(settings, transport, subscriber)
            click.echo(f"{subscriber.email}: pending; confirmation sent via {transport.description}")
        elif result.outcome == "already":
            if before is None or before.frequency == subscriber.frequency:
                click.echo(f"{subscriber.email}: already subscribed ({subscriber.status}); nothing changed")
        else:
            click.echo(f"{subscriber.email}: {result.outcome} (active, {_FREQUENCY_WORDS[subscriber.frequency]})")


@subscribers_group.command("remove")
@config_option
@click.argument("email")
@click.option(
    "--forget",
    is_flag=True,
    help="Delete the address and its history instead of unsubscribing it (it could then be imported again).",
)
@pass_settings
def remove_command(settings: Settings, email: str, forget: bool) -> None:
    """Unsubscribe EMAIL: it gets no more mail and no import can re-add it."""
    from pipeline.ledger.subscribers import remove_subscriber

    with Store.open(settings) as store:
        subscriber = remove_subscriber(store, email, forget=forget)
    click.echo(f"{subscriber.email}: {'forgotten' if forget else 'unsubscribed'}")


@subscribers_group.command("list")
@config_option
@click.option("--status", type=_STATUS, help="Only subscribers with this status.")
@pass_settings
def list_command(settings: Settings, status: str | None) -> None:
    """List subscribers (a table on a terminal, tab-separated lines otherwise).

    A bounced or complained subscriber's line ends with the date (UTC) and the reason.
    """
    with Store.open(settings) as store:
        rows = store.iter_subscribers(status)
        if not sys.stdout.isatty():
            for sub in rows:
                line = f"{sub.email}\t{sub.name or ''}\t{sub.status}\t{to_utc_iso(sub.created_at)}"
                if sub.status_changed_at is not None or sub.status_reason:
                    changed = to_utc_iso(sub.status_changed_at) if sub.status_changed_at else ""
                    line += f"\t{changed}\t{' '.join((sub.status_reason or '').split())}"
                click.echo(line)
            return
        table = Table("e-mail", "name", "status", "since (UTC)", "when (UTC)", "why", box=None)
        for sub in rows:
            changed = f"{sub.status_changed_at:%Y-%m-%d %H:%M}" if sub.status_changed_at else ""
            table.add_row(
                sub.email,
                sub.name or "",
                sub.status,
                f"{sub.created_at:%Y-%m-%d %H:%M}",
                changed,
                sub.status_reason or "",
            )
        Console(highlight=False).print(table)


@subscribers_group.command("count")
@config_option
@pass_settings
def count_command(settings: Settings) -> None:
    """How many subscribers there are, per status, and how many active ones get each
    article or the weekly digest."""
    with Store.open(settings) as store:
        counts = store.count_subscribers()
        groups = store.count_frequencies()
    table = Table("status", "subscribers", box=None)
    for status, count in counts.items():
        table.add_row(status, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values())}[/bold]")
    console_out = Console(highlight=False)
    console_out.print(table)
    frequencies = Table("active, getting", "subscribers", box=None)
    for frequency, count in groups.items():
        frequencies.add_row(_FREQUENCY_WORDS[frequency], str(count))
    console_out.print(frequencies)
    if groups["digest"] and settings.scheduler.digest_cron is None:
        click.echo(
            "note: no weekly digest is scheduled (scheduler.digest_cron), so digest readers get each article "
            "until one is",
            err=True,
        )


@subscribers_group.command("import")
@config_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_settings
def import_command(settings: Settings, file: Path) -> None:
    """Import subscribers from a CSV FILE with an 'email' column (and optional 'name', 'status', 'frequency').

    Every row that is not imported is reported with its line number and the
    reason; the others are imported. Importing the same file again changes
    nothing, and never re-subscribes an address that unsubscribed or bounced.
    'frequency' is 'each' (the default) or 'digest', for new subscribers: an existing
    one keeps their own choice.
    """
    from pipeline.ledger.subscribers import import_csv

    with Store.open(settings) as store:
        report = import_csv(store, settings, file)
    for problem in report.rejected:
        click.echo(f"rejected: {problem}", err=True)
    for note in report.kept:
        click.echo(f"kept: {note}", err=True)
    if report.ignored_columns:
        click.echo(f"note: ignored column(s) {', '.join(report.ignored_columns)}", err=True)
    click.echo(
        f"{report.added} added, {report.activated} activated, {report.suppressed} unsubscribed/bounced by the file, "
        f"{report.updated_names} names filled in, {report.unchanged} unchanged, "
        f"{len(report.kept)} kept inactive, {len(report.rejected)} rejected"
    )
    if report.rejected:
        raise click.exceptions.Exit(1)


@subscribers_group.command("export")
@config_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--status", type=_STATUS, help="Only subscribers with this status (default: all, to keep opt-outs).")
@pass_settings
def export_command(settings: Settings, file: Path, status: str | None) -> None:
    """Write subscribers to a CSV FILE (email, name, status, source, dates in UTC, frequency)."""
    from pipeline.ledger.subscribers import export_csv

    with Store.open(settings) as store:
        count = export_csv(store, file, status=status)
    click.echo(f"{count} subscriber(s) written to {file}")


COMMANDS: list[click.Command] = [subscribers_group]

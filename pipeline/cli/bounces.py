"""``pipeline bounces process``: read the bounce mailbox and record what came back."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import load_secret
from pipeline.mail.bounce_mailbox import open_mailbox, process_mailbox


@click.group("bounces")
def bounces_group() -> None:
    """Bounces and complaints that come back after a newsletter went out."""


@bounces_group.command("process")
@config_option
@click.option(
    "--maildir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Read this Maildir folder (default: bounces.maildir).",
)
@click.option(
    "--imap",
    metavar="URL",
    help="Read this IMAP folder, imaps://user@host[:port][/FOLDER] (password from PIPELINE_IMAP_PASSWORD).",
)
@pass_settings
def process_command(settings: Settings, maildir: Path | None, imap: str | None) -> None:
    """Record every unread bounce and complaint in the bounce mailbox.

    A permanent failure of an address bounces that delivery and the subscriber; a
    temporary one is counted (bounces.temporary_limit within bounces.temporary_days
    bounce the address); a complaint (feedback report) marks the subscriber complained,
    who then never gets mail again. What was read is marked seen. A message that is not
    a report, or names none of our deliveries, is kept unread and listed here.
    """
    box = open_mailbox(settings, maildir=maildir, imap=imap)
    with Store.open(settings) as store:
        result = process_mailbox(store, settings, box, secret=load_secret(settings))
    for kept in result.kept:
        click.echo(f"kept: {kept.where}: {kept.reason}", err=True)
    click.echo(result.summary())


COMMANDS: list[click.Command] = [bounces_group]

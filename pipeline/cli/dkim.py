"""``pipeline dkim init``: make the DKIM key and say which DNS records to publish."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import DEFAULT_CONFIG
from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.mail.dkim_keys import dkim_record, dmarc_record, init_dkim, spf_record


@click.group("dkim")
def dkim_group() -> None:
    """Sender authentication: the DKIM key the newsletter is signed with."""


@dkim_group.command("init")
@config_option
@click.option("--selector", default="news", show_default=True, help="The DKIM selector (the key's name in DNS).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the key (default: dkim.pem in the state folder).",
)
@click.option(
    "--dmarc-report", metavar="ADDRESS", help="Where DMARC reports go (default: dmarc-reports@ the From domain)."
)
@click.option("--force", is_flag=True, help="Replace an existing key (mail fails DKIM until the new record is in DNS).")
@pass_settings
def init_command(
    settings: Settings, selector: str, key_path: Path | None, dmarc_report: str | None, force: bool
) -> None:
    """Make a 2048-bit RSA key (mode 0600), set delivery.dkim_key and delivery.dkim_selector
    in pipeline.toml, and print the DNS records to publish: DKIM, an SPF suggestion and DMARC."""
    config_path = Path(click.get_current_context().params.get("config_path") or DEFAULT_CONFIG)
    path, signer = init_dkim(settings, config_path, selector=selector, key_path=key_path, force=force)
    click.echo(f"DKIM key written to {path} (mode 0600); {config_path} now signs with selector {selector!r}.")
    click.echo("Publish these records at your DNS provider (one line each, as a zone file writes them):\n")
    for record in (dkim_record(signer), spf_record(settings), dmarc_record(settings, dmarc_report)):
        click.echo(f"; {record.why}")
        click.echo(record.zone_line())
        click.echo("")
    click.echo("Then check them with: pipeline doctor --dns")


COMMANDS: list[click.Command] = [dkim_group]

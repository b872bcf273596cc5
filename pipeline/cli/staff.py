"""``pipeline staff ...``: the accounts that may sign in to the staff desk."""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.columns import STAFF_ROLES
from pipeline.ledger.staff import MIN_PASSWORD, hash_password
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import normalise_address

out = Console(highlight=False, soft_wrap=True)


def _actor() -> tuple[str, str]:
    """Who ran the command, for the audit log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return f"{user} (command line)", ""


def _read_password(from_stdin: bool, *, new: bool = True) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt(
            f"Password (at least {MIN_PASSWORD} characters)", hide_input=True, confirmation_prompt=new
        )
    else:
        raise PipelineError(
            "no terminal to ask for the password",
            field="--password-stdin",
            hint="pass --password-stdin and write the password on standard input",
        )
    hash_password(password)  # the rules, before anything is written
    return password


@click.group("staff")
def staff_group() -> None:
    """Staff accounts for the desk (/desk/): editors, approvers (clinicians) and admins."""


@staff_group.command("add")
@config_option
@click.argument("email")
@click.option("--name", required=True, help="The name shown in the desk and its audit log.")
@click.option(
    "--role",
    type=click.Choice(STAFF_ROLES),
    required=True,
    help="editor: writes, schedules, sends proofs; approver: also approves; admin: also staff, subscribers, send now.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@pass_settings
def add_command(settings: Settings, email: str, name: str, role: str, password_stdin: bool) -> None:
    """Create an account for EMAIL (asks for its password in a terminal)."""
    address = normalise_address(email)
    password = _read_password(password_stdin)
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        member = store.add_staff(address, name, role, password, now=now)
        actor, actor_email = _actor()
        store.audit(
            actor=actor, actor_email=actor_email, action="staff add", now=now, detail=f"{member.email} as {member.role}"
        )
    click.echo(f"{member.email}: {member.role} account for {member.name}; sign in at {settings.clinic.base_url}/desk/")


@staff_group.command("list")
@config_option
@pass_settings
def list_command(settings: Settings) -> None:
    """Every account: address, name, role, when its password last changed."""
    with Store.open(settings) as store:
        members = store.list_staff()
    table = Table(title="Staff accounts", title_justify="left")
    for column in ("email", "name", "role", "password changed (UTC)"):
        table.add_column(column)
    for member in members:
        table.add_row(member.email, member.name, member.role, member.password_changed_at.strftime("%Y-%m-%d %H:%M"))
    if not members:
        table.caption = "no accounts yet: pipeline staff add EMAIL --name NAME --role admin"
    out.print(table)


@staff_group.command("remove")
@config_option
@click.argument("email")
@pass_settings
def remove_command(settings: Settings, email: str) -> None:
    """Delete EMAIL's account; its sessions end at once (the audit log keeps its name)."""
    with Store.open(settings) as store:
        member = store.remove_staff(email)
        actor, actor_email = _actor()
        store.audit(
            actor=actor, actor_email=actor_email, action="staff remove", now=datetime.now(UTC), detail=member.email
        )
    click.echo(f"{member.email}: account removed; any session it had has ended")


@staff_group.command("password")
@config_option
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input (one line).")
@pass_settings
def password_command(settings: Settings, email: str, password_stdin: bool) -> None:
    """Set a new password for EMAIL; every session of the account ends."""
    password = _read_password(password_stdin)
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        member = store.set_staff_password(email, password, now=now)
        actor, actor_email = _actor()
        store.audit(actor=actor, actor_email=actor_email, action="staff password", now=now, detail=member.email)
    click.echo(f"{member.email}: new password set; every session of the account has ended")


COMMANDS = [staff_group]

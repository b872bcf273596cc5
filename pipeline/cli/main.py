"""The command line: the only place that prints and chooses exit codes."""

from __future__ import annotations

import importlib
import sys
from typing import cast

import click

from pipeline import __version__
from pipeline.cli.common import DEBUG_KEY, report_failure
from pipeline.faults import debug_from_env

# Every command: the module that defines it, and the line `pipeline --help` shows for it.
# The help lists commands from here, so it imports none of them, and running a command
# imports its own module only. tests/test_cli.py checks each line against the command.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": (
        "pipeline.cli.publish",
        "Render every post released at --now into feeds, newsletters and social snippets.",
    ),
    "validate": ("pipeline.cli.publish", "Check every post and template; print every problem; exit 1 if any."),
    "new": (
        "pipeline.cli.publish",
        "Write a new draft post into the posts folder, print its path and what to do next.",
    ),
    "preview": (
        "pipeline.cli.publish",
        "Write one post's newsletter (even if not yet released), print its path and snippets.",
    ),
    "send": (
        "pipeline.cli.send",
        "Send the newsletter for SLUG to every active subscriber (or --digest, or --resume).",
    ),
    "send-test": (
        "pipeline.cli.send",
        "Send one proof copy of SLUG's newsletter to ADDRESS, whatever its state (a draft, a post dated in the "
        "future, one held for approval).",
    ),
    "doctor": (
        "pipeline.cli.send",
        "Check SLUG's newsletter as it would be sent and list every problem; with --dns, also the sender "
        "authentication records in DNS.",
    ),
    "subscribers": ("pipeline.cli.subscribers", "Manage the newsletter's subscribers."),
    "schedule": ("pipeline.cli.schedule", "The scheduler that releases queued posts at their time."),
    "queue": ("pipeline.cli.schedule", "List upcoming releases, held and overdue ones (loudly), and recent releases."),
    "unqueue": ("pipeline.cli.schedule", "Stop SLUG from being released: sets 'draft: true' in its file."),
    "requeue": (
        "pipeline.cli.schedule",
        "Queue SLUG for release at TIME: sets its 'date:' (and clears 'draft: true').",
    ),
    "approve": (
        "pipeline.cli.schedule",
        "Approve SLUG for release as its file is now (any later edit voids the approval).",
    ),
    "serve": (
        "pipeline.cli.serve",
        "Serve the subscribe form, confirm and unsubscribe links, the newsletter archive and the feeds.",
    ),
    "social": ("pipeline.cli.social", "Direct posting to Mastodon and Bluesky ([social.post.*] in pipeline.toml)."),
    "dkim": ("pipeline.cli.dkim", "Sender authentication: the DKIM key the newsletter is signed with."),
    "bounces": ("pipeline.cli.bounces", "Bounces and complaints that come back after a newsletter went out."),
    "staff": (
        "pipeline.cli.staff",
        "Staff accounts for the desk (/desk/): editors, approvers (clinicians) and admins.",
    ),
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs, so `pipeline subscribers
    count` never pays for loading the renderers, and `pipeline --help` loads no command."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        return next(cast(click.Command, c) for c in module.COMMANDS if c.name == cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--debug", is_flag=True, help="Print the traceback of every error (also: PIPELINE_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Jameson Prosthetics publishing pipeline: one post -> feeds, newsletter, social snippets.

    Exit status: 0 done; 1 problems in posts or other input; 2 usage; 3 configuration;
    4 database; 5 files or disk; 6 mail transport; 70 a bug (with its traceback).
    """
    ctx.meta[DEBUG_KEY] = debug


def main() -> None:
    try:
        cli.main(prog_name="pipeline")  # exits; click prints its own usage errors
    except Exception as exc:  # failed outside any command's wrapper (e.g. loading a command)
        sys.exit(report_failure(exc, debug=debug_from_env()))

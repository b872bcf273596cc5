"""The command line: the only place that prints and chooses exit codes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import cast

import click

from pipeline import __version__
from pipeline.cli.common import DEBUG_KEY, report_failure
from pipeline.faults import debug_from_env

# Each module in pipeline/commands/ exposes COMMANDS, a list of click commands.
# Order matters for start-up time only: modules are imported in turn until the
# command is found.
COMMAND_MODULES = (
    "pipeline.cli.publish",
    "pipeline.cli.send",
    "pipeline.cli.subscribers",
    "pipeline.cli.schedule",
    "pipeline.cli.serve",
    "pipeline.cli.staff",
    "pipeline.cli.bounces",
    "pipeline.cli.dkim",
)


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or for --help), so
    `pipeline build` never pays for loading the web server or the database layer."""

    def _modules(self) -> Iterator[ModuleType]:
        for name in COMMAND_MODULES:
            yield importlib.import_module(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module in self._modules():
            for command in module.COMMANDS:
                if command.name == cmd_name:
                    return cast(click.Command, command)
        return None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(command.name for module in self._modules() for command in module.COMMANDS)


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

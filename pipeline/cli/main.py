"""The command line: the only place that prints and chooses exit codes."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import cast

import click

from pipeline import __version__

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
def cli() -> None:
    """Jameson Prosthetics publishing pipeline: one post -> feeds, newsletter, social snippets."""


def main() -> None:
    cli(prog_name="pipeline")

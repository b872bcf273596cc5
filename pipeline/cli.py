"""The command line: the only place that prints and chooses exit codes."""

from __future__ import annotations

import importlib

import click

from pipeline import __version__

# Each module in pipeline/commands/ exposes COMMANDS, a list of click commands.
COMMAND_MODULES = (
    "pipeline.commands.publish",
    "pipeline.commands.serve",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def cli() -> None:
    """Jameson Prosthetics publishing pipeline: one post -> feeds, newsletter, social snippets."""


for _module in COMMAND_MODULES:
    for _command in importlib.import_module(_module).COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="pipeline")

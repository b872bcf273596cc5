"""What every command shares: --config, settings loading, and errors as one line each."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import DEFAULT_CONFIG, Settings, load_settings
from pipeline.content.dates import DateProblem, parse_datetime
from pipeline.errors import PipelineError, PipelineErrors, each_problem

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="PIPELINE_CONFIG",
    help="The clinic's configuration file.",
)


class UserError(click.ClickException):
    """A PipelineError on its way out: printed as one line, exit status 1."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def pass_settings(command: F) -> F:
    """Load settings from --config and turn user mistakes into one-line errors."""

    @functools.wraps(command)
    def wrapper(*args: Any, config_path: Path, **kwargs: Any) -> Any:
        try:
            settings = load_settings(config_path)
            return command(settings, *args, **kwargs)
        except PipelineErrors as errors:
            for error in errors.errors[:-1]:
                click.echo(f"error: {error}", err=True)
            raise UserError(str(errors.errors[-1])) from None
        except PipelineError as error:
            raise UserError(str(error)) from None

    return wrapper  # type: ignore[return-value]


def report_errors(errors: Iterable[PipelineError]) -> None:
    """Print every problem, one line each (all of an invalid post's), then exit 1 if there was any."""
    errors = each_problem(errors)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if errors:
        raise click.exceptions.Exit(1)


def report_warnings(warnings: Iterable[PipelineError]) -> None:
    """Print what was fixed on the way in (it did not stop anything), one line each."""
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def parse_when(text: str, settings: Settings, *, option: str = "--now") -> datetime:
    try:
        return parse_datetime(text, settings.clinic.zone)
    except DateProblem as problem:
        raise PipelineError(str(problem), field=option) from None

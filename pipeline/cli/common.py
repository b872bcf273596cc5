"""What every command shares: --config, settings loading, and errors as one line each."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline import DEFAULT_CONFIG
from pipeline.content.dates import DateProblem, parse_datetime
from pipeline.errors import ExitCode, PipelineError, PipelineErrors, each_problem
from pipeline.faults import as_pipeline_error, debug_from_env

if TYPE_CHECKING:  # settings (and msgspec) load when a command runs, not for --help
    from pipeline.config import Settings

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


DEBUG_KEY = "pipeline.debug"  # in the click context's meta, set by `pipeline --debug`


def debug_requested() -> bool:
    """``pipeline --debug CMD`` or ``PIPELINE_DEBUG=1``: tracebacks for every error."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(DEBUG_KEY)) or debug_from_env()


def report_failure(exc: Exception, settings: Settings | None = None, *, debug: bool = False) -> int:
    """Print ``exc`` the way a user should see it and return the exit status.

    A user's mistake or a routine fault is one line per problem (with its
    traceback too under --debug); anything else is a bug: its traceback, then a
    line that says so.
    """
    error = as_pipeline_error(exc, database_url=settings.database_url if settings is not None else None)
    if error is None:
        traceback.print_exception(exc)
        click.echo(
            f"error: this is a bug in the pipeline, not something you did ({type(exc).__name__}); "
            "please report it with the traceback above",
            err=True,
        )
        return ExitCode.BUG
    if debug:
        traceback.print_exception(exc)
    for problem in error.errors if isinstance(error, PipelineErrors) else [error]:
        click.echo(f"error: {problem}", err=True)
    return error.exit_code


def pass_settings(command: F) -> F:
    """Load settings from --config; any failure leaves as one line and its exit status.

    This wrapper is the CLI's one edge for errors (with ``main`` for what fails
    outside a command): commands raise, they never catch to print.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, config_path: Path, **kwargs: Any) -> Any:
        from pipeline.config import load_settings  # here: `pipeline --help` needs no settings

        settings = None
        try:
            settings = load_settings(config_path)
            return command(settings, *args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors (exit 2), explicit exits, Ctrl-C
        except BrokenPipeError:
            raise  # `pipeline ... | head`: click ends quietly with 1, as for any click program
        except Exception as exc:
            raise click.exceptions.Exit(report_failure(exc, settings, debug=debug_requested())) from None

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

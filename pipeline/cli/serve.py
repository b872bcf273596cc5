"""``pipeline serve``: the web app (subscribe, confirm, unsubscribe, archive, feeds) under uvicorn."""

from __future__ import annotations

import copy
from typing import Any

import click
import uvicorn
import uvicorn.config

from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.web.app import create_app


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the app's own log, with tokens scrubbed from every line."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": "pipeline.web.app.RedactTokens"}}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    config["loggers"]["pipeline"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@click.command("serve")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@pass_settings
def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the subscribe form, confirm and unsubscribe links, the newsletter archive and the feeds.

    Pages and feeds come from the built output (run `pipeline build` first). Run one
    process: the rate limits live in its memory. Behind a reverse proxy on this
    machine, the client address comes from X-Forwarded-For.
    """
    app = create_app(settings)
    click.echo(f"serving {settings.clinic.name} on http://{host}:{port}/ (Ctrl+C to stop)", err=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config(),
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()


COMMANDS = [serve]

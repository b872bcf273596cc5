"""The command line as a newcomer meets it: `pipeline --help` lists every command without
loading any, each command runs with its own module only, and the README documents
every command and subcommand."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli.main import COMMANDS, cli
from tests.conftest import ROOT, make_project


def every_command() -> list[tuple[str, click.Command]]:
    """(``pipeline NAME [SUB]``, the command) for every command and subcommand."""
    found = []
    for name, (module, _help) in COMMANDS.items():
        command = next(c for c in importlib.import_module(module).COMMANDS if c.name == name)
        found.append((f"pipeline {name}", command))
        if isinstance(command, click.Group):
            found += [(f"pipeline {name} {sub}", command.commands[sub]) for sub in sorted(command.commands)]
    return found


def test_the_command_table_says_what_each_command_says_of_itself() -> None:
    for name, (module, summary) in COMMANDS.items():
        commands = {c.name: c for c in importlib.import_module(module).COMMANDS}
        assert name in commands, f"{module} defines no command {name!r}"
        assert commands[name].get_short_help_str(limit=1000) == summary, name
    defined = {c.name for module in {m for m, _ in COMMANDS.values()} for c in importlib.import_module(module).COMMANDS}
    assert defined == set(COMMANDS), "a command module defines a command the table does not list"
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)


# Runs the command line in a fresh interpreter and prints every module it imported.
_PROBE = (
    "import json, sys\n"
    "from pipeline.cli.main import cli\n"
    "try:\n"
    "    cli.main(sys.argv[1:], prog_name='pipeline')\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def modules_loaded_by(*args: str, cwd: Path = ROOT) -> list[str]:
    run = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def test_help_loads_no_command_and_a_command_loads_only_its_own() -> None:
    loaded = modules_loaded_by("--help")
    assert not [m for m in loaded if m.startswith(("pipeline.cli.publish", "pipeline.cli.send", "pipeline.ledger"))]
    assert not [m for m in loaded if m.startswith(("sqlalchemy", "msgspec", "pipeline.config"))]
    loaded = modules_loaded_by("subscribers", "--help")
    assert "pipeline.cli.subscribers" in loaded
    assert not [m for m in loaded if m.startswith(("pipeline.cli.send", "pipeline.cli.publish", "pipeline.site"))]


# Each staff command imports what it uses: these layers (and what they load) stay out.
_NOT_FOR_STAFF_COMMANDS = (
    "pipeline.site.build",
    "pipeline.mail",
    "pipeline.channels.newsletter",
    "pipeline.schedule.release",
    "pipeline.schedule.runner",
    "apscheduler",
    "jinja2",
    "mjml",
    "dkim",
    "dns",
)


@pytest.mark.parametrize(
    "command",
    [("subscribers", "count"), ("subscribers", "list"), ("queue",), ("approve", "no-such-post", "--by", "Dr. Lee")],
)
def test_a_staff_command_loads_neither_the_build_nor_the_send_layer(command: tuple[str, ...], tmp_path: Path) -> None:
    loaded = modules_loaded_by(*command, cwd=make_project(tmp_path))
    assert "pipeline.ledger.store" in loaded  # it did run
    assert [m for m in loaded if m.startswith(_NOT_FOR_STAFF_COMMANDS)] == []


def test_a_build_with_nothing_to_render_loads_no_renderer(tmp_path: Path) -> None:
    """A scheduled or scripted rebuild that finds nothing changed is mostly start-up: it
    reads the cache and loads neither Jinja2, MJML, the snippets nor the process pool."""
    project = make_project(tmp_path)
    first = modules_loaded_by("build", "--now", "2026-11-27T12:00", cwd=project)
    assert "jinja2" in first and "pipeline.channels.newsletter" in first  # the first build rendered
    loaded = modules_loaded_by("build", "--now", "2026-11-27T12:00", cwd=project)
    assert "pipeline.site.build" in loaded  # it did run
    renderers = ("jinja2", "mjml", "css_inline", "twitter_text", "pipeline.channels.", "multiprocessing")
    # mentions: the warning for each handle the clinic has not confirmed, printed by every build
    assert [m for m in loaded if m.startswith(renderers) and not m.startswith("pipeline.channels.social")] == []
    assert [m for m in loaded if m.startswith("pipeline.channels.social.")] == ["pipeline.channels.social.mentions"]


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [spelled for spelled, _command in every_command() if spelled not in readme]
    assert missing == [], "document these in README.md"

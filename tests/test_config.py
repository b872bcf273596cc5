"""pipeline.toml: every bad setting reported with its line, all at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import PipelineErrors


def edit(config: Path, *replacements: tuple[str, str]) -> None:
    text = config.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")


def line_of(config: Path, start: str) -> int:
    return next(n for n, line in enumerate(config.read_text().splitlines(), start=1) if line.startswith(start))


def test_every_address_setting_must_be_an_email_address(project: Path) -> None:
    config = project / "pipeline.toml"
    edit(
        config,
        ('from_address = "news@jamesonprosthetics.com"', 'from_address = "not-an-address"'),
        ('reply_to = "jamesonprosthetics@gmail.com"', 'reply_to = "Front desk <desk@jamesonprosthetics.com>"'),
        ('email = "jamesonprosthetics@gmail.com"', 'email = "jamesonprosthetics@gmail"'),
        ("[delivery]\n", '[delivery]\nenvelope_from = "bounces@@jamesonprosthetics.com"\n'),
    )
    with pytest.raises(PipelineErrors) as info:
        load_settings(config)
    problems = {error.field: error for error in info.value.errors}
    assert sorted(problems) == [
        "clinic.email",
        "delivery.envelope_from",
        "newsletter.from_address",
        "newsletter.reply_to",
    ]
    assert problems["newsletter.from_address"].line == line_of(config, "from_address")
    assert problems["newsletter.reply_to"].line == line_of(config, "reply_to")
    assert problems["clinic.email"].line == line_of(config, "email =")
    for error in problems.values():
        text = str(error)
        assert "\n" not in text and "is not an e-mail address" in text and "news@example.org" in text, text
    assert "'not-an-address' is not an e-mail address: An email address must have an @-sign." in str(
        problems["newsletter.from_address"]
    )


def test_bad_from_address_stops_a_command_with_one_line(project: Path) -> None:
    config = project / "pipeline.toml"
    edit(config, ('from_address = "news@jamesonprosthetics.com"', 'from_address = "not-an-address"'))
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 3 and "Traceback" not in run.stderr  # 3: a configuration error
    line = line_of(config, "from_address")
    assert run.stderr.splitlines() == [
        f"error: {config.name}:{line}: newsletter.from_address: 'not-an-address' is not an e-mail address: "
        "An email address must have an @-sign. (write a bare address such as news@example.org)"
    ]


def test_addresses_are_checked_without_dns(project: Path) -> None:
    """A domain with no DNS records passes: config checks syntax only, and never waits on the network."""
    config = project / "pipeline.toml"
    edit(config, ('from_address = "news@jamesonprosthetics.com"', 'from_address = "news@no-dns-records-0k2x9.org"'))
    assert load_settings(config).newsletter.from_address == "news@no-dns-records-0k2x9.org"
    assert load_settings(project / "pipeline.toml").newsletter.reply_to == "jamesonprosthetics@gmail.com"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://jamesonprosthetics.com/book", True),
        ("mailto:jamesonprosthetics@gmail.com", True),
        ("tel:+18439361642", True),
        ("/contact", False),
        ("jamesonprosthetics.com/book", False),
        ("javascript:alert(1)", False),
    ],
)
def test_contact_url_is_a_full_address(project: Path, value: str, ok: bool) -> None:
    config = project / "pipeline.toml"
    edit(config, ('phone = "843 936 1642"\n', f'phone = "843 936 1642"\ncontact_url = "{value}"\n'))
    if ok:
        settings = load_settings(config)
        assert settings.clinic.contact_url == settings.clinic.contact_link == value
        return
    with pytest.raises(PipelineErrors) as info:
        load_settings(config)
    [error] = info.value.errors
    assert (error.field, error.line) == ("clinic.contact_url", line_of(config, "contact_url"))
    assert "is not a full address" in str(error)


def test_without_contact_url_the_contact_link_is_an_email_to_the_clinic(project: Path) -> None:
    settings = load_settings(project / "pipeline.toml")
    assert settings.clinic.contact_url is None
    assert settings.clinic.contact_link == "mailto:jamesonprosthetics@gmail.com"


def test_every_kind_of_bad_setting_is_reported_at_once_in_plain_words(project: Path) -> None:
    """A typo, a value out of range, a wrong kind of value, a missing table and a bad
    nested table are all reported by one load, each on its own line, in staff's words."""
    config = project / "pipeline.toml"
    edit(
        config,
        ("max_items = 20", "max_items = 0\nmax_itmes = 3"),
        ("concurrency = 4", 'concurrency = "four"'),
        ("rescan_seconds = 30", "rescan_seconds = -1"),
        ('author = "Jameson Prosthetics"', "author = true"),
        ("[delivery]\n", "[delivery]\ndkim_key = 3\n"),
    )
    text = config.read_text(encoding="utf-8")
    start = text.index("[social.handles.threads]")
    config.write_text(text[:start] + "[social.handles.threads]\nhandel = 'x'\n" + text[start:].split("\n", 2)[2])
    with pytest.raises(PipelineErrors) as info:
        load_settings(config)
    problems = {error.field: str(error).removeprefix(f"{config.parent}/") for error in info.value.errors}
    assert problems == {
        "feed.max_itmes": f"pipeline.toml:{line_of(config, 'max_itmes')}: feed.max_itmes: unknown setting"
        " (did you mean 'max_items'?)",
        "feed.max_items": f"pipeline.toml:{line_of(config, 'max_items')}: feed.max_items: "
        "expected a whole number >= 1, got 0",
        "feed.author": f"pipeline.toml:{line_of(config, 'author = true')}: feed.author: "
        "expected text in quotes, got True",
        "delivery.dkim_key": f"pipeline.toml:{line_of(config, 'dkim_key = 3')}: delivery.dkim_key: "
        "expected a file path in quotes, got 3",
        "delivery.concurrency": f"pipeline.toml:{line_of(config, 'concurrency')}: delivery.concurrency: "
        "expected a whole number, got 'four'",
        "scheduler.rescan_seconds": f"pipeline.toml:{line_of(config, 'rescan_seconds')}: scheduler.rescan_seconds: "
        "expected a number > 0.0, got -1",
        "social.handles.threads.handel": f"pipeline.toml:{line_of(config, 'handel')}: social.handles.threads.handel: "
        "unknown setting (did you mean 'handle'?)",
        "social.handles.threads.handle": f"pipeline.toml:{line_of(config, '[social.handles.threads]')}: "
        "social.handles.threads.handle: required setting is missing",
    }

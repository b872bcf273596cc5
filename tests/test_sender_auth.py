"""Sender authentication: `pipeline dkim init` makes the key and says what to publish;
`pipeline doctor --dns` looks the records up, here in a real DNS server on 127.0.0.1."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.message import MessageTemplate
from tests.conftest import ROOT, make_project
from tests.dns_server import dns_server


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--config", str(project / "pipeline.toml")],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )


def txt(value: str) -> str:
    """A TXT record's zone text: strings of at most 255 characters."""
    return " ".join('"' + value[i : i + 255] + '"' for i in range(0, len(value), 255))


def relay_project(tmp_path: Path) -> Path:
    project = make_project(tmp_path, posts=ROOT / "tests" / "golden" / "basic" / "posts")
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text().replace(
            'transport = "outbox:state/outbox"', 'transport = "smtp://smtp.relay.example:587?tls=starttls"'
        )
    )
    return project


def test_dkim_init_makes_a_private_key_sets_the_config_and_prints_the_records(tmp_path: Path) -> None:
    project = relay_project(tmp_path)
    before = (project / "pipeline.toml").read_text()
    result = run(project, "dkim", "init", "--selector", "news2027")
    assert result.returncode == 0, result.stderr

    key = project / "state" / "dkim.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    config = (project / "pipeline.toml").read_text()
    assert 'dkim_key = "state/dkim.pem"' in config and 'dkim_selector = "news2027"' in config
    # The two commented-out examples became the settings; every other line stays.
    changed = [(a, b) for a, b in zip(before.splitlines(), config.splitlines(), strict=True) if a != b]
    assert changed == [
        ('# dkim_key = "state/dkim.pem"', 'dkim_key = "state/dkim.pem"'),
        ('# dkim_selector = "news"', 'dkim_selector = "news2027"'),
    ]
    tomllib.loads(config)

    settings = load_settings(project / "pipeline.toml")
    signer = DkimSigner.from_settings(settings)
    assert signer is not None and signer.selector == "news2027" and signer.domain == "jamesonprosthetics.com"
    assert signer._params["modulus"].bit_length() == 2048
    # The printed DKIM record is this key's, ready to paste as a zone line.
    out = result.stdout
    assert "news2027._domainkey.jamesonprosthetics.com. 3600 IN TXT " in out
    published = "".join(
        piece for line in out.splitlines() if line.startswith("news2027._domainkey.") for piece in line.split('"')[1::2]
    )
    assert published == signer.dns_record()
    assert 'jamesonprosthetics.com. 3600 IN TXT "v=spf1 mx a:smtp.relay.example ~all"' in out
    assert (
        '_dmarc.jamesonprosthetics.com. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@jamesonprosthetics.com'
        in out
    )

    # A message signed with it verifies against the record it printed.
    from tests.smtp_server import sample_newsletter

    template = MessageTemplate(sample_newsletter(settings), settings, signer=signer)
    assert signer.verify(template.preview())

    # Run again: the key is kept, not silently replaced.
    again = run(project, "dkim", "init")
    assert again.returncode != 0 and "already there" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr


def zone_for(
    signer: DkimSigner, *, spf: str = "v=spf1 mx a:smtp.relay.example ~all"
) -> dict[tuple[str, str], list[str]]:
    return {
        (signer.dns_name, "TXT"): [txt(signer.dns_record())],
        ("jamesonprosthetics.com", "TXT"): [txt(spf), txt("google-site-verification=abc")],
        ("_dmarc.jamesonprosthetics.com", "TXT"): [
            txt("v=DMARC1; p=none; rua=mailto:dmarc-reports@jamesonprosthetics.com")
        ],
        ("smtp.relay.example", "A"): ["192.0.2.25"],
    }


@pytest.fixture
def signed_project(tmp_path: Path) -> tuple[Path, DkimSigner]:
    project = relay_project(tmp_path)
    assert run(project, "dkim", "init").returncode == 0
    signer = DkimSigner.from_settings(load_settings(project / "pipeline.toml"))
    assert signer is not None
    return project, signer


def test_doctor_dns_passes_when_every_record_is_published(signed_project: tuple[Path, DkimSigner]) -> None:
    project, signer = signed_project
    with dns_server(zone_for(signer)) as (address, records):
        result = run(project, "doctor", "--dns", "--nameserver", address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: DKIM: news._domainkey.jamesonprosthetics.com holds the configured key" in result.stdout
    assert "ok: SPF: jamesonprosthetics.com: v=spf1 mx a:smtp.relay.example ~all names the relay" in result.stdout
    assert "ok: DMARC: _dmarc.jamesonprosthetics.com: p=none (monitoring only" in result.stdout
    assert "no problems found in the DNS records" in result.stdout
    assert ("news._domainkey.jamesonprosthetics.com.", "TXT") in records.asked


def test_doctor_dns_says_what_is_missing_or_wrong_in_words(signed_project: tuple[Path, DkimSigner]) -> None:
    project, signer = signed_project
    zone = zone_for(signer, spf="v=spf1 mx -all")
    del zone[("_dmarc.jamesonprosthetics.com", "TXT")]
    # A record holding another key than ours.
    from pipeline.mail.dkim_keys import make_key

    stranger = DkimSigner(make_key(), "news", "jamesonprosthetics.com")
    zone[(signer.dns_name, "TXT")] = [txt(stranger.dns_record())]
    with dns_server(zone) as (address, _records):
        result = run(project, "doctor", "--dns", "--nameserver", address)
    assert result.returncode == 1
    out = result.stdout
    assert "problem: DKIM: the DKIM record at news._domainkey.jamesonprosthetics.com holds another key" in out
    assert "problem: SPF: jamesonprosthetics.com: v=spf1 mx -all does not allow the relay smtp.relay.example" in out
    assert "problem: DMARC: _dmarc.jamesonprosthetics.com does not exist in DNS (NXDOMAIN)" in out
    assert '_dmarc.jamesonprosthetics.com. 3600 IN TXT "v=DMARC1; p=none;' in out  # what to publish instead
    assert "Traceback" not in result.stderr


def test_doctor_dns_reports_a_timeout_in_words(signed_project: tuple[Path, DkimSigner]) -> None:
    project, signer = signed_project
    zone = zone_for(signer)
    with dns_server(zone, silent={signer.dns_name}) as (address, _records):
        result = run(project, "doctor", "--dns", "--nameserver", address, "--dns-timeout", "1")
    assert result.returncode == 1
    assert "problem: DKIM: no answer about news._domainkey.jamesonprosthetics.com within" in result.stdout
    assert "(the DNS server timed out)" in result.stdout
    assert "ok: SPF" in result.stdout and "ok: DMARC" in result.stdout


def test_doctor_offline_says_which_records_it_did_not_check(tmp_path: Path) -> None:
    project = make_project(tmp_path, posts=ROOT / "tests" / "golden" / "basic" / "posts")
    result = run(project, "doctor", "botox-for-residual-and-phantom-limb-pain")
    assert "note: not checked (offline): the DKIM record at (no DKIM selector set)" in result.stdout
    assert "_dmarc.jamesonprosthetics.com" in result.stdout and "pipeline doctor --dns" in result.stdout
    nothing = run(project, "doctor")
    assert nothing.returncode == 2 or nothing.returncode == 1
    assert "pipeline doctor --dns" in nothing.stderr and "Traceback" not in nothing.stderr

"""SpamAssassin 4 (Debian's package, local tests only: -L, no network) scores the Botox
newsletter as a subscriber's server receives it: sent by the real send loop over SMTP,
DKIM-signed with a key made by `pipeline dkim init`. The score must be 0 or below.

Skipped where SpamAssassin is not installed, unless REQUIRE_SPAMASSASSIN=1 (CI), where
its absence is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from tests.conftest import ROOT
from tests.smtp_server import SECRET, delivery_project, smtp_server

SLUG = "botox-for-residual-and-phantom-limb-pain"
REQUIRE_ENV = "REQUIRE_SPAMASSASSIN"
REPORT = ROOT / "test-artifacts" / "spamassassin-botox.txt"


def spamassassin() -> str:
    found = shutil.which("spamassassin")
    if found:
        return found
    reason = "spamassassin is not installed (Debian package spamassassin)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--config", str(project / "pipeline.toml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), SECRET_ENV: SECRET},
        timeout=120,
    )


def test_spamassassin_scores_the_botox_newsletter_as_sent_at_zero_or_below(tmp_path: Path) -> None:
    program = spamassassin()
    (tmp_path / "project").mkdir()
    settings = delivery_project(tmp_path / "project")
    project = settings.root
    assert cli(project, "dkim", "init").returncode == 0
    with Store.open(settings) as store:
        store.add_subscriber("ann.reader@example.com", "Ann Reader", "active")
    with smtp_server() as (server, spec):
        sent = cli(project, "send", SLUG, "--yes", "--transport", spec)
        assert sent.returncode == 0, sent.stderr
    (message,) = server.messages
    assert message.data.startswith(b"DKIM-Signature: ")
    # As the receiving server stores it: the envelope sender (VERP) in Return-Path.
    delivered = f"Return-Path: <{message.mail_from}>\r\n".encode() + message.data
    home = tmp_path / "home"  # SpamAssassin writes its user preferences here, not in the real home
    home.mkdir()
    result = subprocess.run(
        [program, "-L", "-t"],
        input=delivered,
        capture_output=True,
        env={**os.environ, "HOME": str(home)},
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    output = result.stdout.decode("utf-8", "replace")
    status = re.search(
        r"X-Spam-Status: (Yes|No), score=(-?\d+(?:\.\d+)?) required=[\d.]+ tests=([^\n]*(?:\n\t[^\n]*)*)", output
    )
    assert status, output[:2000]
    report = output[output.find("Content analysis details") :].split("\n\n\n")[0]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report + "\n", encoding="utf-8")
    score = float(status.group(2))
    assert status.group(1) == "No" and score <= 0, report

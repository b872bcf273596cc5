"""Bounces and complaints that come back later: real DSNs (RFC 3464, and Gmail's and
Microsoft's) and a feedback report (RFC 5965) about messages the real send loop sent
to a real SMTP server, delivered to a local Maildir and through a real IMAP server
(Dovecot), read by `pipeline bounces process`."""

from __future__ import annotations

import imaplib
import mailbox
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from string import Template

import pytest

from pipeline.config import Settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV
from pipeline.mail.bounce_mailbox import IMAP_PASSWORD_ENV, MaildirBox, process_mailbox
from pipeline.mail.sender import deliver, start_campaign
from pipeline.mail.transports import transport_from_spec
from tests.conftest import ROOT
from tests.imap_server import Unavailable, imap_server
from tests.smtp_server import SECRET, Received, add_subscribers, delivery_project, sample_newsletter, smtp_server

pytestmark = pytest.mark.usefixtures("each_ledger")
REPORTS = ROOT / "tests" / "data" / "reports"
REQUIRE_IMAP = "REQUIRE_IMAP"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@dataclass
class Sent:
    settings: Settings
    campaign_id: int
    messages: dict[str, Received]  # by recipient


def send_campaign(tmp_path: Path, count: int = 6) -> Sent:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store, smtp_server() as (server, spec):
        add_subscribers(store, count)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        assert deliver(store, settings, transport_from_spec(spec, settings), campaign_id).sent == count
    return Sent(settings, campaign_id, {m.rcpt_to: m for m in server.messages})


def report(
    name: str,
    sent: Received,
    *,
    date: datetime,
    envelope_sender: str | None = None,
    recipient: str | None = None,
    number: int = 0,
) -> bytes:
    """A report from tests/data/reports/, about one message the send loop sent."""
    original = sent.data.replace(b"\r\n", b"\n").decode("utf-8")
    headers = original.split("\n\n", 1)[0]
    parsed = sent.parsed()
    text = Template(REPORTS.joinpath(name).read_text()).substitute(
        date=format_datetime(date),
        report_id=f"r{number}.{date.timestamp():.0f}",
        envelope_sender=envelope_sender or sent.mail_from,
        recipient=recipient or sent.rcpt_to,
        original_message_id=parsed["Message-ID"],
        subject=parsed["Subject"],
        original_headers=headers,
        original_message=original,
    )
    return text.encode("utf-8")


def bounce_maildir(tmp_path: Path, messages: list[bytes]) -> Path:
    """A Maildir with these messages in new/, as a mail server delivers them."""
    path = tmp_path / "bounce-mailbox"
    box = mailbox.Maildir(path, create=True)
    for data in messages:
        box.add(data)
    return path


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--config", str(settings.root / "pipeline.toml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), SECRET_ENV: SECRET, **(env or {})},
        timeout=120,
    )


def statuses(
    settings: Settings, campaign_id: int
) -> tuple[dict[str, str], dict[str, tuple[str, str | None, datetime | None]]]:
    """(delivery status by address, (status, reason, date) by address)."""
    with Store.open(settings) as store:
        people = {s.id: s for s in store.iter_subscribers()}
        with store.engine.connect() as conn:
            from pipeline.ledger.schema import deliveries

            rows = conn.execute(deliveries.select().where(deliveries.c.campaign_id == campaign_id)).all()
    by_delivery = {people[r.subscriber_id].email: r.status for r in rows}
    by_subscriber = {s.email: (s.status, s.status_reason, s.status_changed_at) for s in people.values()}
    return by_delivery, by_subscriber


# --- permanent failures -------------------------------------------------------------------


def test_permanent_dsns_bounce_the_delivery_and_the_subscriber(tmp_path: Path) -> None:
    sent = send_campaign(tmp_path)
    s = sent.settings
    rfc, gmail, microsoft, fine = sorted(sent.messages)[:4]
    day = datetime(2026, 11, 30, 15, 4, 5, tzinfo=UTC)
    mailbox_path = bounce_maildir(
        tmp_path,
        [
            report("rfc3464-permanent.eml", sent.messages[rfc], date=day, number=1),
            report("gmail.eml", sent.messages[gmail], date=day + timedelta(hours=1), number=2),
            # The relay rewrote the envelope sender: no token, only the Message-ID quoted in
            # the returned headers and the address, which must be that subscriber's.
            report(
                "microsoft.eml",
                sent.messages[microsoft],
                date=day + timedelta(hours=2),
                envelope_sender="bounces@jamesonprosthetics.com",
                number=3,
            ),
        ],
    )
    result = cli(s, "bounces", "process", "--maildir", str(mailbox_path))
    assert result.returncode == 0, result.stderr
    assert "3 message(s) read" in result.stdout and "3 bounced" in result.stdout and "0 kept" in result.stdout

    deliveries, subscribers = statuses(s, sent.campaign_id)
    for address in (rfc, gmail, microsoft):
        assert deliveries[address] == "bounced"
        assert subscribers[address][0] == "bounced"
    assert deliveries[fine] == "sent" and subscribers[fine][0] == "active"
    assert subscribers[rfc][1] == f"550 5.1.1 <{rfc}>... User unknown"
    assert subscribers[rfc][2] == day
    assert (
        subscribers[gmail][1] is not None
        and "5.1.1" in subscribers[gmail][1]
        and "does not exist" in subscribers[gmail][1]
    )
    assert (
        subscribers[microsoft][1]
        == "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )

    # Read reports are marked seen (moved to cur/ with the S flag); a second run records nothing.
    assert not os.listdir(mailbox_path / "new") and all(
        name.endswith(":2,S") for name in os.listdir(mailbox_path / "cur")
    )
    again = cli(s, "bounces", "process", "--maildir", str(mailbox_path))
    assert again.returncode == 0 and "0 message(s) read" in again.stdout

    # The CLI and its list show the reason and the date.
    listed = cli(s, "subscribers", "list", "--status", "bounced")
    lines = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert set(lines) == {rfc, gmail, microsoft}
    assert lines[rfc][4] == "2026-11-30T15:04:05Z" and lines[rfc][5] == f"550 5.1.1 <{rfc}>... User unknown"


def test_a_policy_refusal_fails_the_delivery_and_leaves_the_subscriber(tmp_path: Path) -> None:
    """5.7.1 is about us or the message (DESIGN.md invariant 9), even worded "rejected"."""
    sent = send_campaign(tmp_path, count=2)
    address = sorted(sent.messages)[0]
    data = report("rfc3464-permanent.eml", sent.messages[address], date=datetime(2026, 11, 30, tzinfo=UTC))
    data = data.replace(b"Status: 5.1.1", b"Status: 5.7.1").replace(
        b"Diagnostic-Code: SMTP; 550 5.1.1", b"Diagnostic-Code: SMTP; 550 5.7.1 Recipient address rejected: spam, and"
    )
    with Store.open(sent.settings) as store:
        result = process_mailbox(
            store, sent.settings, MaildirBox(bounce_maildir(tmp_path, [data])), secret=SECRET.encode()
        )
    assert result.outcomes == {"failed": 1}
    deliveries, subscribers = statuses(sent.settings, sent.campaign_id)
    assert deliveries[address] == "failed" and subscribers[address][0] == "active"


# --- temporary failures -------------------------------------------------------------------


def test_three_temporary_failures_within_30_days_bounce_the_address(tmp_path: Path) -> None:
    sent = send_campaign(tmp_path, count=3)
    s = sent.settings
    often, seldom, once = sorted(sent.messages)
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    messages = [
        # Three within 30 days: bounced at the third.
        report("rfc3464-delayed.eml", sent.messages[often], date=start, number=1),
        report("rfc3464-delayed.eml", sent.messages[often], date=start + timedelta(days=9), number=2),
        # RFC 3464's first example: "failed" after days of a temporary fault (4.0.0) is temporary too.
        report("rfc3464-permanent.eml", sent.messages[often], date=start + timedelta(days=29), number=3)
        .replace(b"Status: 5.1.1", b"Status: 4.0.0")
        .replace(b"Diagnostic-Code: SMTP; 550 5.1.1", b"Diagnostic-Code: smtp; 426 connection timed out,"),
        # Three, but 40 days apart: counted, never bounced.
        report("rfc3464-delayed.eml", sent.messages[seldom], date=start, number=4),
        report("rfc3464-delayed.eml", sent.messages[seldom], date=start + timedelta(days=40), number=5),
        report("rfc3464-delayed.eml", sent.messages[seldom], date=start + timedelta(days=80), number=6),
        report("rfc3464-delayed.eml", sent.messages[once], date=start, number=7),
    ]
    with Store.open(s) as store:
        result = process_mailbox(store, s, MaildirBox(bounce_maildir(tmp_path, messages)), secret=SECRET.encode())
    assert result.outcomes == {"counted": 6, "bounced": 1} and not result.kept
    deliveries, subscribers = statuses(s, sent.campaign_id)
    assert subscribers[often][0] == "bounced"
    assert subscribers[often][1] is not None and subscribers[often][1].startswith("3 temporary failures within 30 days")
    assert subscribers[seldom][0] == "active" and subscribers[once][0] == "active"
    assert deliveries[often] == "sent"  # a temporary failure is not this delivery's end
    with Store.open(s) as store:
        seldom_id = next(x.id for x in store.iter_subscribers() if x.email == seldom)
        assert [e.kind for e in store.bounce_events_of(seldom_id)] == ["temporary"] * 3


def test_temporary_failures_bounce_the_address_whatever_order_the_mailbox_lists_them(tmp_path: Path) -> None:
    """A Maildir lists reports by file name, not by date (Python's and Dovecot's names carry
    unpadded microseconds): the newest report read first must still count."""
    sent = send_campaign(tmp_path, count=1)
    s = sent.settings
    (address,) = sent.messages
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    newest_first = [
        report("rfc3464-delayed.eml", sent.messages[address], date=start + timedelta(days=days), number=number)
        for number, days in enumerate((29, 9, 0), start=1)
    ]
    box = tmp_path / "bounce-mailbox"
    for folder in ("new", "cur", "tmp"):
        (box / folder).mkdir(parents=True)
    for position, data in enumerate(newest_first):
        (box / "new" / f"{position}.report").write_bytes(data)  # read in this order: 29, 9, 0 days
    with Store.open(s) as store:
        result = process_mailbox(store, s, MaildirBox(box), secret=SECRET.encode())
    assert result.outcomes == {"counted": 2, "bounced": 1}
    _deliveries, subscribers = statuses(s, sent.campaign_id)
    assert subscribers[address][0] == "bounced"
    assert subscribers[address][1] is not None and subscribers[address][1].startswith(
        "3 temporary failures within 30 days"
    )


# --- complaints ---------------------------------------------------------------------------


def test_a_feedback_report_marks_the_subscriber_complained_and_they_get_no_more_mail(tmp_path: Path) -> None:
    sent = send_campaign(tmp_path, count=3)
    s = sent.settings
    address = sorted(sent.messages)[1]
    original = sent.messages[address]
    # Providers redact the recipient in the returned copy; the envelope sender still names the delivery.
    redacted = Received(
        original.mail_from, original.rcpt_to, re.sub(rb"(?m)^To: .*\r\n", b"To: redacted\r\n", original.data)
    )
    data = report(
        "rfc5965-arf.eml", redacted, date=datetime(2026, 11, 30, 9, tzinfo=UTC), recipient="redacted@example.com"
    )
    result = cli(s, "bounces", "process", "--maildir", str(bounce_maildir(tmp_path, [data])))
    assert result.returncode == 0 and "1 complained" in result.stdout, result.stdout + result.stderr
    _deliveries, subscribers = statuses(s, sent.campaign_id)
    assert subscribers[address][0] == "complained"
    assert subscribers[address][1] == "marked the newsletter as abuse (dns; mail.example.com)"

    with Store.open(s) as store:
        rates = store.campaign_rates(sent.campaign_id)
        assert (rates.attempted, rates.complained) == (3, 1)
        # The next newsletter goes to the others only.
        from pipeline.channels.newsletter import render_digest
        from pipeline.channels.templating import make_environment
        from pipeline.site.build import load_posts

        posts, _errors = load_posts(s)
        digest = render_digest(posts, s, make_environment(s), now=datetime(2026, 12, 1, tzinfo=UTC))
        with smtp_server() as (server, spec):
            second = start_campaign(store, s, digest)
            deliver(store, s, transport_from_spec(spec, s), second)
        assert address not in {m.rcpt_to for m in server.messages} and len(server.messages) == 2


# --- what cannot be read --------------------------------------------------------------------


def test_messages_that_cannot_be_read_are_kept_and_listed(tmp_path: Path) -> None:
    sent = send_campaign(tmp_path, count=2)
    s = sent.settings
    address = sorted(sent.messages)[0]
    day = datetime(2026, 11, 30, tzinfo=UTC)
    forged = report(
        "rfc3464-permanent.eml",
        sent.messages[address],
        date=day,
        envelope_sender="bounces+v2.forged.token@jamesonprosthetics.com",
    )
    forged = re.sub(rb"Message-ID: <c\d+\.s\d+@", b"Message-ID: <other@", forged, flags=re.IGNORECASE)
    unreadable = [
        b"From: ann@example.com\nTo: bounces@jamesonprosthetics.com\nSubject: Out of office\n\nBack on Monday.\n",
        b"\x00\xff not mail at all \xfe",
        forged,
    ]
    path = bounce_maildir(tmp_path, unreadable)
    before = {name: (path / "new" / name).read_bytes() for name in os.listdir(path / "new")}
    for _ in range(2):  # listed every time, changed never
        result = cli(s, "bounces", "process", "--maildir", str(path))
        assert result.returncode == 0 and "3 kept unread" in result.stdout
        kept = [line for line in result.stderr.splitlines() if line.startswith("kept: new/")]
        assert len(kept) == 3
        assert any(
            'not a delivery status notification or feedback report (text/plain, subject "Out of office")' in k
            for k in kept
        )
        assert any("names none of our deliveries" in k for k in kept)
        assert {name: (path / "new" / name).read_bytes() for name in os.listdir(path / "new")} == before
    _deliveries, subscribers = statuses(s, sent.campaign_id)
    assert subscribers[address][0] == "active"
    missing = cli(s, "bounces", "process", "--maildir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "is not a Maildir" in missing.stderr and "Traceback" not in missing.stderr


# --- through IMAP ---------------------------------------------------------------------------


def test_reports_through_a_real_imap_server(tmp_path: Path) -> None:
    try:
        server_cm = imap_server()
        server = server_cm.__enter__()
    except Unavailable as why:
        if os.environ.get(REQUIRE_IMAP) == "1":
            pytest.fail(f"{REQUIRE_IMAP}=1 but the IMAP server cannot run: {why}")
        pytest.skip(f"IMAP variant: {why}")
    try:
        (tmp_path / "project").mkdir()
        sent = send_campaign(tmp_path / "project", count=3)
        s = sent.settings
        bounced, complained, _fine = sorted(sent.messages)
        day = datetime(2026, 11, 30, tzinfo=UTC)
        client = imaplib.IMAP4(server.host, server.port, timeout=10)
        client.login(server.user, server.password)
        for data in (
            report("gmail.eml", sent.messages[bounced], date=day),
            report("rfc5965-arf.eml", sent.messages[complained], date=day),
            b"From: ann@example.com\r\nSubject: Thanks!\r\n\r\nGreat article.\r\n",
        ):
            assert client.append("INBOX", None, None, data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))[0] == "OK"
        client.logout()

        refused = cli(s, "bounces", "process", "--imap", server.url(), env={IMAP_PASSWORD_ENV: "wrong"})
        assert refused.returncode == 6 and "refused" in refused.stderr and "Traceback" not in refused.stderr

        result = cli(s, "bounces", "process", "--imap", server.url(), env={IMAP_PASSWORD_ENV: server.password})
        assert result.returncode == 0, result.stderr
        assert "3 message(s) read" in result.stdout and "1 bounced" in result.stdout and "1 complained" in result.stdout
        assert "1 kept unread" in result.stdout and "not a delivery status notification" in result.stderr
        _deliveries, subscribers = statuses(s, sent.campaign_id)
        assert subscribers[bounced][0] == "bounced" and subscribers[complained][0] == "complained"

        # What was read is \Seen; what was kept is still unread, and still there.
        client = imaplib.IMAP4(server.host, server.port, timeout=10)
        client.login(server.user, server.password)
        client.select("INBOX")
        assert client.search(None, "ALL")[1][0].split() == [b"1", b"2", b"3"]
        assert client.search(None, "UNSEEN")[1][0].split() == [b"3"]
        client.logout()
        again = cli(s, "bounces", "process", "--imap", server.url(), env={IMAP_PASSWORD_ENV: server.password})
        assert "1 message(s) read" in again.stdout and "1 kept unread" in again.stdout
    finally:
        server_cm.__exit__(None, None, None)


# --- the scheduler reads the mailbox -----------------------------------------------------------


def test_the_scheduler_reads_the_bounce_mailbox_every_poll_seconds(tmp_path: Path) -> None:
    from tests.test_scheduler import Scheduler, wait_until

    sent = send_campaign(tmp_path, count=2)
    s = sent.settings
    address = sorted(sent.messages)[0]
    path = bounce_maildir(tmp_path, [])
    config = s.root / "pipeline.toml"
    config.write_text(
        config.read_text().replace("[bounces]\n", f'[bounces]\nmaildir = "{path}"\npoll_seconds = 0.5\n', 1)
    )
    scheduler = Scheduler(s.root)
    try:
        scheduler.wait_for("scheduler running", timeout=60)
        # Delivered while the scheduler runs: read within a poll or two.
        mailbox.Maildir(path).add(report("gmail.eml", sent.messages[address], date=datetime(2026, 11, 30, tzinfo=UTC)))
        wait_until(lambda: statuses(s, sent.campaign_id)[1][address][0] == "bounced", 30, "the bounce to be recorded")
        scheduler.wait_for(r"bounces: 1 message\(s\) read from Maildir .*: 1 bounced", timeout=10)
        assert statuses(s, sent.campaign_id)[0][address] == "bounced"
        assert scheduler.stop() == 0
    finally:
        if scheduler.process.poll() is None:
            scheduler.kill()


# --- rates: the send summary and the desk -------------------------------------------------------


def test_the_send_summary_and_the_desk_show_bounce_and_complaint_rates_with_warnings(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from pipeline.web.app import create_app
    from tests.smtp_server import Behaviour
    from tests.test_desk import sign_in

    settings = delivery_project(tmp_path)
    with Store.open(settings) as store:
        emails = add_subscribers(store, 40)
        admin = store.add_staff(
            "admin@clinic.example", "Admin Person", "admin", "correct horse battery staple", now=datetime.now(UTC)
        )
    # Two of forty refused at once (5%: over the 2% warning).
    with smtp_server(Behaviour(reject={emails[3], emails[7]})) as (server, spec):
        result = cli(settings, "send", "botox-for-residual-and-phantom-limb-pain", "--yes", "--transport", spec)
    assert result.returncode == 1  # some bounced
    said = " ".join(result.stderr.split())
    assert "botox-for-residual-and-phantom-limb-pain: bounce rate 5.0% (2 of 40), complaint rate 0.00% (0)" in said
    assert (
        "warning: botox-for-residual-and-phantom-limb-pain: 5.0% of this campaign's messages bounced, over 2%" in said
    )

    # One complaint later (2.5%: over the 0.1% warning), read from the mailbox.
    complainer = next(m for m in server.messages if m.rcpt_to == emails[10])
    data = report("rfc5965-arf.eml", complainer, date=datetime(2026, 11, 30, 9, tzinfo=UTC))
    assert (
        "1 complained" in cli(settings, "bounces", "process", "--maildir", str(bounce_maildir(tmp_path, [data]))).stdout
    )

    with TestClient(create_app(settings), base_url="https://testserver") as client:
        assert sign_in(client, admin.email, "correct horse battery staple").status_code == 303
        page = " ".join(client.get("/desk/campaigns").text.split())
        assert "Bounce rate 5.0% (2 of 40), complaint rate 2.50% (1 marked it as spam)." in page
        assert "5.0% of this campaign&#39;s messages bounced, over 2%" in page
        assert "2.50% of this campaign&#39;s readers marked it as spam, over 0.1%" in page
        people = " ".join(client.get("/desk/subscribers").text.split())
        assert "Recently bounced or complained" in people
        assert f"<td>{emails[10]}</td><td>complained</td><td>Mon Nov 30, 2026 4:00 AM EST" in people
        assert "marked the newsletter as abuse (dns; mail.example.com)" in people
        assert f"<td>{emails[3]}</td><td>bounced</td>" in people and "refused: 550 5.1.1" in people
        found = " ".join(client.get("/desk/subscribers", params={"q": emails[10]}).text.split())
        assert "marked the newsletter as abuse (dns; mail.example.com) (Mon Nov 30, 2026 4:00 AM EST" in found

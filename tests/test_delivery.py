"""Sending for real: a real aiosmtpd server on 127.0.0.1, a real SQLite ledger,
a real subprocess killed with SIGKILL. Retry delays are tiny, never slept on."""

from __future__ import annotations

import email.policy
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from email import message_from_bytes
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import urls
from pipeline.cli.send import doctor_command, send_command, send_test_command
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV, read_token
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.doctor import check_message, diagnose, sample_message
from pipeline.mail.message import from_wire, to_wire
from pipeline.mail.sender import DeliveryAborted, deliver, max_in_flight, send_test, start_campaign
from pipeline.mail.transports import OutboxTransport, SmtpTransport, TransportError, transport_from_spec
from tests.smtp_server import (
    SECRET,
    Behaviour,
    add_subscribers,
    delivery_project,
    free_port,
    sample_newsletter,
    smtp_server,
)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def test_normal_send_to_200_subscribers(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store, smtp_server() as (server, spec):
        emails = add_subscribers(store, 200)
        newsletter = sample_newsletter(settings)
        campaign_id = start_campaign(store, settings, newsletter)
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)

        assert summary.ok and summary.sent == 200 and summary.campaigns[0].finished
        assert server.by_recipient() == Counter({e: 1 for e in emails})
        by_address = {s.email: s.id for s in store.iter_subscribers()}
        message_ids = set()
        for received in server.messages:
            message = received.parsed()
            assert message["To"].addresses[0].addr_spec == received.rcpt_to
            assert received.mail_from == settings.newsletter.from_address
            message_ids.add(message["Message-ID"])
            link = str(message["List-Unsubscribe"]).strip("<>")
            token = link.removeprefix(urls.unsubscribe_url(settings, ""))
            assert read_token("unsubscribe", token, SECRET.encode()) == by_address[received.rcpt_to]
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert message["List-Id"] and message["Date"].datetime.tzinfo is not None
            text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
            assert text_part is not None and html_part is not None
            text, html = text_part.get_content(), html_part.get_content()
            assert link in text and link in html and urls.TOKEN_PLACEHOLDER not in text + html
            # A line starting with a dot (MJML's CSS has one) arrives intact: stuffed once, not twice.
            assert b"\r\n.mj-outlook-group-fix" in received.data
        assert len(message_ids) == 200

        # Done is done: sending again sends nothing; starting again gives the same campaign.
        assert start_campaign(store, settings, newsletter) == campaign_id
        assert deliver(store, settings, transport_from_spec(spec, settings), campaign_id).sent == 0
        assert len(server.messages) == 200
        assert store.delivery_counts(campaign_id)["sent"] == 200


@pytest.mark.parametrize("pipelining", [True, False])
def test_451_is_retried_and_delivered_once(tmp_path: Path, pipelining: bool) -> None:
    settings = delivery_project(tmp_path)
    with (
        Store.open(settings) as store,
        smtp_server(Behaviour(temp_failures=2, pipelining=pipelining)) as (server, spec),
    ):
        emails = add_subscribers(store, 30)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)
        assert summary.ok and summary.sent == 30 and summary.campaigns[0].retried == 60
        assert server.by_recipient() == Counter({e: 1 for e in emails})
        assert server.rcpt_attempts == Counter({e: 3 for e in emails})
        sub = store.get_subscriber_by_email(emails[0])
        assert sub is not None and store.subscriber_deliveries(sub.id)[0][1:] == ("sent", 3)


def test_451_forever_fails_after_max_attempts(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path, max_attempts=3)
    with Store.open(settings) as store, smtp_server(Behaviour(temp_failures=99)) as (server, spec):
        add_subscribers(store, 3)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)
        assert not summary.ok and summary.failed == 3 and summary.campaigns[0].finished
        assert not server.messages
        assert all("gave up after 3 attempts: 451" in reply for _a, _s, reply in summary.campaigns[0].problems)
        # A failed delivery is not a bounce: the subscriber stays active.
        assert store.count_subscribers()["active"] == 3


@pytest.mark.parametrize("pipelining", [True, False])
def test_550_bounces_that_address_and_the_others_are_delivered(tmp_path: Path, pipelining: bool) -> None:
    settings = delivery_project(tmp_path)
    behaviour = Behaviour(reject={"reader7@example.com"}, pipelining=pipelining)
    with Store.open(settings) as store, smtp_server(behaviour) as (server, spec):
        emails = add_subscribers(store, 40)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)
        assert (summary.sent, summary.bounced, summary.ok) == (39, 1, False)
        assert server.by_recipient() == Counter({e: 1 for e in emails if e != "reader7@example.com"})
        bounced = store.get_subscriber_by_email("reader7@example.com")
        assert bounced is not None and bounced.status == "bounced"
        assert store.subscriber_deliveries(bounced.id) == [(summary.campaigns[0].key, "bounced", 1)]
        assert summary.campaigns[0].problems[0][2].startswith("550 5.1.1")


def test_dropped_connections_reconnect_and_deliver_once(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path, concurrency=2)
    with Store.open(settings) as store, smtp_server(Behaviour(drop_at={5, 6, 40})) as (server, spec):
        emails = add_subscribers(store, 60)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)
        assert summary.ok and summary.sent == 60
        assert server.dropped == 3
        assert server.by_recipient() == Counter({e: 1 for e in emails})
        assert server.connections >= 2 + 3  # one per worker, one per drop


def test_server_down_aborts_and_nothing_is_lost(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store:
        emails = add_subscribers(store, 25)
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        nobody = f"smtp://127.0.0.1:{free_port()}"
        with pytest.raises(DeliveryAborted, match="lost the connection") as info:
            deliver(store, settings, transport_from_spec(nobody, settings), campaign_id)
        assert info.value.summary.sent == 0
        counts = store.delivery_counts(campaign_id)
        assert counts["pending"] == 25 and counts["sending"] == 0
        with smtp_server() as (server, spec):
            summary = deliver(store, settings, transport_from_spec(spec, settings))  # resume
            assert summary.sent == 25 and server.by_recipient() == Counter({e: 1 for e in emails})


def test_unsubscribed_and_bounced_subscribers_never_receive_mail(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store, smtp_server() as (server, spec):
        active = add_subscribers(store, 10)
        add_subscribers(store, 3, status="unsubscribed", prefix="gone")
        add_subscribers(store, 3, status="bounced", prefix="bounced")
        add_subscribers(store, 3, status="complained", prefix="complained")
        add_subscribers(store, 3, status="pending", prefix="pending")
        campaign_id = start_campaign(store, settings, sample_newsletter(settings))
        # Between the campaign's start and its send, two people leave.
        for address, status in (("reader3@example.com", "unsubscribed"), ("reader4@example.com", "bounced")):
            sub = store.get_subscriber_by_email(address)
            assert sub is not None
            store.set_subscriber_status(sub.id, status)
        summary = deliver(store, settings, transport_from_spec(spec, settings), campaign_id)
        expected = set(active) - {"reader3@example.com", "reader4@example.com"}
        assert set(server.by_recipient()) == expected
        assert summary.sent == 8 and summary.skipped == 2 and summary.ok


def test_killed_mid_campaign_then_resumed(tmp_path: Path) -> None:
    """SIGKILL while sending; --resume finishes. Everyone gets it; only messages that
    were in flight at the kill may arrive twice."""
    count = 300
    behaviour = Behaviour()
    with smtp_server(behaviour) as (server, spec):
        settings = delivery_project(
            tmp_path, transport=spec, concurrency=3, batch_size=5, rate_per_second=150, retry_base_seconds=0.05
        )
        with Store.open(settings) as store:
            emails = add_subscribers(store, count)
        slug = sample_newsletter(settings).key
        command = _cli_command(settings, "send", slug, "--yes")
        killed_at = server.event_at(80)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        assert killed_at.wait(timeout=40), process.communicate(timeout=5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        received_before = len(server.messages)
        assert received_before < count, "the send finished before it could be killed"

        with Store.open(settings) as store:
            campaign = store.get_campaign_by_key(slug)
            assert campaign is not None and campaign.status == "sending"
            at_kill = store.delivery_counts(campaign.id)
        in_flight = at_kill["sending"]
        assert in_flight <= max_in_flight(settings)
        assert at_kill["sent"] <= received_before <= at_kill["sent"] + in_flight

        resumed = subprocess.run(
            _cli_command(settings, "send", "--resume", "--yes"), capture_output=True, text=True, env=_env()
        )
        assert resumed.returncode == 0, resumed.stderr
        received = server.by_recipient()
        assert set(received) == set(emails)  # everyone, nothing lost
        duplicates = sum(received.values()) - count
        assert duplicates <= in_flight  # only what was in flight
        with Store.open(settings) as store:
            final = store.delivery_counts(campaign.id)
            assert final["sent"] == count and store.get_campaign(campaign.id).status == "finished"  # type: ignore[union-attr]


def _env() -> dict[str, str]:
    return {**os.environ, SECRET_ENV: SECRET}


def _cli_command(settings: Settings, *args: str) -> list[str]:
    """`python -m pipeline ...` once the CLI registers the send commands; until then
    the very same click command, run on its own."""
    from pipeline.cli import main as cli

    config = ["--config", str(settings.root / "pipeline.toml")]
    if "pipeline.cli.send" in getattr(cli, "COMMAND_MODULES", ()):
        return [sys.executable, "-m", "pipeline", *args[:1], *config, *args[1:]]
    runner = "import sys; from pipeline.cli.send import send_command; send_command(sys.argv[1:])"
    return [sys.executable, "-c", runner, *config, *args[1:]]


def test_outbox_writes_one_maildir_file_per_message(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store:
        emails = add_subscribers(store, 12)
        result = CliRunner().invoke(
            send_command,
            ["--config", str(tmp_path / "pipeline.toml"), sample_newsletter(settings).key, "--yes"],
        )
        assert result.exit_code == 0, result.output
        files = list((tmp_path / "state" / "outbox" / "new").iterdir())
        assert len(files) == 12
        recipients = sorted(
            message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"].addresses[0].addr_spec for f in files
        )
        assert recipients == sorted(emails)
        assert all(b"\n.mj-outlook-group-fix" in f.read_bytes() for f in files)
        assert store.is_published(sample_newsletter(settings).key, "email")


@pytest.mark.parametrize(
    "message",
    [b"A: b\r\n\r\n.one\r\n..two\r\nthree.\r\n", b".starts\r\nwith a dot", b"A: b\n\n.lf only\n"],
)
def test_wire_form_round_trip(message: bytes) -> None:
    wire = to_wire(message)
    assert wire.endswith(b"\r\n.\r\n") and b"\n." not in wire.replace(b"\n..", b"")[:-3]
    assert to_wire(wire) is wire
    assert from_wire(wire) == (message if b"\r\n" in message else message.replace(b"\n", b"\r\n")) + (
        b"" if message.endswith(b"\n") else b"\r\n"
    )


def test_send_test_touches_no_ledger(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with Store.open(settings) as store, smtp_server() as (server, spec):
        add_subscribers(store, 5)
        newsletter = sample_newsletter(settings)
        reply = send_test(settings, transport_from_spec(spec, settings), newsletter, "staff@example.com")
        assert reply.ok
        assert [m.rcpt_to for m in server.messages] == ["staff@example.com"]
        assert server.messages[0].parsed()["Subject"].strip().startswith("[Proof] ")
        assert store.list_campaigns() == [] and store.count_subscribers()["active"] == 5

        result = CliRunner().invoke(
            send_test_command,
            [
                "--config",
                str(tmp_path / "pipeline.toml"),
                newsletter.key,
                "--to",
                "x@example.com",
                "--transport",
                spec,
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 2 and store.list_campaigns() == []


def test_refused_proof_is_an_error(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    with (
        smtp_server(Behaviour(reject={"staff@example.com"})) as (_server, spec),
        pytest.raises(TransportError, match=r"550 5\.1\.1"),
    ):
        send_test(settings, transport_from_spec(spec, settings), sample_newsletter(settings), "staff@example.com")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("carrier-pigeon", "unknown transport"),
        ("smtp://", "no host"),
        ("smtp://mail.example.com:99999", "port"),
        ("smtp://mail.example.com:25?tls=maybe", "tls="),
        ("smtp://mail.example.com:25?auth=plain", "unknown option"),
        ("smtp://user:hunter2@mail.example.com:587", "must not contain a password"),
        ("smtp://user@mail.example.com:587?tls=starttls", "PIPELINE_SMTP_PASSWORD"),
        ("smtp://mail.example.com/path", "unexpected path"),
    ],
)
def test_bad_transport_specs_say_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    monkeypatch.delenv("PIPELINE_SMTP_PASSWORD", raising=False)
    settings = delivery_project(tmp_path)
    with pytest.raises(PipelineError, match=message):
        transport_from_spec(spec, settings)


def test_transport_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = delivery_project(tmp_path)
    monkeypatch.setenv("PIPELINE_SMTP_PASSWORD", "pw")
    smtp = transport_from_spec("smtp://news%40clinic@mail.example.com?tls=starttls", settings)
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.host, smtp.port, smtp.tls, smtp.user, smtp.password) == (
        "mail.example.com",
        587,
        "starttls",
        "news@clinic",
        "pw",
    )
    ssl = transport_from_spec("smtp://mail.example.com?tls=ssl", settings)
    assert isinstance(ssl, SmtpTransport) and ssl.port == 465
    outbox = transport_from_spec("outbox:mail", settings)
    assert isinstance(outbox, OutboxTransport) and outbox.path == tmp_path / "mail"


def test_send_command_errors_are_one_line(tmp_path: Path) -> None:
    delivery_project(tmp_path)
    config = ["--config", str(tmp_path / "pipeline.toml")]
    runner = CliRunner()
    for args, fragment, code in [
        ([], "say what to send", 1),
        (["no-such-post"], "no post with slug", 1),
        (["--resume", "--digest"], "cannot be combined", 1),
        (["x", "--transport", "ftp://x"], "unknown transport", 3),  # configuration
    ]:
        result = runner.invoke(send_command, [*config, *args])
        assert result.exit_code == code, (args, result.output)
        assert fragment in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output


def _dkim_settings(tmp_path: Path, **delivery: object) -> Settings:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a DKIM key")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    return delivery_project(tmp_path, dkim_key=str(key), dkim_selector="news", **delivery)


def test_dkim_signed_messages_cover_one_click_headers(tmp_path: Path) -> None:
    settings = _dkim_settings(tmp_path)
    signer = DkimSigner.from_settings(settings)
    assert signer is not None
    with Store.open(settings) as store, smtp_server() as (server, spec):
        add_subscribers(store, 3)
        deliver(
            store,
            settings,
            transport_from_spec(spec, settings),
            start_campaign(store, settings, sample_newsletter(settings)),
        )
        assert len(server.messages) == 3
        for received in server.messages:
            assert signer.verify(received.data)
            header = " ".join(received.parsed()["DKIM-Signature"].split())
            assert "d=jamesonprosthetics.com;" in header
            assert "list-unsubscribe : list-unsubscribe-post" in header
        tampered = server.messages[0].data.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing"
        )
        assert not signer.verify(tampered)


def test_doctor_lists_every_problem_in_words(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    newsletter = sample_newsletter(settings)
    assert diagnose(settings, newsletter) == [
        "the From domain jamesonprosthetics.com has no DKIM key: set delivery.dkim_key and delivery.dkim_selector, "
        "and publish the key in DNS (one-click unsubscribe and DMARC need it)"
    ]
    message, _signer, _ = sample_message(settings, newsletter)
    head, body = message.split(b"\r\n\r\n", 1)
    kept = [h for h in head.split(b"\r\n") if not h.startswith((b"List-Id", b"Message-ID"))]
    broken = (
        b"\r\n".join(kept).replace(b"From: Jameson Prosthetics <news@", b"From: Jameson Prosthetics <news@gmail.com.")
        + b"\r\n\r\n"
    )
    broken += body.replace(settings.clinic.street.encode(), b"somewhere")
    problems = check_message(broken, settings, signer=None)
    for fragment in (
        "List-Id header is missing",
        "Message-ID header is missing",
        "plain-text part has no postal address",
        "HTML part has no postal address",
        "From domain",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)

    small = settings.model_copy(update={"newsletter": settings.newsletter.model_copy(update={"max_html_bytes": 1000})})
    assert any("Gmail clips it" in p for p in diagnose(small, newsletter))


def test_doctor_is_clean_with_dkim_and_the_cli_says_so(tmp_path: Path) -> None:
    settings = _dkim_settings(tmp_path)
    newsletter = sample_newsletter(settings)
    assert diagnose(settings, newsletter) == []
    result = CliRunner().invoke(doctor_command, ["--config", str(tmp_path / "pipeline.toml"), newsletter.key])
    assert result.exit_code == 0 and "no problems" in result.output


def test_doctor_cli_exits_1_on_problems(tmp_path: Path) -> None:
    settings = delivery_project(tmp_path)
    result = CliRunner().invoke(
        doctor_command,
        ["--config", str(tmp_path / "pipeline.toml"), sample_newsletter(settings).key],
    )
    assert result.exit_code == 1 and "problem: the From domain jamesonprosthetics.com has no DKIM key" in result.output

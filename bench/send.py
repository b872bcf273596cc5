"""Benchmark: one newsletter to 100,000 subscribers over loopback SMTP.

    python bench/send.py [--subscribers 100000] [--baseline-a 50000] [--baseline-b 2000] [--baseline [REF]]

Needs Postfix's ``smtp-sink`` (Debian package ``postfix``; the daemon is not
started): aiosmtpd tops out near 280 messages/s, far below what is measured here.
Prints, from one run:

- personalisation: messages built and serialised per second (token, headers,
  body), no network;
- delivery: the real send loop (``pipeline.mail.sender.deliver``, ledger and all)
  to the sink, at 10,000 and at the full count, each in its own process so its
  peak memory (max RSS) is its own;
- baseline (a): a raw client sending one pre-built message over 8 reused,
  pipelined connections, with no ledger and no personalisation: the ceiling of
  this machine and this sink;
- baseline (b): the naive way, one ``EmailMessage`` built from scratch and one
  new ``smtplib`` connection per message, sequentially, on a sample.

With ``--baseline [REF]`` the same run measures this checkout and then REF, each by
its own ``bench/send.py`` (the code's API moved between them), and prints their
figures side by side with the machine's loop time before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from baseline import Code, add_baseline_option, machine_speed, table, versions  # noqa: E402

from pipeline.channels.newsletter import Newsletter, render_post_newsletter  # noqa: E402
from pipeline.channels.templating import make_environment  # noqa: E402
from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.ledger.store import Store  # noqa: E402
from pipeline.ledger.tokens import make_token  # noqa: E402
from pipeline.mail.message import MessageTemplate, message_id_for  # noqa: E402
from pipeline.site.build import load_posts  # noqa: E402

CONNECTIONS = 8
SECRET = b"bench-secret-bench-secret-bench-secret"
SENDER = "news@jamesonprosthetics.com"


# --- set-up ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(binary).exists():
        sys.exit(
            "smtp-sink not found: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n"
            "(only the smtp-sink tool is used; the postfix daemon need not run)"
        )
    sink = subprocess.Popen([binary, "-u", "nobody", f"127.0.0.1:{port}", "256"], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            time.sleep(0.05)
    sink.kill()
    sys.exit("smtp-sink did not start")


def make_project(folder: Path, port: int, batch_size: int) -> Path:
    shutil.copy(ROOT / "pipeline.toml", folder / "pipeline.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "posts", folder / "posts")
    config = folder / "pipeline.toml"
    text = config.read_text(encoding="utf-8")
    start = text.index("[delivery]")
    end = text.index("\n[", start + 1)
    delivery = (
        "[delivery]\n"
        f'transport = "smtp://127.0.0.1:{port}"\n'
        f"concurrency = {CONNECTIONS}\n"
        "rate_per_second = 0\n"
        "max_attempts = 5\n"
        "retry_base_seconds = 1.0\n"
        f"batch_size = {batch_size}\n"
    )
    config.write_text(text[:start] + delivery + text[end:], encoding="utf-8")
    return config


def sample_newsletter(settings: Settings) -> Newsletter:
    posts, _errors = load_posts(settings)
    post = next(p for p in posts if p.slug.startswith("botox"))
    return render_post_newsletter(post, settings, make_environment(settings))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- personalisation --------------------------------------------------------------------


def personalisation_rate(settings: Settings, newsletter: Newsletter, count: int) -> tuple[float, int]:
    template = MessageTemplate(newsletter, settings)
    issued = int(newsletter.date.timestamp())
    domain = template.from_domain
    size = 0
    started = time.perf_counter()
    for i in range(1, count + 1):
        message = template.personalise(
            to_address=f"reader{i}@example.com",
            to_name=f"Reader {i}",
            token=make_token("unsubscribe", i, SECRET, issued),
            manage_token=make_token("manage", i, SECRET, issued),
            message_id=message_id_for(1, i, domain),
            date=datetime.now(UTC),
        )
        size += len(message)
    return count / (time.perf_counter() - started), size // count


# --- baseline (a): raw pipelined client, pre-built bytes -------------------------------


def _raw_worker(port: int, data: bytes, count: int, errors: list[str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    reader = sock.makefile("rb")

    def reply() -> bytes:
        while True:
            line = reader.readline()
            if line[3:4] != b"-":
                return line

    reply()
    sock.sendall(b"EHLO bench\r\n")
    reply()
    payload = data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    for i in range(count):
        sock.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<reader%d@example.com>\r\nDATA\r\n" % (SENDER.encode(), i))
        replies = [reply(), reply(), reply()]
        sock.sendall(payload)
        final = reply()
        if not final.startswith(b"250") or not replies[2].startswith(b"354"):
            errors.append(final.decode())
    sock.sendall(b"QUIT\r\n")
    reply()
    sock.close()


def baseline_a(port: int, message: bytes, count: int) -> float:
    errors: list[str] = []
    per_thread = count // CONNECTIONS
    threads = [
        threading.Thread(target=_raw_worker, args=(port, message, per_thread, errors)) for _ in range(CONNECTIONS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"baseline (a): {len(errors)} messages refused, e.g. {errors[0]}")
    return per_thread * CONNECTIONS / elapsed


# --- baseline (b): the naive way ------------------------------------------------------


def baseline_b(port: int, newsletter: Newsletter, settings: Settings, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        message = EmailMessage()
        message["From"] = f"{settings.newsletter.from_name} <{settings.newsletter.from_address}>"
        message["To"] = f"Reader {i} <reader{i}@example.com>"
        message["Subject"] = newsletter.subject
        message["Date"] = datetime.now(UTC)
        message["Message-ID"] = f"<naive.{i}@{settings.newsletter.from_domain}>"
        token = make_token("unsubscribe", i, SECRET, int(newsletter.date.timestamp()))
        message["List-Unsubscribe"] = f"<{settings.clinic.base_url}/unsubscribe/{token}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(newsletter.text.replace("__UNSUBSCRIBE_TOKEN__", token))
        message.add_alternative(newsletter.html.replace("__UNSUBSCRIBE_TOKEN__", token), subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(message)
    return count / (time.perf_counter() - started)


# --- delivery, in its own process ----------------------------------------------------------


def delivery_worker(config: Path, subscribers: int) -> None:
    """Fill a fresh ledger with ``subscribers``, then send in a child process, so the
    child's peak memory is the send's alone. Prints the child's JSON."""
    settings = load_settings(config)
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    with Store.open(settings) as store:
        chunk = 10_000
        for start in range(0, subscribers, chunk):
            store.add_subscribers_bulk(
                [
                    {"email": f"reader{i}@example.com", "name": f"Reader {i}", "status": "active", "source": "bench"}
                    for i in range(start, min(start + chunk, subscribers))
                ]
            )
    result = subprocess.run(
        [sys.executable, __file__, "--deliver-only", str(config)], capture_output=True, text=True, check=True
    )
    print(result.stdout.strip())


def deliver_only(config: Path) -> None:
    os.environ["PIPELINE_SECRET"] = SECRET.decode()
    from pipeline.mail.sender import deliver, start_campaign
    from pipeline.mail.transports import transport_from_spec

    settings = load_settings(config)
    newsletter = sample_newsletter(settings)
    before = peak_rss_mb()
    with Store.open(settings) as store:
        started = time.perf_counter()
        campaign_id = start_campaign(store, settings, newsletter)
        created = time.perf_counter() - started
        transport = transport_from_spec(settings.delivery.transport, settings)
        started = time.perf_counter()
        summary = deliver(store, settings, transport, campaign_id)
        elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "sent": summary.sent,
                "failed": summary.failed + summary.bounced,
                "rate": summary.sent / elapsed,
                "seconds": elapsed,
                "campaign_seconds": created,
                "rss_before_mb": before,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def run_delivery(config: Path, subscribers: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--delivery-worker", str(config), "--subscribers", str(subscribers)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"delivery run failed:\n{result.stderr}")
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


# --- side by side ----------------------------------------------------------------------

# What each version's bench prints (the same lines since a8dfb7c): a delivery line for
# --small, then one for --subscribers.
_DELIVERY = re.compile(r"^delivery\s+[\d,]+\s+([\d,]+) messages/s", re.M)
_FIGURES = {
    "message size, bytes": re.compile(
        r"^personalisation\s+[\d,]+ messages/s\s+\([\d,]+ messages of ([\d,]+) bytes", re.M
    ),
    "personalisation, messages/s": re.compile(r"^personalisation\s+([\d,]+) messages/s", re.M),
    "delivery / baseline (a)": re.compile(r"^delivery / baseline \(a\): (\d+%)", re.M),
    "delivery / baseline (b)": re.compile(r"^delivery / baseline \(b\): ([\d.]+x)", re.M),
    "peak memory at --subscribers": re.compile(r"^peak memory:.* (\d+ MB) at [\d,]+ \(", re.M),
}


def figures(output: str) -> dict[str, str]:
    found = {name: match.group(1) for name, pattern in _FIGURES.items() if (match := pattern.search(output))}
    deliveries = _DELIVERY.findall(output)
    if len(deliveries) == 2:
        found["delivery at --small, messages/s"], found["delivery at --subscribers, messages/s"] = deliveries
    return found


def measure(code: Code, arguments: list[str]) -> str:
    """One version's own bench, run as a child with its own code on the path; its lines
    are shown as they come, prefixed with the version."""
    child = subprocess.Popen(
        [sys.executable, str(code.root / "bench" / "send.py"), *arguments],
        cwd=code.root,
        env=code.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        print(f"[{code.name}] {line}", end="", flush=True)
        lines.append(line)
    if child.wait() != 0:
        raise SystemExit(f"{code.name}: bench/send.py failed with {child.returncode}")
    return "".join(lines)


def side_by_side(codes: list[Code], arguments: list[str]) -> None:
    print(f"machine: a fixed 10M-step Python loop takes {machine_speed():.2f} s (lower is faster)", flush=True)
    outputs = [measure(code, arguments) for code in codes]
    print(f"machine after: the loop takes {machine_speed():.2f} s")
    found = [figures(output) for output in outputs]
    order = [
        "message size, bytes",
        "personalisation, messages/s",
        "delivery at --small, messages/s",
        "delivery at --subscribers, messages/s",
        "delivery / baseline (a)",
        "delivery / baseline (b)",
        "peak memory at --subscribers",
    ]
    rows = [(name, [each.get(name, "?") for each in found]) for name in order]
    print()
    print(table(rows, codes))


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller delivery run, for memory flatness")
    parser.add_argument("--baseline-a", type=int, default=50_000, help="messages for baseline (a)")
    parser.add_argument("--baseline-b", type=int, default=2_000, help="messages for baseline (b)")
    parser.add_argument("--batch-size", type=int, default=100, help="delivery.batch_size for the run")
    parser.add_argument("--delivery-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deliver-only", type=Path, help=argparse.SUPPRESS)
    add_baseline_option(parser)
    args = parser.parse_args()
    if args.baseline:
        options = ("subscribers", "small", "baseline_a", "baseline_b", "batch_size")  # the same for each
        arguments = [
            part for option in options for part in (f"--{option.replace('_', '-')}", str(getattr(args, option)))
        ]
        side_by_side(versions(args.baseline), arguments)
        return
    if args.delivery_worker:
        delivery_worker(args.delivery_worker, args.subscribers)
        return
    if args.deliver_only:
        deliver_only(args.deliver_only)
        return

    port = free_port()
    sink = start_sink(port)
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        config = make_project(folder, port, args.batch_size)
        settings = load_settings(config)
        newsletter = sample_newsletter(settings)
        print(f"cores: {os.cpu_count()}  sink: smtp-sink 127.0.0.1:{port}  connections: {CONNECTIONS}", flush=True)

        rate, size = personalisation_rate(settings, newsletter, args.subscribers)
        print(
            f"personalisation       {rate:>9,.0f} messages/s  ({args.subscribers:,} messages of {size:,} bytes)",
            flush=True,
        )

        prebuilt = MessageTemplate(newsletter, settings).preview()
        rate_b = baseline_b(port, newsletter, settings, args.baseline_b)
        print(
            f"baseline (b) naive    {rate_b:>9,.0f} messages/s  ({args.baseline_b:,}, EmailMessage + new connection each)",
            flush=True,
        )

        # Other work may share the machine: baseline (a) is measured right before and
        # right after the full delivery run, and the ratio uses their mean.
        results = {}
        runs_a = []
        for count in (args.small, args.subscribers):
            if count == args.subscribers:
                runs_a.append(baseline_a(port, prebuilt, args.baseline_a))
                print(
                    f"baseline (a) raw      {runs_a[-1]:>9,.0f} messages/s  ({args.baseline_a:,} pre-built, 8 pipelined connections)",
                    flush=True,
                )
            run = run_delivery(config, count)
            results[count] = run
            print(
                f"delivery {count:>7,}      {run['rate']:>9,.0f} messages/s  ({run['sent']:,.0f} sent, {run['failed']:.0f} failed, "
                f"{run['seconds']:.1f} s; campaign rows {run['campaign_seconds']:.2f} s; "
                f"peak RSS {run['peak_rss_mb']:.0f} MB, {run['rss_before_mb']:.0f} MB before sending)",
                flush=True,
            )
        runs_a.append(baseline_a(port, prebuilt, args.baseline_a))
        print(f"baseline (a) raw      {runs_a[-1]:>9,.0f} messages/s  (again, after)", flush=True)
        rate_a = sum(runs_a) / len(runs_a)
        full = results[args.subscribers]
        print()
        print(
            f"delivery / baseline (a): {full['rate'] / rate_a:.0%}   (target >= 80%; (a) = {rate_a:,.0f}/s, mean of 2 runs)"
        )
        print(f"delivery / baseline (b): {full['rate'] / rate_b:.1f}x  (target >= 3x)")
        print(f"personalisation:         {rate:,.0f}/s (target >= 20,000/s)")
        print(
            f"peak memory:             {results[args.small]['peak_rss_mb']:.0f} MB at {args.small:,}, "
            f"{full['peak_rss_mb']:.0f} MB at {args.subscribers:,} (target < 200 MB, flat)"
        )
        in_flight = CONNECTIONS * args.batch_size  # pipeline.mail.sender.max_in_flight
        print(
            f"settings:                concurrency {CONNECTIONS}, batch_size {args.batch_size} (at most {in_flight:,} in flight)"
        )
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

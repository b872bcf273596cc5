"""Release latency of the real scheduler: (artifact written - scheduled time).

Starts `python scheduler.py` on a throw-away project (the clinic's templates and
sample posts, a few subscribers, the outbox transport), queues N posts a few
seconds ahead, spaced apart, and measures when each post's newsletter file
(out/newsletter/<slug>.html, written by the release's build) appeared relative
to the post's time. Prints p50 and p95. Target: p95 under 1 s.

    python bench/release_latency.py [--releases 20] [--spacing 0.5] [--subscribers 20]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def make_project(folder: Path, subscribers: int) -> Path:
    shutil.copy(ROOT / "pipeline.toml", folder / "pipeline.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "posts", folder / "posts")
    config = folder / "pipeline.toml"
    config.write_text(re.sub(r"(?m)^rescan_seconds = .*$", "rescan_seconds = 0.5", config.read_text()))
    sys.path.insert(0, str(ROOT))
    from pipeline.config import load_settings
    from pipeline.ledger.store import Store

    settings = load_settings(config)
    with Store.open(settings) as store:
        store.add_subscribers_bulk(
            [{"email": f"reader{n}@example.org", "status": "active", "source": "bench"} for n in range(subscribers)]
        )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between release times")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds from start to the first release")
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--log", type=Path, help="keep the scheduler's log here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="release-latency-") as tmp:
        folder = Path(tmp)
        config = make_project(folder, args.subscribers)
        log_path = folder / "scheduler.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "scheduler.py"), "--config", str(config)],
                cwd=folder,
                stderr=log,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            deadline = time.monotonic() + 60
            while "scheduler running" not in log_path.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the scheduler did not start:\n{log_path.read_text()}")
                time.sleep(0.05)

            zone = ZoneInfo("America/New_York")
            first = (datetime.now(UTC) + timedelta(seconds=args.lead + 1)).replace(microsecond=0)
            due: dict[str, datetime] = {}
            for number in range(args.releases):
                # Post dates have whole seconds: spacing below 1 s puts several posts on one second.
                when = first + timedelta(seconds=math.floor(number * args.spacing))
                slug = f"bench-{number:03d}"
                due[slug] = when
                path = folder / "posts" / f".{slug}.tmp"  # written aside, then renamed: as an editor saves
                path.write_text(
                    f"---\ntitle: Benchmark post {number}\ndate: {when.astimezone(zone).isoformat()}\n"
                    f"tags: [bench]\n---\nA post to measure release latency, number {number}.\n"
                )
                path.replace(folder / "posts" / f"{slug}.md")

            latencies: dict[str, float] = {}
            deadline = time.monotonic() + args.lead + args.releases * args.spacing + 60
            while len(latencies) < len(due):
                if time.monotonic() > deadline:
                    sys.exit(f"only {len(latencies)} of {len(due)} released in time:\n{log_path.read_text()}")
                for slug, when in due.items():
                    artifact = folder / "out" / "newsletter" / f"{slug}.html"
                    if slug not in latencies and artifact.exists():
                        latencies[slug] = artifact.stat().st_mtime - when.timestamp()
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        log_text = log_path.read_text()
        if args.log:
            args.log.write_text(log_text)
        released = len(re.findall(r"released bench-\d+", log_text))
        sent = sum(int(n) for n in re.findall(r"newsletter bench-\d+: sent (\d+)", log_text))

    values = list(latencies.values())
    print(
        f"releases: {len(values)} (posts due {args.spacing:g} s apart, whole seconds; {args.subscribers} subscribers)"
    )
    print("release latency (out/newsletter/<slug>.html written - scheduled time), real scheduler, real clock:")
    print(f"  p50 {percentile(values, 0.50) * 1000:7.0f} ms")
    print(f"  p95 {percentile(values, 0.95) * 1000:7.0f} ms   (target < 1000 ms)")
    print(f"  min {min(values) * 1000:7.0f} ms, max {max(values) * 1000:7.0f} ms")
    print(f"released once each: {released == len(values)} ({released} release log lines); mails sent: {sent}")
    print(f"scheduler exit status after SIGTERM: {code}")
    if min(values) < 0:
        sys.exit("a post was released BEFORE its time")


if __name__ == "__main__":
    main()

"""Release latency of the real scheduler: (artifact written - scheduled time).

Starts `python scheduler.py` on a throw-away project (the clinic's templates and
sample posts, a few subscribers, the outbox transport), queues N posts a few
seconds ahead, spaced apart, and measures when each post's newsletter file
(out/newsletter/<slug>.html, written by the release's build) appeared relative
to the post's time, and when the scheduler logged the release as done (recorded,
its campaign made). Prints p50 and p95. Target: p95 under 0.25 s, with or without
an archive.

    python bench/release_latency.py [--releases 20] [--spacing 0.5] [--subscribers 20]
                                    [--archive 5000] [--baseline [REF]]

--archive N: N more posts dated in the past, built by `pipeline build` and released
(as backfill, feed only) by the scheduler's first start, before anything is measured.
--baseline [REF]: the same measurement with the code of REF (default a8dfb7c, before
the house was reshaped), driven through its own command line and scheduler.py, in the
same run; the figures are printed side by side with the machine's loop time.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import CORPUS, Code, add_baseline_option, machine_speed, table, versions
from build import make_post

ZONE = ZoneInfo("America/New_York")
_LOGGED = re.compile(r"^(\S+ \S+) INFO\s+released (bench-\d+) ", re.MULTILINE)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Outcome:
    written: dict[str, float] = field(default_factory=dict)  # slug -> seconds after its time
    logged: dict[str, float] = field(default_factory=dict)
    released_lines: int = 0
    sent: int = 0
    exit_status: int | None = None
    startup: float = 0.0  # seconds from start to "scheduler running"
    loop: float = 0.0  # the machine's loop time just before

    def figure(self, which: str, fraction: float) -> str:
        values = list(getattr(self, which).values())
        return f"{percentile(values, fraction) * 1000:.0f} ms" if values else "-"


def run(code: Code, command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=code.env())
    if done.returncode:
        sys.exit(f"{code.name}: {' '.join(command[2:])} failed:\n{done.stderr[-2000:]}")


def make_project(code: Code, folder: Path, subscribers: int, archive: int) -> Path:
    shutil.copy(code.root / "pipeline.toml", folder / "pipeline.toml")
    shutil.copytree(code.root / "templates", folder / "templates")
    shutil.copytree(code.root / "posts", folder / "posts")
    config = folder / "pipeline.toml"
    config.write_text(re.sub(r"(?m)^rescan_seconds = .*$", "rescan_seconds = 0.5", config.read_text()))
    addresses = folder / "subscribers.csv"
    addresses.write_text("email,name\n" + "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(subscribers)))
    run(code, code.pipeline("subscribers", "import", str(addresses)), folder)  # each version makes its own ledger
    if archive:
        rng = random.Random(7)
        # 09:00, 15:00, 21:00 and 03:00: never a time the clocks skip or repeat.
        start = (datetime.now(UTC) - timedelta(days=30, hours=6 * archive)).replace(hour=9, minute=0, tzinfo=None)
        for index in range(archive):
            (folder / "posts" / f"archive-{index:05d}.md").write_text(make_post(index, rng, 600, start))
        run(code, code.pipeline("build", "--quiet"), folder)
    return config


def measure(code: Code, folder: Path, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(loop=machine_speed())
    config = make_project(code, folder, args.subscribers, args.archive)
    log_path = folder / "scheduler.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            code.scheduler("--config", str(config)), cwd=folder, stderr=log, stdout=subprocess.DEVNULL, env=code.env()
        )
    try:
        deadline = time.monotonic() + 60 + args.archive * 0.05
        while "scheduler running" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{code.name}: the scheduler did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        outcome.startup = time.monotonic() - started
        due = queue_posts(folder, args)
        deadline = time.monotonic() + args.lead + args.releases * args.spacing + 60
        while len(outcome.written) < len(due):
            if time.monotonic() > deadline:
                sys.exit(f"{code.name}: only {len(outcome.written)} of {len(due)} released in time")
            for slug, when in due.items():
                artifact = folder / "out" / "newsletter" / f"{slug}.html"
                if slug not in outcome.written and artifact.exists():
                    outcome.written[slug] = artifact.stat().st_mtime - when.timestamp()
            time.sleep(0.02)
        while len(_logged(log_path.read_text(), due)) < len(due) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        outcome.exit_status = process.wait(120)
    text = log_path.read_text()
    if args.log:
        args.log.mkdir(parents=True, exist_ok=True)
        (args.log / f"{code.name.replace(' ', '-')}.log").write_text(text)
    outcome.logged = _logged(text, due)
    outcome.released_lines = len(re.findall(r"released bench-\d+", text))
    outcome.sent = sum(int(n) for n in re.findall(r"newsletter bench-\d+: sent (\d+)", text))
    return outcome


def queue_posts(folder: Path, args: argparse.Namespace) -> dict[str, datetime]:
    first = (datetime.now(UTC) + timedelta(seconds=args.lead + 1)).replace(microsecond=0)
    due: dict[str, datetime] = {}
    for number in range(args.releases):
        # Post dates have whole seconds: spacing below 1 s puts several posts on one second.
        when = first + timedelta(seconds=math.floor(number * args.spacing))
        slug = f"bench-{number:03d}"
        due[slug] = when
        path = folder / "posts" / f".{slug}.tmp"  # written aside, then renamed: as an editor saves
        path.write_text(
            f"---\ntitle: Benchmark post {number}\ndate: {when.astimezone(ZONE).isoformat()}\n"
            f"tags: [bench]\n---\nA post to measure release latency, number {number}.\n"
        )
        path.replace(folder / "posts" / f"{slug}.md")
    return due


def _logged(text: str, due: dict[str, datetime]) -> dict[str, float]:
    """Seconds from each post's time to the scheduler's "released" line (its millisecond stamp)."""
    return {
        slug: datetime.fromisoformat(stamp).timestamp() - due[slug].timestamp()
        for stamp, slug in _LOGGED.findall(text)
        if slug in due
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between release times")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds from start to the first release")
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--archive", type=int, default=0, help="posts released before the measurement")
    add_baseline_option(parser)
    parser.add_argument("--log", type=Path, help="keep each scheduler's log in this folder")
    args = parser.parse_args()

    CORPUS.mkdir(parents=True, exist_ok=True)
    codes = versions(args.baseline)
    outcomes = []
    for code in codes:
        with tempfile.TemporaryDirectory(prefix="release-latency-", dir=CORPUS) as tmp:
            outcomes.append(measure(code, Path(tmp), args))

    print(
        f"releases: {args.releases} (due {args.spacing:g} s apart, whole seconds); {args.subscribers} subscribers; "
        f"archive: {args.archive} posts released before"
    )
    rows = [
        ("machine loop before (s)", [f"{o.loop:.2f}" for o in outcomes]),
        ("start-up to running", [f"{o.startup:.1f} s" for o in outcomes]),
        ("written p50", [o.figure("written", 0.50) for o in outcomes]),
        ("written p95", [o.figure("written", 0.95) for o in outcomes]),
        ("written max", [o.figure("written", 1.0) for o in outcomes]),
        ("released (logged) p50", [o.figure("logged", 0.50) for o in outcomes]),
        ("released (logged) p95", [o.figure("logged", 0.95) for o in outcomes]),
        ("released once each", [str(o.released_lines == args.releases) for o in outcomes]),
        ("mails sent", [str(o.sent) for o in outcomes]),
        ("exit status after SIGTERM", [str(o.exit_status) for o in outcomes]),
    ]
    print(table(rows, codes))
    print("written: out/newsletter/<slug>.html written - scheduled time; logged: the 'released' line - scheduled time")
    print(f"target: p95 < 250 ms with a 5,000-post archive; machine after: the loop takes {machine_speed():.2f} s")
    if any(v < 0 for o in outcomes for v in o.written.values()):
        sys.exit("a post was released BEFORE its time")


if __name__ == "__main__":
    main()

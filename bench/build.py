"""Time `pipeline build` on a generated corpus: cold, no-op rebuild, one post changed.

    .venv/bin/python bench/build.py [--posts 10000] [--words 600] [--jobs N] [--runs 3]

Targets on a 2-core machine: cold < 20 s, no-op < 1 s, one post changed < 2 s.
The corpus, output and state go to bench/corpus/ (git-ignored; on the project's own
disk, as a clinic's would be), removed afterwards unless --keep. This machine is
shared and its speed drifts, so the bench prints how long a fixed Python loop takes
and how long creating a file takes next to its figures. Deleting a previous run's
50,000 files slows file creation tenfold for some minutes: wait between runs.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "prosthesis",
    "socket",
    "liner",
    "residual",
    "limb",
    "gait",
    "balance",
    "knee",
    "ankle",
    "foot",
    "pressure",
    "skin",
    "fit",
    "comfort",
    "walking",
    "stairs",
    "research",
    "study",
    "patients",
    "clinic",
    "fitting",
    "alignment",
    "pain",
    "phantom",
    "sensation",
    "daily",
    "care",
    "volume",
    "swelling",
    "shrinker",
    "activity",
    "recovery",
    "therapy",
    "strength",
    "confidence",
    "family",
    "support",
]
TAGS = ["socket fit", "phantom limb pain", "research", "skin care", "gait", "new amputees", "family", "sports"]


def paragraph(rng: random.Random, words: int) -> str:
    chosen = [rng.choice(WORDS) for _ in range(words)]
    chosen[0] = chosen[0].capitalize()
    text = " ".join(chosen)
    if rng.random() < 0.3:
        text += f" See [our guide](/guides/{rng.choice(WORDS)}) or **call us**."
    return text + "."


def make_post(index: int, rng: random.Random, words: int, start: datetime) -> str:
    date = start + timedelta(hours=6 * index)
    tags = rng.sample(TAGS, 3)
    body_parts = []
    remaining = words
    while remaining > 0:
        size = min(remaining, rng.randint(60, 110))
        if rng.random() < 0.2:
            body_parts.append(f"## {paragraph(rng, 5)[:-1]}")
        body_parts.append(paragraph(rng, size))
        remaining -= size
    if rng.random() < 0.3:
        body_parts.append("- " + "\n- ".join(paragraph(rng, 8) for _ in range(4)))
    return (
        "---\n"
        f'title: "Article {index}: {paragraph(rng, 6)[:-1]}"\n'
        f"date: {date:%Y-%m-%d %H:%M}\n"
        f"author: Jameson Prosthetics clinical team\n"
        f"tags: [{', '.join(tags)}]\n"
        f"summary: {paragraph(rng, 30)}\n"
        "sources:\n"
        f"  - title: Study {index} on {rng.choice(WORDS)}\n"
        f"    url: https://pubmed.ncbi.nlm.nih.gov/{10_000_000 + index}/\n"
        "---\n" + "\n\n".join(body_parts) + "\n"
    )


def machine_speed() -> float:
    """Seconds for a fixed pure-Python loop: this machine is shared and its speed
    drifts by a third within an hour, so figures are only comparable alongside this."""
    started = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number * number
    return time.perf_counter() - started


def file_creation_ms(folder: Path, count: int = 500) -> float:
    """Milliseconds to create one small file here. On ext4 without a journal (as on this
    machine) it swings tenfold: for some minutes after many files were deleted nearby (a
    previous run's clean-up, a test run), each new file's inode is found past every
    recently deleted one. A cold build creates five files a post."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    started = time.perf_counter()
    for number in range(count):
        (probe / f"{number}.html").write_bytes(b"x" * 8000)
    elapsed = time.perf_counter() - started
    shutil.rmtree(probe)
    return elapsed / count * 1000


def run_build(project: Path, now: str, jobs: int | None) -> tuple[float, str]:
    command = [sys.executable, "-m", "pipeline", "build", "--now", now]
    if jobs:
        command += ["--jobs", str(jobs)]
    started = time.perf_counter()
    run = subprocess.run(command, cwd=project, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"build failed:\n{run.stderr[-2000:]}")
    return elapsed, run.stdout.splitlines()[0]


def report(name: str, times: list[float], summary: str) -> None:
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"{name + ':':18s} {min(times):7.2f} s   best of {len(times)} (runs: {runs} s; last: {summary})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure; the best is reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()

    (ROOT / "bench" / "corpus").mkdir(parents=True, exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="build-", dir=ROOT / "bench" / "corpus"))
    try:
        shutil.copy(ROOT / "pipeline.toml", project)
        shutil.copytree(ROOT / "templates", project / "templates")
        posts = project / "posts"
        posts.mkdir()
        rng = random.Random(42)
        start = datetime(2019, 1, 1, 9, 0)
        for index in range(args.posts):
            (posts / f"post-{index:05d}.md").write_text(make_post(index, rng, args.words, start), encoding="utf-8")
        now = (start + timedelta(hours=6 * args.posts + 1)).strftime("%Y-%m-%dT%H:%M")
        size = sum(p.stat().st_size for p in posts.iterdir()) / 1e6
        print(f"corpus: {args.posts} posts, ~{args.words} words each, {size:.0f} MB, in {project}")
        print(f"machine: a fixed 10M-step Python loop takes {machine_speed():.2f} s (lower is faster)")
        print(f"disk: creating a file takes {file_creation_ms(project):.3f} ms (0.03 when the disk is quiet)")

        # Each figure is the best of --runs: on a shared machine other work only ever adds
        # time (as timeit's documentation argues); every run is printed too.
        colds = []
        for run in range(args.runs):
            if run:  # a cold build again: set the last one's output aside (renamed, not deleted; see above)
                for name in ("out", "state"):
                    (project / name).rename(project / f".{name}-{run}")
            elapsed, summary = run_build(project, now, args.jobs)
            colds.append(elapsed)
        report("cold build", colds, summary)
        noops = []
        for _ in range(args.runs):
            elapsed, summary = run_build(project, now, args.jobs)
            noops.append(elapsed)
        report("no-op rebuild", noops, summary)
        victim = posts / f"post-{args.posts // 2:05d}.md"
        original = victim.read_text(encoding="utf-8")
        ones = []
        for run in range(args.runs):
            changed = original.replace("sources:", f"updated: 2030-01-0{run + 1} 09:00\nsources:")
            victim.write_text(changed, encoding="utf-8")
            elapsed, summary = run_build(project, now, args.jobs)
            ones.append(elapsed)
        report("one post changed", ones, summary)
        print(f"per post (cold):   {min(colds) / args.posts * 1000:7.2f} ms")
        print(f"machine after:     the loop takes {machine_speed():.2f} s")
    finally:
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()

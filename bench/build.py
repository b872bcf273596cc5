"""Time `pipeline build` on a generated corpus: cold, no-op rebuild, one post changed.

    .venv/bin/python bench/build.py [--posts 10000] [--words 600] [--jobs N] [--runs 3] [--baseline [REF]]

Targets on a 2-core machine: cold < 20 s and at most 2 ms of CPU per post, no-op
< 1 s, one post changed < 2 s. With --baseline, the same corpus is built by that
commit too, turn about, and the figures are printed side by side. The corpus, output
and state go to bench/corpus/ (git-ignored; on the project's own disk, as a clinic's
would be), removed afterwards unless --keep. This machine is shared and its speed
drifts, so the bench prints how long a fixed Python loop takes and how long creating
a file takes next to its figures. Deleting a previous run's 50,000 files slows file
creation tenfold for some minutes: wait between runs.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import CORPUS, Code, add_baseline_option, machine_speed, table, versions

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
        # Two sentences: a snippet keeps whole ones, and its first must fit X with the link.
        f"summary: {paragraph(rng, 12)} {paragraph(rng, 16)}\n"
        "sources:\n"
        f"  - title: Study {index} on {rng.choice(WORDS)}\n"
        f"    url: https://pubmed.ncbi.nlm.nih.gov/{10_000_000 + index}/\n"
        "---\n" + "\n\n".join(body_parts) + "\n"
    )


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


@dataclass
class Figures:
    """Every run of one figure, for one version: wall seconds and CPU seconds (the build
    and its worker processes, user + system)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    summary: str = ""

    def best(self) -> str:
        return f"{min(self.wall):.2f} s"

    def runs(self) -> str:
        return ", ".join(f"{t:.2f}" for t in self.wall)


def run_build(code: Code, project: Path, now: str, jobs: int | None, figures: Figures) -> None:
    command = code.pipeline("build", "--now", now)
    if jobs:
        command += ["--jobs", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = subprocess.run(command, cwd=project, capture_output=True, text=True, env=code.env())
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        sys.exit(f"{code.name}: build failed:\n{run.stderr[-2000:]}")
    figures.wall.append(elapsed)
    figures.cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    figures.summary = run.stdout.splitlines()[0] if run.stdout else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure; the best is reported")
    add_baseline_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects")
    args = parser.parse_args()

    CORPUS.mkdir(parents=True, exist_ok=True)
    codes = versions(args.baseline)
    folder = Path(tempfile.mkdtemp(prefix="build-", dir=CORPUS))
    try:
        rng = random.Random(42)
        start = datetime(2019, 1, 1, 9, 0)
        texts = [make_post(index, rng, args.words, start) for index in range(args.posts)]
        now = (start + timedelta(hours=6 * args.posts + 1)).strftime("%Y-%m-%dT%H:%M")
        projects = []
        for number, code in enumerate(codes):
            project = folder / f"project-{number}"
            project.mkdir()
            shutil.copy(code.root / "pipeline.toml", project)
            shutil.copytree(code.root / "templates", project / "templates")
            (project / "posts").mkdir()
            for index, text in enumerate(texts):
                (project / "posts" / f"post-{index:05d}.md").write_text(text, encoding="utf-8")
            projects.append(project)
        size = sum(len(t.encode()) for t in texts) / 1e6
        print(f"corpus: {args.posts} posts, ~{args.words} words each, {size:.0f} MB, in {folder}")
        print(f"machine: a fixed 10M-step Python loop takes {machine_speed():.2f} s (lower is faster)")
        print(f"disk: creating a file takes {file_creation_ms(folder):.3f} ms (0.03 when the disk is quiet)")

        # Each figure is the best of --runs: on a shared machine other work only ever adds
        # time (as timeit's documentation argues). Versions take turns, run by run, so a
        # drift in the machine's speed touches both alike.
        cold = [Figures() for _ in codes]
        for run in range(args.runs):
            for code, project, figures in zip(codes, projects, cold, strict=True):
                if run:  # set the last run's output aside (renamed, not deleted; see file_creation_ms)
                    for name in ("out", "state"):
                        (project / name).rename(project / f".{name}-{run}")
                run_build(code, project, now, args.jobs, figures)
        noop = [Figures() for _ in codes]
        for _ in range(args.runs):
            for code, project, figures in zip(codes, projects, noop, strict=True):
                run_build(code, project, now, args.jobs, figures)
        one = [Figures() for _ in codes]
        for run in range(args.runs):
            for code, project, figures in zip(codes, projects, one, strict=True):
                victim = project / "posts" / f"post-{args.posts // 2:05d}.md"
                original = texts[args.posts // 2]
                victim.write_text(original.replace("sources:", f"updated: 2030-01-0{run + 1} 09:00\nsources:"))
                run_build(code, project, now, args.jobs, figures)

        rows = [
            ("cold build (best)", [f.best() for f in cold]),
            ("no-op rebuild (best)", [f.best() for f in noop]),
            ("one post changed (best)", [f.best() for f in one]),
            ("CPU per post, cold", [f"{min(f.cpu) / args.posts * 1000:.2f} ms" for f in cold]),
            ("wall per post, cold", [f"{min(f.wall) / args.posts * 1000:.2f} ms" for f in cold]),
        ]
        print()
        print(table(rows, codes))
        print()
        for name, figures_list in (("cold", cold), ("no-op", noop), ("one post", one)):
            for code, figures in zip(codes, figures_list, strict=True):
                print(f"{name} runs, {code.name}: {figures.runs()} s  ({figures.summary})")
        print(f"machine after: the loop takes {machine_speed():.2f} s")
        print("targets: cold < 20 s (and <= 2 ms of CPU per post), no-op < 1 s, one post changed < 2 s")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

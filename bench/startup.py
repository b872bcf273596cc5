"""How long staff commands take to start, next to `pelican --help`, this checkout and a baseline.

    .venv/bin/python bench/startup.py [--runs 7] [--baseline [REF]]

A staff command is mostly start-up: Python, our imports, the settings and (for most)
the ledger. Target: each within 1.5 x `pelican --help` measured in the same run.
Pelican is installed into bench/corpus/pelican-venv on the first run (from PyPI).
Each figure is the best of --runs, the commands taking turns so that a drift in the
machine's speed touches all alike.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import CORPUS, add_baseline_option, machine_speed, table, versions

COMMANDS = (
    ("--help",),
    ("subscribers", "count"),
    ("subscribers", "list"),
    ("queue",),
    ("approve", "botox-for-residual-and-phantom-limb-pain", "--by", "Dr. Bench"),
    ("validate",),
)


def pelican() -> list[str]:
    venv = CORPUS / "pelican-venv"
    if not (venv / "bin" / "pelican").exists():
        CORPUS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pelican"], check=True)
    return [str(venv / "bin" / "pelican"), "--help"]


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if run.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed:\n{run.stderr[-1500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    add_baseline_option(parser)
    args = parser.parse_args()
    codes = versions(args.baseline)
    reference = pelican()
    folder = Path(tempfile.mkdtemp(prefix="startup-", dir=CORPUS))
    try:
        projects: dict[str, Path] = {}
        for number, code in enumerate(codes):
            project = folder / f"project-{number}"
            project.mkdir()
            shutil.copy(code.root / "pipeline.toml", project)
            shutil.copytree(code.root / "templates", project / "templates")
            shutil.copytree(code.root / "posts", project / "posts")
            subprocess.run(code.pipeline("subscribers", "count"), cwd=project, env=code.env(), capture_output=True)
            projects[code.name] = project
        print(f"machine: a fixed 10M-step Python loop takes {machine_speed():.2f} s (lower is faster)")
        best: dict[tuple[str, str], float] = {}
        pelican_best = float("inf")
        floor_best: dict[str, float] = {}
        for _ in range(args.runs):
            pelican_best = min(pelican_best, timed(reference, folder))
            for code in codes:
                # The floor under every command that reads the ledger: Python and SQLAlchemy alone.
                floor = timed([sys.executable, "-c", "import sqlalchemy"], folder, code.env())
                floor_best[code.name] = min(floor_best.get(code.name, float("inf")), floor)
            for command in COMMANDS:
                for code in codes:
                    key = (" ".join(command), code.name)
                    elapsed = timed(code.pipeline(*command), projects[code.name], code.env())
                    best[key] = min(best.get(key, float("inf")), elapsed)
        rows = [("pelican --help", [f"{pelican_best * 1000:.0f} ms" for _ in codes])]
        rows.append(
            (
                "python -c 'import sqlalchemy'",
                [f"{floor_best[c.name] * 1000:.0f} ms ({floor_best[c.name] / pelican_best:.2f}x)" for c in codes],
            )
        )
        for command in COMMANDS:
            name = " ".join(command)
            rows.append(
                (
                    f"pipeline {name}"[:48],
                    [
                        f"{best[(name, c.name)] * 1000:.0f} ms ({best[(name, c.name)] / pelican_best:.2f}x)"
                        for c in codes
                    ],
                )
            )
        print()
        print(table(rows, codes))
        print()
        print(f"best of {args.runs} runs each; target: staff commands within 1.5x pelican --help")
        print(f"machine after: the loop takes {machine_speed():.2f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

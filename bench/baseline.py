"""The code a bench measures: this checkout, and a baseline commit to compare with in the same run.

Every bench drives the pipeline through its command line (``python -m pipeline ...``,
``python scheduler.py``) with ``PYTHONPATH`` pointing at the code under test, so one
run measures this checkout and, with ``--baseline REF``, that commit side by side on
the same machine at the same moment (the machine is shared and its speed drifts).
The baseline is a detached git worktree under bench/corpus/ (git-ignored); it uses
this virtualenv's packages, so REF must not need a package this one lacks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "corpus"
# The last commit before the house was reshaped (issue 10): what "before" means in its figures.
DEFAULT_BASELINE = "a8dfb7c"


@dataclass(frozen=True)
class Code:
    """A version of the pipeline: a name for the tables and the folder its package is in."""

    name: str
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        # Byte code cached, as an installed package has it: a shell that sets
        # PYTHONDONTWRITEBYTECODE would have every module of ours compiled at every start.
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**environ, "PYTHONPATH": str(self.root), "PYTHONUNBUFFERED": "1", **extra}

    def pipeline(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", *args]

    def scheduler(self, *args: str) -> list[str]:
        return [sys.executable, str(self.root / "scheduler.py"), *args]


def this_checkout() -> Code:
    return Code("this checkout", ROOT)


def checkout(ref: str) -> Code:
    """A worktree of ``ref`` (made once, reused by later runs)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = CORPUS / f"code-{commit}"
    if not (folder / "pipeline").is_dir():
        CORPUS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(folder), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    _install_dependencies(folder)
    return Code(f"baseline {commit}", folder)


def _install_dependencies(folder: Path) -> None:
    """The baseline's own dependencies, into this environment (both versions run on one
    interpreter): an older commit may need a library this one dropped (pydantic, before
    msgspec took over the settings)."""
    declared = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *declared], check=True)


def add_baseline_option(parser: argparse.ArgumentParser) -> None:
    """``--baseline [REF]``: the same for every bench."""
    parser.add_argument(
        "--baseline",
        metavar="REF",
        nargs="?",
        const=DEFAULT_BASELINE,
        help=f"also measure this commit, side by side (default when given without REF: {DEFAULT_BASELINE})",
    )


def versions(baseline: str | None) -> list[Code]:
    """This checkout, then the baseline when one is asked for."""
    return [this_checkout()] + ([checkout(baseline)] if baseline else [])


def machine_speed() -> float:
    """Seconds for a fixed pure-Python loop: this machine is shared and its speed
    drifts by a third within an hour, so figures are only comparable alongside this."""
    started = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number * number
    return time.perf_counter() - started


def table(rows: list[tuple[str, list[str]]], codes: list[Code]) -> str:
    """Figures side by side, one column per version."""
    width = max(len(name) for name, _ in rows) + 2
    columns = [max(len(code.name), *(len(values[i]) for _, values in rows)) + 2 for i, code in enumerate(codes)]
    lines = [" " * width + "".join(code.name.rjust(w) for code, w in zip(codes, columns, strict=True))]
    for name, values in rows:
        lines.append(name.ljust(width) + "".join(v.rjust(w) for v, w in zip(values, columns, strict=True)))
    return "\n".join(lines)

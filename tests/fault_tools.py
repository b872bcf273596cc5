"""Helpers for driving the real CLI into routine faults: permissions that bind even
root, a small real filesystem, and a snapshot of a folder to compare byte for byte."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _obey_file_modes() -> None:
    """In the child, before exec: root loses the capabilities that let it ignore file
    modes, so chmod 000 means what it says. (A non-root user obeys them anyway.)"""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run(
    cwd: Path,
    *args: str,
    program: tuple[str, ...] = ("-m", "pipeline"),
    obey_modes: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline ARGS`` (or ``program``) in ``cwd``; PIPELINE_* variables are
    not inherited unless given in ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    environment.update(env or {})
    preexec: Callable[[], None] | None = _obey_file_modes if obey_modes else None
    return subprocess.run(
        [sys.executable, *program, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        preexec_fn=preexec,
        check=False,
    )


def assert_one_line(run: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The run failed with ``code`` and said so in exactly one line, without a traceback."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones too): path -> sha256 of its bytes, or "dir"."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/.pipeline-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        ).returncode:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    except OSError:
        return False
    finally:
        probe.rmdir()


@contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. "4m") mounted at ``mount_point`` for the block."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


def fill(disk: Path, *, leave_bytes: int = 0) -> Path:
    """Fill the filesystem of ``disk`` until at most ``leave_bytes`` are free."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = bytes(1 << 16)
    try:
        while True:
            stats = os.statvfs(disk)
            free = stats.f_bavail * stats.f_frsize - leave_bytes
            if free <= 0:
                break
            try:
                os.write(fd, chunk[: min(len(chunk), free)])
            except OSError:  # full
                break
    finally:
        os.close(fd)
    return filler

"""out/ changes whole or not at all: a build stages its files, then publishes them.

A build writes every file it makes into ``out/.staging/`` (hidden, and on the
same filesystem as out/, so a rename is atomic). Only once every file is there
does it publish: it writes a journal (``out/.staging/.publish``, naming the stale
files to delete), moves each staged file into place with a rename (a folder that
out/ lacks yet moves whole, in one rename: a first build makes 50,000 files, and
one rename per folder is some 15x cheaper on ext4 than a rename per file), then
deletes the stale files, and only then the journal. So:

- a failure before the journal (a full or read-only disk, a template error, a
  crash) leaves out/ exactly as it was: the staging folder is discarded;
- a crash during publishing leaves the journal, and the next build rolls it
  forward (``recover``) before it looks at out/: renames are idempotent (a file
  already moved is no longer in the staging folder) and so are deletions.

Why not build a whole new tree and swap a symlink to it: a swap needs a complete
copy of the site for every build, so a release would cost as much as the archive
is large (50,000 files written or hard-linked for one new post). Here a release
renames only the files it made (the released post's and the shared feeds), which
keeps a release as cheap as the next issue needs it to be; and out/ stays a real
folder that the web server and a clinic's backup see as before.

Builds take turns (``build_lock``): one staging folder at a time, so recovery
never mistakes a running build's staging folder for a crashed one's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pipeline.errors import FileFault
from pipeline.faults import display_path, os_fault
from pipeline.files import write_new

STAGING = ".staging"
JOURNAL = ".publish"  # in the staging folder: present once every file is staged
LOCK = "build.lock"  # in state/

_in_process = threading.Lock()  # lockf does not exclude threads of one process


@contextlib.contextmanager
def build_lock(state_dir: Path) -> Iterator[None]:
    """Wait for other builds (threads and processes) on this state folder to finish.

    Taken before anything is read or written, so an unwritable or read-only state
    folder fails the build here, before out/ is touched.
    """
    path = state_dir / LOCK
    with _in_process:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_fault(exc, doing="cannot take the build lock") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks; the kernel drops it if we die
            yield
        finally:
            os.close(fd)


class Staging:
    """The hidden folder one build writes into, and its publishing."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.root = out_dir / STAGING
        self._out_existed = out_dir.is_dir()

    def write(self, rel: str, data: bytes) -> None:
        write_new(f"{self.root}/{rel}", data)

    def discard(self) -> None:
        """Forget everything staged; out/ is as it was (removed again if we made it).
        A publish that began (its journal is written) is left for ``recover`` to finish."""
        if os.path.exists(f"{self.root}/{JOURNAL}"):
            return
        shutil.rmtree(self.root, ignore_errors=True)
        if not self._out_existed:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only if empty: we made it

    def publish(self, drop: Iterable[str], remove: Sequence[str]) -> None:
        """Move every staged file into out/ except ``drop``, then delete ``remove`` from out/."""
        for rel in drop:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.root}/{rel}")
        if not remove and not self.root.is_dir():
            return  # nothing staged, nothing stale
        journal = f"{self.root}/{JOURNAL}"
        try:
            # Written whole, then renamed: a crash leaves either no journal or a complete one.
            write_new(journal + ".tmp", json.dumps({"remove": sorted(remove)}).encode())
            os.replace(journal + ".tmp", journal)
        except OSError as exc:  # nothing has moved yet
            self.discard()
            raise os_fault(exc, path=self.out_dir, doing="cannot start publishing, so nothing was published") from None
        try:
            _finish(self.root, self.out_dir)
        except OSError as exc:
            raise os_fault(
                exc,
                path=self.out_dir,
                doing="publishing stopped half-way (the next build completes it)",
            ) from None


def stage_fault(exc: OSError, out_dir: Path, rel: str) -> FileFault:
    """A file of the build could not be staged: nothing in out/ changed."""
    return os_fault(exc, path=out_dir, doing=f"cannot write {rel}, so nothing was published")


def recover(out_dir: Path) -> None:
    """Before a build looks at out/: finish a publish that a crash interrupted, or
    discard the staging folder of a build that never got to publish."""
    root = out_dir / STAGING
    try:
        if (root / JOURNAL).is_file():
            _finish(root, out_dir)
        elif root.exists():
            shutil.rmtree(root)
        for stale in out_dir.glob(".staging-*"):  # the staging folders of earlier versions
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as exc:
        raise os_fault(
            exc, path=display_path(root), doing="cannot complete or discard an earlier build's staged files"
        ) from None


def _finish(root: Path, out_dir: Path) -> None:
    journal = json.loads((root / JOURNAL).read_bytes())
    _move_tree(str(root), str(out_dir), top=True)
    # Stale files go only after the new ones are in place (the feeds no longer list them).
    for rel in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_dir / rel)
    os.unlink(root / JOURNAL)  # published: from here on the folder is only empty folders
    shutil.rmtree(root)


def _move_tree(source: str, target: str, *, top: bool = False) -> None:
    """Move every file under ``source`` to the same place under ``target``, replacing what
    is there. A folder that ``target`` lacks moves whole; folders go before files, so the
    per-post pages are in place before the feeds that link to them."""
    with os.scandir(source) as found:
        entries = sorted(found, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
    for entry in entries:
        if top and entry.name.startswith(JOURNAL):
            continue
        destination = os.path.join(target, entry.name)
        if entry.is_dir(follow_symlinks=False):
            try:
                os.rename(entry.path, destination)  # target lacks it (or has it empty)
                continue
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            _move_tree(entry.path, destination)
        else:
            os.replace(entry.path, destination)


# --- out/ -----------------------------------------------------------------------------------

_PER_POST_FOLDERS = ("newsletter", "archive", "social")


def tree_stamp(out_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(os.stat(out_dir / name).st_mtime_ns for name in ("", *_PER_POST_FOLDERS))
    except FileNotFoundError:
        return ()


def existing_outputs(out_dir: Path) -> set[str]:
    """Every file in out/ (hidden ones aside), relative to it."""
    found: set[str] = set()

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, f"{prefix}{entry.name}/")
                else:
                    found.add(prefix + entry.name)

    if out_dir.is_dir():
        walk(str(out_dir), "")
    return found

"""The one post cache: what each post file held when it was last read, and the files the
build made of it.

Builds keep it in ``state/build-cache.pickle`` between runs; the scheduler keeps it in
memory for as long as it runs (``pipeline.site.index``), so a release neither lists nor
parses the archive. A whole build writes the file anew; a build of a few posts (a
release) appends a record of the entries it changed, so what it writes does not grow
with the archive.

The file: a header (out/'s tree stamp, the snapshot's length), the pickled snapshot,
then records. A record (its length, a CRC, and out/'s tree stamp once published) is
written before out/ is published and marked after: a record never marked (a crash in
between) or torn ends the file for the reader, and the next append writes over it.
Either way the cache then describes out/ as it was before, which the next build checks
against the files (stat, hash) and out/ (its tree stamp), as it checks any cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
import pickle
import struct
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.faults import os_fault
from pipeline.files import write_new
from pipeline.site.entry import CacheEntry

if TYPE_CHECKING:
    import jinja2

    from pipeline.site.catalog import Catalog

CACHE_VERSION = 7  # 7: snapshot + records; the inode in each stat; parse and render keys apart
NAME = "build-cache.pickle"


@contextlib.contextmanager
def long_lived_objects(*, for_the_process: bool = False) -> Iterator[None]:
    """For making many objects that outlive the build step that makes them and hold no
    reference cycles (a large archive's cache is some 200,000 objects).

    The cycle collector would walk them all as they are made, a third of a no-op build:
    it is paused meanwhile, and switched back on only if it was on.

    ``for_the_process``: they live as long as the process (a command's cache, read once
    and dropped at exit), so they are also frozen (``gc.freeze``): otherwise the collector
    walks them again, three times over, in the steps after the read, another third of a
    no-op build. A long-running process never asks for this: the scheduler replaces its
    cache's objects for weeks, and what it drops must stay collectable.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if for_the_process:
                gc.freeze()
            gc.enable()


_HEADER = struct.Struct("<8sB4qQ")  # magic, how many tree stamps (up to four), the stamps, snapshot length
_MAGIC = b"jpcache\x07"
_RECORD = struct.Struct("<4sIIB4q")  # magic, payload length, its CRC-32, stamp count (or _UNMARKED), stamps
_RECORD_MAGIC = b"jprc"
_UNMARKED = 255  # written, out/ not yet published


def _pack_tree(tree: tuple[int, ...]) -> tuple[int, ...]:
    return (len(tree), *tree, *(0,) * (4 - len(tree)))


class PostCache:
    """Every post file's entry, what the shared files were made of, and out/'s tree stamp.

    Used under the build lock (``pipeline.site.publish.build_lock``) only.
    """

    def __init__(self, settings: Settings, *, for_the_process: bool = False) -> None:
        self.settings = settings
        # Read once by a command that exits after one build: see long_lived_objects.
        self.for_the_process = for_the_process
        self.path = settings.state_dir / NAME
        # What a parse depends on: the settings (not where their file is, which the
        # scheduler and the commands name differently); outputs also depend on the templates.
        self.parse_key = hashlib.sha256(settings.fingerprint()).hexdigest()
        self.render_key = ""
        self.entries: dict[str, CacheEntry] = {}  # by absolute path of the post file
        self.shared_key = ""  # what the feeds, queue and digest were last made of
        self.shared_outputs: tuple[str, ...] = ()
        self.feed_keys: frozenset[str] = frozenset()  # entries whose post keeps its HTML body
        # mtimes of out/ and its per-post folders after the last build: while they are
        # unchanged, nothing was added to or removed from out/ behind our back.
        self.tree: tuple[int, ...] = ()
        self.orphans: set[str] = set()  # files in out/ that no entry claims any more (see refresh)
        self.dirty: set[str] = set()  # entries changed since the file was written
        self.env: jinja2.Environment | None = None  # for render_key's templates, made once
        # The entries indexed, and the time of the build that left them (in memory only:
        # after reading the file, the next build looks at every entry once).
        self.catalog: Catalog | None = None
        self.built_at: datetime | None = None
        self.generation = 0  # changes whenever the entries do
        self._seen: tuple[int, int, int] | None = None  # the file as last read or written
        self._end = 0  # where the next record goes; 0: no snapshot to append to
        self._snapshot = 0  # the snapshot's length

    # --- reading ------------------------------------------------------------------------

    def current(self) -> None:
        """Read the file if it changed since this process last read or wrote it (another
        process built meanwhile), or was never read."""
        try:
            info = os.stat(self.path)
        except OSError:
            seen = None
        else:
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen == self._seen:
            return  # unchanged (or still missing: what is in memory stands)
        self._reset()
        self._seen = seen  # an unusable file is not read again until it changes
        if seen is not None:
            self._read()

    def _reset(self) -> None:
        self.render_key, self.entries, self.shared_key, self.shared_outputs = "", {}, "", ()
        self.feed_keys, self.tree, self.orphans, self.dirty = frozenset(), (), set(), set()
        self.env, self._seen, self._end, self._snapshot = None, None, 0, 0
        self.catalog, self.built_at = None, None
        self.generation += 1

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                info = os.fstat(handle.fileno())
                data = handle.read()
            magic, count, *stamps, length = _HEADER.unpack_from(data)
            if magic != _MAGIC:
                return
            start = _HEADER.size
            with long_lived_objects(for_the_process=self.for_the_process):
                state = pickle.loads(memoryview(data)[start : start + length])
                version, parse_key, out_dir, render_key, entries, shared_key, shared_outputs, feed_keys, built_at = (
                    state
                )
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, struct.error):
            return  # no cache, or one from another version: build from scratch
        if version != CACHE_VERSION or parse_key != self.parse_key or out_dir != str(self.settings.out_dir.resolve()):
            return
        self.render_key, self.entries, self.shared_key = render_key, entries, shared_key
        self.shared_outputs, self.feed_keys, self.built_at = shared_outputs, feed_keys, built_at
        self.tree = tuple(stamps[:count])
        self._snapshot = length
        self._end = self._replay(data, start + length)
        self._seen = (info.st_ino, info.st_size, info.st_mtime_ns)

    def _replay(self, data: bytes, offset: int) -> int:
        """Apply the published records after the snapshot; returns where the last one ends."""
        while offset + _RECORD.size <= len(data):
            magic, length, crc, count, *stamps = _RECORD.unpack_from(data, offset)
            payload = memoryview(data)[offset + _RECORD.size : offset + _RECORD.size + length]
            if magic != _RECORD_MAGIC or count == _UNMARKED or len(payload) != length or zlib.crc32(payload) != crc:
                break
            try:
                with long_lived_objects(for_the_process=self.for_the_process):
                    changes, self.shared_key, self.shared_outputs, self.feed_keys, self.built_at = pickle.loads(payload)
            except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
                break
            for key, entry in changes.items():
                if entry is None:
                    self.entries.pop(key, None)
                else:
                    self.entries[key] = entry
            self.tree = tuple(stamps[:count])
            offset += _RECORD.size + length
        return offset

    def use_templates(self, fingerprint: str) -> None:
        """Outputs made with other templates or settings are stale: their files become
        orphans (pruned or made again by this build); the parses stand."""
        if fingerprint == self.render_key:
            return
        for key, entry in self.entries.items():
            if entry.outputs or entry.snippets is not None:
                self.orphans.update(entry.outputs)
                self.entries[key] = dataclasses.replace(entry, outputs=(), snippets=None)
                self.dirty.add(key)
        self.orphans.update(self.shared_outputs)
        self.render_key, self.shared_key, self.shared_outputs, self.env = fingerprint, "", (), None
        self.catalog = None

    def environment(self) -> jinja2.Environment:
        """The templates these outputs are made with, loaded once for this cache."""
        if self.env is None:
            from pipeline.channels.templating import make_environment  # jinja2: only when something is rendered

            self.env = make_environment(self.settings)
            self.env.auto_reload = False  # a change of template makes a new one (use_templates)
        return self.env

    def claimed(self) -> set[str]:
        """Every file in out/ this cache knows the build made."""
        found = {rel for entry in self.entries.values() for rel in entry.outputs}
        return found | set(self.shared_outputs) | self.orphans

    # --- writing ------------------------------------------------------------------------

    def save(
        self,
        entries: dict[str, CacheEntry],
        shared_key: str,
        shared_outputs: tuple[str, ...],
        feed_keys: frozenset[str],
        built_at: datetime,
        *,
        changed: Iterable[str] | None,
    ) -> Pending:
        """Write the cache this build ends with (before out/ is published); ``commit``
        then marks it as describing out/. ``changed``: the keys whose entries may differ
        from the cache's (with those it changed in memory, ``dirty``), appended as a
        record; None, or nothing to append to: a new snapshot."""
        if changed is not None and self._end:
            changes = {key: entries.get(key) for key in {*changed, *self.dirty}}
            record = (changes, shared_key, shared_outputs, feed_keys, built_at)
            payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
            if self._end + len(payload) < 2 * self._snapshot:  # else the records outgrow what they save
                return _Record(self, payload)
        out_dir = str(self.settings.out_dir.resolve())
        state = (
            CACHE_VERSION,
            self.parse_key,
            out_dir,
            self.render_key,
            entries,
            shared_key,
            shared_outputs,
            feed_keys,
            built_at,
        )
        return _Snapshot(self, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    def adopt(
        self,
        entries: dict[str, CacheEntry],
        shared_key: str,
        shared_outputs: tuple[str, ...],
        feed_keys: frozenset[str],
        tree: tuple[int, ...],
        catalog: Catalog,
        built_at: datetime,
    ) -> None:
        """The build succeeded: this is the cache from now on."""
        self.entries, self.shared_key, self.shared_outputs = entries, shared_key, shared_outputs
        self.feed_keys, self.tree, self.orphans = feed_keys, tree, set()
        self.catalog, self.built_at = catalog, built_at
        self.generation += 1

    def _written(self, end: int, snapshot: int | None = None) -> None:
        self.dirty = set()
        self._end = end
        if snapshot is not None:
            self._snapshot = snapshot
        try:
            info = os.stat(self.path)
        except OSError:
            self._seen = None
        else:
            self._seen = (info.st_ino, info.st_size, info.st_mtime_ns)

    def _fault(self, exc: OSError, doing: str) -> PipelineError:
        return os_fault(exc, path=self.path.parent, doing=doing)


class Pending:
    """A written cache, not yet marked as describing out/."""

    def commit(self, tree: tuple[int, ...]) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError


class _Snapshot(Pending):
    def __init__(self, cache: PostCache, state: bytes) -> None:
        self.cache = cache
        self.length = len(state)
        # One name, not one per process: builds take turns (build_lock), and a file left
        # by a crash is simply written over by the next build.
        self.tmp = f"{cache.path.parent}/.{cache.path.name}.tmp"
        try:
            write_new(self.tmp, _HEADER.pack(_MAGIC, *_pack_tree(()), self.length) + state)
        except OSError as exc:
            self.discard()
            raise cache._fault(exc, f"cannot write {cache.path.name}") from None

    def commit(self, tree: tuple[int, ...]) -> None:
        try:
            fd = os.open(self.tmp, os.O_WRONLY)
            try:
                os.pwrite(fd, _HEADER.pack(_MAGIC, *_pack_tree(tree), self.length), 0)  # overwrites: no new space
            finally:
                os.close(fd)
            os.replace(self.tmp, self.cache.path)
        except OSError as exc:
            self.discard()
            raise self.cache._fault(exc, f"out/ is published, but cannot save {self.cache.path.name}") from None
        self.cache._written(_HEADER.size + self.length, self.length)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class _Record(Pending):
    def __init__(self, cache: PostCache, payload: bytes) -> None:
        self.cache = cache
        self.start = cache._end
        self.end = self.start + _RECORD.size + len(payload)
        head = _RECORD.pack(_RECORD_MAGIC, len(payload), zlib.crc32(payload), _UNMARKED, 0, 0, 0, 0)
        try:
            fd = os.open(cache.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, self.start)  # an unmarked or torn record left by a crash goes
                _pwrite_all(fd, head + payload, self.start)
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard()
            raise cache._fault(exc, f"cannot write {cache.path.name}") from None

    def commit(self, tree: tuple[int, ...]) -> None:
        count, *stamps = _pack_tree(tree)
        try:
            fd = os.open(self.cache.path, os.O_WRONLY)
            try:
                os.pwrite(fd, struct.pack("<B4q", count, *stamps), self.start + _RECORD.size - struct.calcsize("<B4q"))
            finally:
                os.close(fd)
        except OSError as exc:
            raise self.cache._fault(exc, f"out/ is published, but cannot save {self.cache.path.name}") from None
        self.cache._written(self.end)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.truncate(self.cache.path, self.start)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def templates_fingerprint(settings: Settings) -> str:
    """Hash of every template and the settings: any change invalidates the render cache."""
    # Not where the configuration file lives: the scheduler names it by its absolute path,
    # a command by the path it was given, and neither changes an output.
    digest = hashlib.sha256(settings.fingerprint())
    root = settings.templates_dir
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()

"""The local spool of the request log: what a worker appends on the request path, and what the
shipper reads back.

Layout: `<spool_dir>/w-<pid>-<ns>/` per worker process, holding numbered segment files
(`00000001.jsonl`, one JSON record a line), a `lock` file the owner holds an exclusive `flock`
on for its whole life, and `shipped` (the segment and byte offset shipped so far).

Durability: `append` is one `os.write` of a whole line to a file opened with O_APPEND, done before
the sink returns, so the line is in the kernel's page cache and survives the process being killed
(SIGKILL, OOM); `sync` (a background thread every `fsync_interval_ms`) makes it survive a machine
crash too. A directory whose lock nobody holds belongs to a dead process: any worker adopts it,
ships the rest of it, and deletes it. `shipped` is only an optimisation — the store ignores a row it
already has — so it is replaced atomically but never fsynced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_PREFIX: Final = "w-"
_READ_BYTES: Final = 4 * 1024 * 1024


def _segment_name(n: int) -> str:
    return f"{n:08d}.jsonl"


def _segments(directory: Path) -> list[int]:
    out = []
    for p in directory.iterdir():
        if p.suffix == ".jsonl" and p.stem.isdigit():
            out.append(int(p.stem))
    return sorted(out)


class Spool:
    """The writing side: one per worker process, opened lazily on first use."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self.directory: Path | None = None
        self.segment = 0  # number of the segment being written
        self.bytes_written = 0
        self.dirty = False
        self._fd = -1
        self._size = 0
        self._lock_fd = -1
        self._closing: list[int] = []  # finished segments, fsynced and closed by `sync`
        self._guard = threading.Lock()

    @property
    def opened(self) -> bool:
        return self.directory is not None

    def open(self) -> None:
        if self.directory is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{_PREFIX}{os.getpid()}-{time.time_ns()}"
        # Locked under a name no adopter looks at, then renamed: a `w-` directory is never seen
        # unlocked while its owner lives.
        staging = self.root / f".new-{name}"
        staging.mkdir()
        self._lock_fd = os.open(staging / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        directory = self.root / name
        staging.rename(directory)
        self.directory = directory
        self._roll()

    def _roll(self) -> None:
        assert self.directory is not None
        self.segment += 1
        path = self.directory / _segment_name(self.segment)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        with self._guard:
            if self._fd >= 0:
                self._closing.append(self._fd)
            self._fd, self._size = fd, 0

    def append(self, line: bytes) -> None:
        """Write one whole line (ending in a newline). Raises OSError when the disk refuses it;
        the segment is then closed, so a partly written line can only be the last of a segment."""
        if self.directory is None:
            self.open()
        view = memoryview(line)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            self._roll()
            raise
        self._size += len(line)
        self.bytes_written += len(line)
        self.dirty = True
        if self._size >= self.segment_bytes:
            self._roll()

    def sync(self) -> None:
        """fsync what was written (from a thread: it may take milliseconds)."""
        self.dirty = False
        with self._guard:
            fd, closing, self._closing = self._fd, self._closing, []
        for old in closing:
            with contextlib.suppress(OSError):
                os.fsync(old)
            os.close(old)
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def close(self, remove_if_shipped: bool) -> None:
        """Close the files and release the lock; the directory is deleted when every line in it
        is shipped, and otherwise left for the next process to adopt."""
        if self.directory is None:
            return
        self.sync()
        with self._guard:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        if remove_if_shipped:
            shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = -1
        self.directory = None


@dataclass
class Batch:
    lines: list[bytes]
    torn: list[bytes]  # an unterminated tail of a finished segment (a write cut short)
    segment: int
    offset: int  # where the next read starts, once this batch is stored
    nbytes: int


class Cursor:
    """The reading side of one spool directory: the owner's own, or an adopted one."""

    def __init__(self, directory: Path, owner: Spool | None, lock_fd: int = -1) -> None:
        self.directory = directory
        self.owner = owner  # None: adopted; every segment in it is finished
        self._lock_fd = lock_fd
        self.segment, self.offset = self._load_position()

    def _load_position(self) -> tuple[int, int]:
        try:
            seg, off = (self.directory / "shipped").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return 0, 0

    def _finished(self, segment: int) -> bool:
        return self.owner is None or segment < self.owner.segment

    def read(self, max_rows: int) -> Batch | None:
        """The next lines after the shipped position, or None when there is nothing new.
        Fully shipped finished segments are deleted on the way."""
        while True:
            segments = [s for s in _segments(self.directory) if s >= self.segment]
            if not segments:
                return None
            if segments[0] != self.segment:
                self.segment, self.offset = segments[0], 0
            path = self.directory / _segment_name(self.segment)
            # Asked before reading: once the writer has moved on, nothing more lands in this
            # segment, so what the read sees is all there is.
            finished = self._finished(self.segment)
            with path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(_READ_BYTES)
                if len(data) == _READ_BYTES and b"\n" not in data:
                    data += f.readline()  # one line longer than a read
            end = data.rfind(b"\n") + 1
            if end > 0:
                lines = data[:end].split(b"\n")[:-1][:max_rows]
                size = sum(len(x) + 1 for x in lines)
                return Batch(lines, [], self.segment, self.offset + size, size)
            if data and finished:
                return Batch([], [data], self.segment, self.offset + len(data), len(data))
            if not finished:
                return None
            path.unlink(missing_ok=True)
            self.segment, self.offset = self.segment + 1, 0

    def commit(self, batch: Batch) -> None:
        self.segment, self.offset = batch.segment, batch.offset
        tmp = self.directory / "shipped.tmp"
        tmp.write_text(f"{self.segment} {self.offset}\n")
        tmp.replace(self.directory / "shipped")

    def pending_bytes(self) -> int:
        total = 0
        for s in _segments(self.directory):
            if s < self.segment:
                continue
            with contextlib.suppress(OSError):
                size = (self.directory / _segment_name(s)).stat().st_size
                total += size - (self.offset if s == self.segment else 0)
        return total

    def release(self) -> None:
        """An adopted directory fully shipped: delete it and drop its lock."""
        if self.owner is not None:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def adopt_orphans(root: Path, own: Path | None, taken: set[Path]) -> list[Cursor]:
    """Cursors over the spool directories of dead processes (their lock is free). Holding the lock
    from here on makes sure only one live worker ships each of them."""
    out: list[Cursor] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.name.startswith(_PREFIX) or d == own or d in taken or not d.is_dir():
            continue
        try:
            fd = os.open(d / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not d.exists():  # deleted by its adopter between listing and locking
            os.close(fd)
            continue
        out.append(Cursor(d, None, fd))
    return out

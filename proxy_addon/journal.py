"""The proxy's journal: each call is on disk before its client sees the end.

The addon appends a finished call here in the ``response``/``error`` hook,
which mitmproxy runs before it sends the end of the response to the client.
The exporter process (``proxy_addon/exporter.py``) reads the journal, parses
and spools the calls, and deletes what it has spooled. So a proxy or exporter
killed at any moment restarts with every call its clients saw complete on
disk, and the proxy's event loop does no more than one ``write`` per call.

Appends go into the OS page cache at once — safe against the process dying.
A thread fsyncs every ``sync_seconds``, which bounds what a host crash could
lose (PostgreSQL's ``synchronous_commit = off`` trade). Records are length +
CRC framed: the reader waits for a record still being written at the end of
the newest segment, and skips a torn one at the end of an older segment (its
writer died mid-record, before its client got the response's end).

Segments are named by a sequence number; the writer starts a new one when
the current one is large or old, so the reader can delete what it has done.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("tokentrail.proxy.journal")
FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
SUFFIX = ".journal"
CURSOR = "cursor"  # the reader's position: "<segment name> <offset>"


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


class JournalWriter:
    """The proxy's side: append records, roll segments, fsync in the background."""

    def __init__(
        self,
        folder: Path,
        segment_bytes: int = 16 << 20,
        segment_seconds: float = 5.0,
        sync_seconds: float = 1.0,
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        folder.mkdir(parents=True, exist_ok=True)
        # Numbers go on from the newest segment, or from the reader's cursor
        # when it has deleted them all (a lower number would sort before it).
        names = [p.name for p in segments(folder)] + [JournalReader(folder).position.segment]
        newest = max(names)
        self._next_segment = 1 + (int(newest.removesuffix(SUFFIX)) if newest else 0)
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._opened = 0.0
        self._dirty = False
        self._unsynced: list[int] = []  # descriptors of rolled segments to fsync and close
        self.appended = 0
        self._stop = threading.Event()
        self._open_segment()
        self._syncer = threading.Thread(
            target=self._sync_loop, args=(sync_seconds,), name="tokentrail-journal", daemon=True
        )
        self._syncer.start()

    def append(self, record: Any) -> None:
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        frame = FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._size and (
                self._size + len(frame) > self.segment_bytes
                or time.monotonic() - self._opened > self.segment_seconds
            ):
                self._unsynced.append(self._fd)
                self._open_segment()
            os.write(self._fd, frame)
            self._size += len(frame)
            self._dirty = True
            self.appended += 1

    def _open_segment(self) -> None:
        path = self.folder / f"{self._next_segment:020d}{SUFFIX}"
        self._next_segment += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._opened = time.monotonic()

    def _sync_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.sync()

    def sync(self) -> None:
        with self._lock:
            rolled, self._unsynced = self._unsynced, []
            current = os.dup(self._fd) if self._dirty else -1
            self._dirty = False
        for fd in rolled + ([current] if current >= 0 else []):
            os.fsync(fd)
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._syncer.join(5)
        self.sync()
        with self._lock:
            os.close(self._fd)


@dataclass
class Position:
    segment: str  # file name
    offset: int


class JournalReader:
    """The exporter's side: records after the saved cursor, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.position = self._load_cursor()

    def _load_cursor(self) -> Position:
        try:
            name, offset = (self.folder / CURSOR).read_text().split()
            return Position(name, int(offset))
        except (OSError, ValueError):
            return Position("", 0)

    def save(self, position: Position) -> None:
        """Everything before ``position`` is spooled; delete finished segments."""
        self.position = position
        tmp = self.folder / f"{CURSOR}.tmp"
        tmp.write_text(f"{position.segment} {position.offset}")
        tmp.replace(self.folder / CURSOR)
        for path in segments(self.folder):
            if path.name >= position.segment:
                break
            path.unlink(missing_ok=True)

    def read(self, max_records: int, start: Position | None = None) -> tuple[list[Any], Position]:
        """Up to ``max_records`` whole records after ``start`` (default: the
        saved cursor) and the position after them (pass it to ``save`` once
        they are spooled)."""
        found: list[Any] = []
        position = start or self.position
        files = segments(self.folder)
        for index, path in enumerate(files):
            if path.name < position.segment:
                continue
            offset = position.offset if path.name == position.segment else 0
            newest = index == len(files) - 1
            records, offset, torn = _read_from(path, offset, max_records - len(found))
            found += records
            position = Position(path.name, offset)
            if len(found) >= max_records:
                break
            if newest:
                break  # a torn record here may still be being written: wait for it
            if torn:
                log.warning("%s: a torn record at byte %d was skipped", path.name, offset)
            if index + 1 < len(files):
                position = Position(files[index + 1].name, 0)
        return found, position

    def records_behind(self) -> int:
        """Bytes not yet read (for the stats line): a cheap stand-in for a count."""
        total = 0
        for path in segments(self.folder):
            if path.name >= self.position.segment:
                size = path.stat().st_size
                total += size - (self.position.offset if path.name == self.position.segment else 0)
        return total


def _read_from(path: Path, offset: int, limit: int) -> tuple[list[Any], int, bool]:
    """(records, offset after them, whether an incomplete/corrupt record follows)."""
    records: list[Any] = []
    with path.open("rb") as handle:
        handle.seek(offset)
        while len(records) < limit:
            header = handle.read(FRAME.size)
            if len(header) < FRAME.size:
                return records, offset, bool(header)
            length, crc = FRAME.unpack(header)
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return records, offset, True
            records.append(pickle.loads(payload))
            offset += FRAME.size + length
    return records, offset, False


def read_all(folder: Path) -> Iterator[Any]:
    """Every whole record in the journal (tests, inspection)."""
    for path in segments(folder):
        yield from _read_from(path, 0, 1 << 62)[0]

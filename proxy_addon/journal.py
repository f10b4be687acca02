"""The proxy's journal: each call is on disk before its client sees the end.

The addon appends a finished call here in the ``response``/``error`` hook,
which mitmproxy runs before it sends the end of the response to the client;
the export worker releases calls once they are in the spool. A proxy killed
at any moment therefore restarts with every call its clients saw complete
either in the spool or in the journal, and replays the journal.

Appends are one ``write`` each into the OS page cache — a few microseconds on
the event loop, and safe against the process dying. A thread fsyncs every
``sync_seconds``, which bounds what a host crash could lose (PostgreSQL's
``synchronous_commit = off`` trade). Records are length + CRC framed, so a
record cut off by a crash is recognized and skipped: its client never got
the end of its response.

Segments are named by their first ticket; a segment is deleted once every
call in it was released.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("tokentrail.proxy.journal")
FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
SUFFIX = ".journal"


def read_segment(path: Path) -> Iterator[Any]:
    """The whole records of one segment, in order; stops at a torn tail."""
    data = path.read_bytes()
    offset = 0
    while offset + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, offset)
        payload = data[offset + FRAME.size : offset + FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("%s: a torn record at byte %d was skipped", path.name, offset)
            return
        yield pickle.loads(payload)
        offset += FRAME.size + length


class Journal:
    def __init__(
        self, folder: Path, segment_bytes: int = 16 << 20, sync_seconds: float = 1.0
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.roll_released_bytes = 1 << 20
        folder.mkdir(parents=True, exist_ok=True)
        self.left_over = sorted(folder.glob(f"*{SUFFIX}"))  # a previous run's, see recover()
        self._lock = threading.Lock()
        self._next_ticket = 1 + max((int(p.stem) for p in self.left_over), default=0)
        self._closed: list[tuple[int, Path]] = []  # (last ticket, path) of full segments
        self._released = self._next_ticket - 1  # tickets count on from the last run's
        self._fd = -1
        self._path = Path()
        self._size = 0
        self._dirty = False
        self._unsynced: list[int] = []  # descriptors of rolled segments to fsync and close
        self._stop = threading.Event()
        self._open_segment()
        self._syncer = threading.Thread(
            target=self._sync_loop, args=(sync_seconds,), name="tokentrail-journal", daemon=True
        )
        self._syncer.start()

    # -- recovery ----------------------------------------------------------
    def recover(self) -> Iterator[list[Any]]:
        """The calls a previous process journaled, one segment at a time;
        each segment is deleted once the caller has taken the next one."""
        for path in self.left_over:
            calls = list(read_segment(path))
            if calls:
                yield calls
            path.unlink()
        self.left_over = []

    # -- the request path --------------------------------------------------
    def append(self, record: Any) -> int:
        """Write one record; return its ticket for ``release``."""
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        frame = FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            ticket = self._next_ticket
            self._next_ticket += 1
            os.write(self._fd, frame)
            self._size += len(frame)
            self._dirty = True
            if self._size >= self.segment_bytes:
                self._closed.append((ticket, self._path))
                self._unsynced.append(self._fd)
                self._open_segment()
        return ticket

    def release(self, ticket: int) -> None:
        """Every call up to ``ticket`` is in the spool: forget it."""
        with self._lock:
            self._released = max(self._released, ticket)
            done = [path for last, path in self._closed if last <= self._released]
            self._closed = [item for item in self._closed if item[0] > self._released]
            if self._size >= self.roll_released_bytes and self.pending == 0:
                # All caught up: start afresh, so a restart replays little.
                done.append(self._path)
                self._unsynced.append(self._fd)
                self._open_segment()
        for path in done:
            path.unlink(missing_ok=True)

    @property
    def pending(self) -> int:
        """Calls journaled and not yet released."""
        return self._next_ticket - 1 - self._released

    # -- internals ---------------------------------------------------------
    def _open_segment(self) -> None:
        self._path = self.folder / f"{self._next_ticket:020d}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0

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
        """Stop syncing; whatever was not released stays for the next run."""
        self._stop.set()
        self._syncer.join(5)
        self.sync()
        with self._lock:
            os.close(self._fd)
            if self.pending == 0:
                self._path.unlink(missing_ok=True)

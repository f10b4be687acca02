"""An append-only write-ahead log of accepted request bodies.

The collector answers 200 once a body is here (fsynced), before the store has
it; the batching writer checkpoints the highest sequence number it stored, and
a start replays everything after the checkpoint. A crash mid-append leaves a
torn last record, which fails its CRC and is cut off: that request never got
its 200, so nothing acknowledged is lost.

Record: header ``<IIQB`` (payload length, CRC32 of seq+kind+payload, seq,
kind) then the payload. Segments are named by their first seq and deleted once
fully checkpointed.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct("<IIQB")
_SEGMENT_SUFFIX = ".wal"
_CHECKPOINT = "checkpoint"


class WalCorrupt(RuntimeError):
    pass


def _crc(seq: int, kind: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QB", seq, kind)))


def _read_records(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, seq, kind, payload) of each intact record; stops at a torn tail."""
    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc, seq, kind = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        payload = data[offset + _HEADER.size : end]
        if end > len(data) or _crc(seq, kind, payload) != crc:
            return
        yield offset, seq, kind, payload
        offset = end


class WriteAheadLog:
    def __init__(self, folder: Path, fsync: bool = True, segment_bytes: int = 64 << 20) -> None:
        self.folder = folder
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.checkpointed = self._read_checkpoint()
        self.last_seq = self.checkpointed
        self._segment: Path | None = None
        self._file = None
        self._recover()

    # -- opening -----------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{_SEGMENT_SUFFIX}"))

    def _read_checkpoint(self) -> int:
        path = self.folder / _CHECKPOINT
        return int(path.read_text().strip() or 0) if path.exists() else 0

    def _recover(self) -> None:
        """Find the last good record and cut off a torn tail after it."""
        segments = self._segments()
        if not segments:
            return
        last = segments[-1]
        good_end = 0
        for offset, seq, _kind, payload in _read_records(last):
            good_end = offset + _HEADER.size + len(payload)
            self.last_seq = max(self.last_seq, seq)
        if good_end < last.stat().st_size:
            with last.open("r+b") as handle:
                handle.truncate(good_end)
        for segment in segments[:-1]:
            for _offset, seq, _kind, _payload in _read_records(segment):
                self.last_seq = max(self.last_seq, seq)

    # -- writing -----------------------------------------------------------
    def append(self, payload: bytes, kind: int) -> int:
        """Write one record durably; return its sequence number."""
        with self._lock:
            seq = self.last_seq + 1
            if self._file is None or self._file.tell() >= self.segment_bytes:
                self._roll(seq)
            assert self._file is not None
            self._file.write(_HEADER.pack(len(payload), _crc(seq, kind, payload), seq, kind))
            self._file.write(payload)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self.last_seq = seq
            return seq

    def _roll(self, first_seq: int) -> None:
        if self._file is not None:
            self._file.close()
        self._segment = self.folder / f"{first_seq:020d}{_SEGMENT_SUFFIX}"
        self._file = self._segment.open("ab")
        if self.fsync:
            # Make the new file's directory entry durable too.
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def checkpoint(self, seq: int) -> None:
        """Everything up to ``seq`` is in the store: remember it, drop old segments."""
        with self._lock:
            if seq <= self.checkpointed:
                return
            tmp = self.folder / f"{_CHECKPOINT}.tmp"
            tmp.write_text(str(seq))
            if self.fsync:
                with tmp.open("rb") as handle:
                    os.fsync(handle.fileno())
            tmp.replace(self.folder / _CHECKPOINT)
            self.checkpointed = seq
            segments = self._segments()
            # A segment is done when the next one starts at or below seq + 1.
            for current, following in zip(segments, segments[1:], strict=False):
                if int(following.stem) <= seq + 1 and current != self._segment:
                    current.unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------
    def pending(self) -> Iterator[tuple[int, int, bytes]]:
        """(seq, kind, payload) of every record not yet checkpointed, in order."""
        for segment in self._segments():
            for _offset, seq, kind, payload in _read_records(segment):
                if seq > self.checkpointed:
                    yield seq, kind, payload

    def size_bytes(self) -> int:
        """Bytes in the log's segments. A checkpoint on another thread may delete a
        segment between listing and stat: it then counts as empty, never an error."""
        total = 0
        for segment in self._segments():
            try:
                total += segment.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

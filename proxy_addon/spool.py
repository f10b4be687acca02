"""The proxy's on-disk spool: every export goes through it, in order.

Each OTLP request body is one file named by sequence number, written
atomically (temp file, fsync, rename), so a crash leaves whole files only.
A sender thread posts the oldest file to the collector and deletes it on
200; while the collector is down or slow the files wait, and a restarted
proxy sends what the last one left. The spool is bounded: past
``max_bytes`` a new body is dropped, counted and logged — the one place data
can be lost, and never silently.

A body that may already have reached the collector — one a previous process
left, one whose send failed or timed out, one replayed from the journal — is
sent with ``X-Tokentrail-Resend: 1``, and the collector keeps only the rows
it does not have yet: exactly once without a lookup on every request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ingest.otlp import RESEND_HEADER

log = logging.getLogger("tokentrail.proxy.spool")
RESEND_MARK = ".resend"  # in a spooled file's name: it may have been sent before


@dataclass
class SpoolStats:
    spooled: int = 0
    sent: int = 0
    dropped: int = 0
    rejected: int = 0
    send_failures: int = 0


class Spool:
    def __init__(self, folder: Path, max_bytes: int = 512 << 20, fsync: bool = True) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.fsync = fsync
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rejected").mkdir(exist_ok=True)
        for stale in folder.glob("*.tmp"):
            stale.unlink()  # a crash mid-write: that body was never acknowledged
        files = self.files()
        self._seq = int(files[-1].name[:20]) if files else 0
        self._bytes = sum(p.stat().st_size for p in files)
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.stats = SpoolStats()
        if files:
            self.ready.set()

    def files(self) -> list[Path]:
        # Names start with the sequence number, so they sort in spool order.
        return sorted(self.folder.glob("*.otlp"))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, body: bytes, resend: bool = False) -> bool:
        with self._lock:
            if self._bytes + len(body) > self.max_bytes:
                self.stats.dropped += 1
                log.error(
                    "spool full (%d of %d bytes): dropped an export of %d bytes; "
                    "is the collector reachable?",
                    self._bytes,
                    self.max_bytes,
                    len(body),
                )
                return False
            self._seq += 1
            path = self.folder / f"{self._seq:020d}{RESEND_MARK if resend else ''}.otlp"
            tmp = self.folder / f"{self._seq:020d}.tmp"
            with tmp.open("wb") as handle:
                handle.write(body)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            tmp.replace(path)
            self._bytes += len(body)
            self.stats.spooled += 1
        self.ready.set()
        return True

    def remove(self, path: Path, rejected: bool = False) -> None:
        size = path.stat().st_size
        if rejected:
            path.replace(self.folder / "rejected" / path.name)
        else:
            path.unlink()
        with self._lock:
            self._bytes -= size


class Sender(threading.Thread):
    """Posts spooled bodies to the collector, oldest first, with backoff."""

    def __init__(self, spool: Spool, collector_url: str, api_key: str) -> None:
        super().__init__(name="tokentrail-spool-sender", daemon=True)
        self.spool = spool
        self.url = collector_url.rstrip("/") + "/v1/traces"
        self.headers = {
            "Content-Type": "application/x-protobuf",
            "Authorization": f"Bearer {api_key}",
        }
        self.stopping = threading.Event()
        self.client = httpx.Client(timeout=30)
        # Files a previous process left, and files whose send failed: the
        # collector may have stored them already.
        self.maybe_sent = {path.name for path in spool.files()}

    def run(self) -> None:
        backoff = 0.2
        while not self.stopping.is_set():
            files = self.spool.files()
            if not files:
                self.spool.ready.clear()
                if not self.spool.files():
                    self.spool.ready.wait(1.0)
                continue
            if self._send(files[0]):
                backoff = 0.2
            else:
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _send(self, path: Path) -> bool:
        headers = self.headers
        if path.name in self.maybe_sent or RESEND_MARK in path.name:
            headers = {**headers, RESEND_HEADER: "1"}
        try:
            response = self.client.post(self.url, content=path.read_bytes(), headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            self.maybe_sent.add(path.name)
            self.spool.stats.send_failures += 1
            log.warning(
                "collector unreachable (%s); %d exports waiting", exc, len(self.spool.files())
            )
            return False
        if response.status_code == 200:
            self.spool.remove(path)
            self.maybe_sent.discard(path.name)
            self.spool.stats.sent += 1
            return True
        if response.status_code in (400, 413, 415):
            # The collector will never take this body: keep it aside for a person.
            self.spool.remove(path, rejected=True)
            self.maybe_sent.discard(path.name)
            self.spool.stats.rejected += 1
            log.error(
                "collector rejected %s (%d): %s",
                path.name,
                response.status_code,
                response.text[:300],
            )
            return True
        # 401/403 (wrong key), 429/503 (busy), 5xx: keep it and try again.
        self.maybe_sent.add(path.name)
        self.spool.stats.send_failures += 1
        log.warning("collector answered %d: %s", response.status_code, response.text[:300])
        return False

    def stop(self, drain_seconds: float = 5.0) -> None:
        deadline = time.monotonic() + drain_seconds
        while self.spool.files() and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)
        self.stopping.set()
        self.spool.ready.set()
        self.join(5)
        self.client.close()

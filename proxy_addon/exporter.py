"""The proxy's exporter process: journal → parse → spool → collector.

The addon starts it beside mitmdump (``python -m proxy_addon.exporter``), so
parsing, span encoding and sending use another core instead of the proxy's
event loop. It reads the journal from its cursor, spools the calls in
batches, saves the cursor (which deletes finished journal segments) and runs
the spool's sender. A file lock keeps one exporter per data directory: one
that outlived a killed proxy steps aside for the next.

Calls read before this process first saved its cursor may already be in the
spool (the previous exporter died between the two): they are spooled as
possible resends, which the collector stores once.

Its counters go to ``exporter-stats.json`` every second, for the proxy's
stats line.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from ingest.redact import RedactionRules
from proxy_addon.export import ExportCounts, spool_calls
from proxy_addon.journal import JournalReader
from proxy_addon.spool import Sender, Spool

log = logging.getLogger("tokentrail.proxy.exporter")
STATS_FILE = "exporter-stats.json"
LOCK_FILE = "exporter.lock"
BATCH = 256
IDLE_SECONDS = 0.02
# Calls wait up to this long for others to share their OTLP request: at a few
# hundred calls/s the collector then gets a few requests/s, not one per call.
LINGER_SECONDS = 0.25
# Export is never on a client's path, the proxy's event loop always is: when
# the cores are busy the exporter yields to it (at nice 10 the scheduler gives
# it ~1/10 of a normal process's share) and catches up from the journal when
# they are not. Idle cores it still uses in full.
NICE = 10


class Exporter:
    def __init__(
        self,
        folder: Path,
        collector_url: str,
        api_key: str,
        capture_content: bool,
        spool_max_bytes: int,
        parent_pid: int,
    ) -> None:
        self.folder = folder
        self.capture_content = capture_content
        self.parent_pid = parent_pid
        self.rules = RedactionRules.default()
        self.journal = JournalReader(folder / "journal")
        self.spool = Spool(folder / "spool", spool_max_bytes)
        self.sender = Sender(self.spool, collector_url, api_key)
        self.counts = ExportCounts()
        self.stopping = threading.Event()

    def run(self) -> None:
        self.sender.start()
        resend = True  # until our first saved cursor
        last_stats = 0.0
        pending: list[Any] = []
        first_at = 0.0
        position = self.journal.position  # read up to here; saved once spooled
        while True:
            calls, position = self.journal.read(BATCH - len(pending), position)
            if calls and not pending:
                first_at = time.monotonic()
            pending += calls
            lingered = time.monotonic() - first_at >= LINGER_SECONDS
            if pending and (len(pending) >= BATCH or lingered or self.stopping.is_set()):
                spool_calls(
                    pending, self.spool, self.rules, self.capture_content, self.counts, resend
                )
                pending = []
            if not pending and position != self.journal.position:
                self.journal.save(position)
                resend = False
            if time.monotonic() - last_stats > 1.0:
                self.write_stats()
                last_stats = time.monotonic()
            if not calls:
                if self.stopping.is_set() and not pending:
                    break  # asked to stop and the journal is drained
                if os.getppid() != self.parent_pid:
                    log.warning("the proxy is gone; the next exporter resumes from the cursor")
                    break
                time.sleep(IDLE_SECONDS)
        self.sender.stop()
        self.write_stats()

    def write_stats(self) -> None:
        stats = {
            **asdict(self.counts),
            **asdict(self.spool.stats),
            "journal_bytes_behind": self.journal.records_behind(),
            "spool_bytes": self.spool.size_bytes,
        }
        tmp = self.folder / f"{STATS_FILE}.tmp"
        tmp.write_bytes(orjson.dumps(stats))
        tmp.replace(self.folder / STATS_FILE)


def read_stats(folder: Path) -> dict[str, int]:
    try:
        return orjson.loads((folder / STATS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="<data-dir>/proxy")
    parser.add_argument("--collector-url", required=True)
    parser.add_argument("--no-content", action="store_true")
    parser.add_argument("--spool-max-mb", type=int, default=512)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[exporter] %(message)s")
    try:
        os.nice(NICE)
    except OSError:
        log.warning("could not lower the exporter's priority; it competes with the proxy")
    args.folder.mkdir(parents=True, exist_ok=True)
    lock = (args.folder / LOCK_FILE).open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # wait for an exporter a killed proxy left behind
    exporter = Exporter(
        args.folder,
        args.collector_url,
        os.environ.get("TOKENTRAIL_API_KEY", ""),
        not args.no_content,
        args.spool_max_mb << 20,
        args.parent_pid,
    )
    # SIGTERM (the proxy stopping) and SIGINT (Ctrl-C to the terminal's
    # process group): drain the journal, give the sender a moment, exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: exporter.stopping.set())
    exporter.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

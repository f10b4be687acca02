"""The batching writer: WAL first, then the store in size- and time-bounded batches.

``accept`` makes a request durable (WAL append) and queues its rows in one
step, so queue order is WAL order and a checkpoint after a stored batch
covers exactly what was stored. A failing store leaves batches queued and
retried with backoff; the WAL still holds them should the process die.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from ingest.dedupe import batch_time_range, batch_trace_ids, merge_double_captures
from ingest.pipeline import TABLES, TableBatch
from ingest.store import Store, query_rows
from ingest.wal import WriteAheadLog

log = logging.getLogger("tokentrail.writer")


class QueueFull(RuntimeError):
    """The store is behind; the caller should answer 503 with Retry-After."""


@dataclass
class WriterStats:
    accepted_rows: int = 0
    stored_rows: int = 0
    replayed_records: int = 0
    store_failures: int = 0
    unpriced_calls: int = 0
    last_error: str = ""
    flushes: int = 0
    merged_calls: int = 0
    durations: list[float] = field(default_factory=list)


class BatchWriter:
    def __init__(
        self,
        store: Store,
        wal: WriteAheadLog,
        *,
        max_rows: int = 20_000,
        max_seconds: float = 1.0,
        queue_max_rows: int = 500_000,
    ) -> None:
        self.store = store
        self.wal = wal
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.queue_max_rows = queue_max_rows
        self.stats = WriterStats()
        self._queue: deque[tuple[int, TableBatch]] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._urgent = False  # flush() asked not to wait for a full batch
        self._thread = threading.Thread(target=self._run, name="tokentrail-writer", daemon=True)

    # -- intake ------------------------------------------------------------
    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def accept(self, payload: bytes, kind: int, batch: TableBatch) -> int:
        """Durably log the request and queue its rows; return its WAL seq."""
        with self._cond:
            if self._queued_rows + batch.rows > self.queue_max_rows and self._queued_rows:
                raise QueueFull(f"{self._queued_rows} rows are waiting for the store")
            seq = self.wal.append(payload, kind)
            self._queue.append((seq, batch))
            self._queued_rows += batch.rows
            self.stats.accepted_rows += batch.rows
            self.stats.unpriced_calls += batch.unpriced_calls
            if self._queued_rows >= self.max_rows:
                self._cond.notify_all()
        return seq

    # -- flushing ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _take_batch(self) -> list[tuple[int, TableBatch]]:
        with self._cond:
            deadline = time.monotonic() + self.max_seconds
            while not (self._stopping or self._urgent) and self._queued_rows < self.max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[tuple[int, TableBatch]] = []
            rows = 0
            for seq, batch in self._queue:
                if taken and rows + batch.rows > self.max_rows:
                    break
                taken.append((seq, batch))
                rows += batch.rows
            self._urgent = bool(self._urgent and len(taken) < len(self._queue))
            return taken

    def _run(self) -> None:
        backoff = 0.1
        while True:
            taken = self._take_batch()
            if not taken:
                if self._stopping:
                    return
                continue
            try:
                # After a failure, part of the batch may be in already (one
                # table inserted, the next refused): check every row then.
                self._store(taken, retrying=backoff > 0.1)
            except Exception as exc:  # the store is down or refusing: keep and retry
                self.stats.store_failures += 1
                self.stats.last_error = str(exc)[:500]
                log.warning("store write failed, will retry in %.1fs: %s", backoff, exc)
                with self._cond:
                    if self._stopping:
                        return  # the WAL replays these on the next start
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            with self._cond:
                for _ in taken:
                    _, batch = self._queue.popleft()
                    self._queued_rows -= batch.rows
                self._cond.notify_all()

    def _store(self, taken: list[tuple[int, TableBatch]], retrying: bool = False) -> None:
        started = time.perf_counter()
        batches = [batch for _, batch in taken]
        if retrying or any(batch.maybe_stored for batch in batches):
            batches = without_duplicates(self.store, batches, check_all=retrying)
        write_tables(self.store, batches)
        self.wal.checkpoint(taken[-1][0])
        self._merge_twins(batches)
        self.stats.stored_rows += sum(batch.rows for _, batch in taken)
        self.stats.flushes += 1
        self.stats.durations = (self.stats.durations + [time.perf_counter() - started])[-100:]

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything accepted so far is stored (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue:
                self._urgent = True
                self._cond.notify_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.wal.close()

    def _merge_twins(self, batches: list[TableBatch]) -> None:
        """Proxy + SDK reports of one call become one row (ingest/dedupe.py).
        The batch is already stored; a failed merge is retried by a later one."""
        calls = [b.tables["llm_calls"] for b in batches if b.tables["llm_calls"].num_rows]
        if not calls:
            return
        traces = sorted({t for table in calls for t in batch_trace_ids(table)})
        ranges = [batch_time_range(table) for table in calls]
        first, last = min(r[0] for r in ranges), max(r[1] for r in ranges)
        try:
            self.stats.merged_calls += merge_double_captures(self.store, traces, first, last)
        except Exception as exc:
            log.warning("merging proxy and SDK reports failed: %s", exc)

    # -- replay ------------------------------------------------------------
    def replay(self, process: Callable[[bytes, int], TableBatch]) -> int:
        """Store WAL records left from a previous run, skipping rows the store
        already has (the crash came between the insert and the checkpoint).
        Records go in batches of up to ``max_rows``: one lookup and one insert
        per batch, so a restart behind a long WAL is quick."""
        replayed = 0
        pending: list[tuple[int, TableBatch]] = []

        def store_pending() -> None:
            batch = concat_batches([batch for _, batch in pending])
            write_tables(self.store, without_duplicates(self.store, [batch], check_all=True))
            self.wal.checkpoint(pending[-1][0])
            self._merge_twins([batch])
            pending.clear()

        for seq, kind, payload in self.wal.pending():
            pending.append((seq, process(payload, kind)))
            replayed += 1
            if sum(batch.rows for _, batch in pending) >= self.max_rows:
                store_pending()
        if pending:
            store_pending()
        self.stats.replayed_records += replayed
        return replayed


def write_tables(store: Store, batches: list[TableBatch]) -> None:
    for name in TABLES:
        parts = [b.tables[name] for b in batches if b.tables[name].num_rows]
        if parts:
            store.insert_arrow(name, pa.concat_tables(parts))


_IDENTITY = {
    "spans": "span_id",
    "llm_calls": "span_id",
    "tool_calls": "concat(span_id, ':', tool_call_id)",
}


def _identity_values(name: str, table: pa.Table) -> list[str]:
    spans = table.column("span_id").to_pylist()
    if name != "tool_calls":
        return spans
    calls = table.column("tool_call_id").to_pylist()
    return [f"{s}:{c}" for s, c in zip(spans, calls, strict=True)]


def without_duplicates(
    store: Store, batches: list[TableBatch], check_all: bool = False
) -> list[TableBatch]:
    """Drop rows of resent batches (or of all, with ``check_all``) that the
    store has, or that an earlier row of this write carries."""
    seen: dict[str, set[str]] = {name: set() for name in TABLES}
    kept: list[TableBatch] = []
    for batch in batches:
        if check_all or batch.maybe_stored:
            batch = without_stored(store, batch)
            tables = {}
            for name, table in batch.tables.items():
                first = []
                for key in _identity_values(name, table) if table.num_rows else []:
                    first.append(key not in seen[name])
                    seen[name].add(key)
                tables[name] = table.filter(pa.array(first, pa.bool_())) if first else table
            batch = TableBatch(tables=tables, unpriced_calls=batch.unpriced_calls)
        else:
            for name, table in batch.tables.items():
                if table.num_rows:
                    seen[name].update(_identity_values(name, table))
        kept.append(batch)
    return kept


def concat_batches(batches: list[TableBatch]) -> TableBatch:
    return TableBatch(
        tables={name: pa.concat_tables([b.tables[name] for b in batches]) for name in TABLES},
        unpriced_calls=sum(b.unpriced_calls for b in batches),
    )


def without_stored(store: Store, batch: TableBatch) -> TableBatch:
    kept: dict[str, pa.Table] = {}
    for name, table in batch.tables.items():
        if table.num_rows == 0:
            kept[name] = table
            continue
        keys = _identity_values(name, table)
        traces = sorted(set(table.column("trace_id").to_pylist()))
        stored = {
            row["k"]
            for row in query_rows(
                store,
                f"SELECT {_IDENTITY[name]} AS k FROM {name} "
                "WHERE trace_id IN {traces:Array(String)} AND k IN {keys:Array(String)}",
                {"traces": traces, "keys": keys},
            )
        }
        mask = pa.array([key not in stored for key in keys])
        kept[name] = table.filter(mask)
    return TableBatch(tables=kept, unpriced_calls=batch.unpriced_calls)

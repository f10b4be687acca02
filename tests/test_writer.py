"""The batching writer: durable before acknowledged, stored once, retried on failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ingest.migrate import migrate
from ingest.otlp import decode_protobuf
from ingest.pipeline import PipelineConfig, TableBatch, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionRules
from ingest.store import ChdbStore, Store, query_rows
from ingest.wal import WriteAheadLog
from ingest.writer import BatchWriter, QueueFull, write_tables

CONFIG = PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())


def otlp_body(first: int, count: int) -> bytes:
    """A protobuf OTLP request with ``count`` GenAI chat spans."""
    spans = []
    for i in range(first, first + count):
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
        }
        spans.append(
            Span(
                trace_id=(i + 1).to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name="chat",
                start_time_unix_nano=1_795_000_000_000_000_000,
                end_time_unix_nano=1_795_000_001_000_000_000,
                attributes=[
                    KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()
                ]
                + [KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=i + 1))],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def process(body: bytes, _kind: int = 1) -> TableBatch:
    return process_spans(decode_protobuf(body)["spans"], CONFIG)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    opened = ChdbStore(tmp_path / "chdb")
    migrate(opened)
    yield opened
    opened.close()


def counts(store: Store) -> tuple[int, int, int]:
    row = query_rows(
        store,
        "SELECT (SELECT count() FROM spans) AS s, (SELECT count() FROM llm_calls) AS c, "
        "(SELECT uniqExact(span_id) FROM llm_calls) AS u",
    )[0]
    return row["s"], row["c"], row["u"]


def test_accepted_batches_reach_the_store_and_the_wal_is_checkpointed(
    store: Store, tmp_path: Path
) -> None:
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    writer = BatchWriter(store, wal, max_rows=50, max_seconds=0.05)
    writer.start()
    for n in range(5):
        body = otlp_body(n * 10, 10)
        writer.accept(body, 1, process(body))
    assert writer.flush(10)
    assert counts(store) == (50, 50, 50)
    assert list(wal.pending()) == []
    writer.stop()


def test_crash_after_insert_before_checkpoint_replays_without_duplicates(
    store: Store, tmp_path: Path
) -> None:
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    first, second = otlp_body(0, 7), otlp_body(7, 5)
    wal.append(first, 1)
    wal.append(second, 1)
    # The previous process stored the first request, then died before its checkpoint.
    write_tables(store, [process(first)])
    wal.close()

    writer = BatchWriter(store, WriteAheadLog(tmp_path / "wal", fsync=False))
    assert writer.replay(process) == 2
    assert counts(store) == (12, 12, 12)
    assert list(writer.wal.pending()) == []
    assert writer.replay(process) == 0  # a second start has nothing left to do


class FlakyStore:
    """A store that fails its first ``failures`` inserts, like a server that is restarting."""

    backend = "flaky"
    database = "x"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inserted: list[pa.Table] = []
        self.lock = threading.Lock()

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError("connection refused")
            if table == "llm_calls":
                self.inserted.append(data)

    def command(self, sql: str, params=None) -> None: ...
    def query_arrow(self, sql: str, params=None) -> pa.Table:
        return pa.table({})

    def close(self) -> None: ...


def test_store_failures_are_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    store = FlakyStore(failures=3)
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    writer = BatchWriter(store, wal, max_rows=1000, max_seconds=0.01)  # type: ignore[arg-type]
    writer.start()
    body = otlp_body(0, 20)
    writer.accept(body, 1, process(body))
    assert writer.flush(20)
    assert sum(t.num_rows for t in store.inserted) == 20
    assert writer.stats.store_failures == 3 and "refused" in writer.stats.last_error
    writer.stop()


def test_a_full_queue_refuses_before_logging(tmp_path: Path) -> None:
    store = FlakyStore(failures=10**6)  # the store never comes back
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    writer = BatchWriter(store, wal, max_rows=10, max_seconds=0.01, queue_max_rows=30)  # type: ignore[arg-type]
    body = otlp_body(0, 10)  # 20 rows: 10 spans + 10 calls
    writer.accept(body, 1, process(body))
    with pytest.raises(QueueFull):
        writer.accept(body, 1, process(body))
    assert [seq for seq, _, _ in wal.pending()] == [1]  # the refused request was not logged


def test_a_resent_batch_stores_only_the_rows_the_store_lacks(store: Store, tmp_path: Path) -> None:
    writer = BatchWriter(store, WriteAheadLog(tmp_path / "wal", fsync=False), max_seconds=0.05)
    writer.start()
    first = otlp_body(0, 6)
    writer.accept(first, 1, process(first))
    assert writer.flush(10)
    # The sender did not see our 200 and sends the same body again, plus a
    # body overlapping it, both in one write.
    again, overlap = process(first), process(otlp_body(4, 6))
    again.maybe_stored = overlap.maybe_stored = True
    writer.accept(first, 1, again)
    writer.accept(first, 1, overlap)
    assert writer.flush(10)
    assert counts(store) == (10, 10, 10)
    writer.stop()


class FailsBetweenTables:
    """The real store, except that the first ``llm_calls`` insert fails after
    ``spans`` went in: a write that failed half way."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failed = False

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if table == "llm_calls" and not self.failed:
            self.failed = True
            raise RuntimeError("connection reset")
        self.store.insert_arrow(table, data)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def test_a_write_that_failed_half_way_is_retried_without_duplicates(
    store: Store, tmp_path: Path
) -> None:
    flaky = FailsBetweenTables(store)
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    writer = BatchWriter(flaky, wal, max_seconds=0.05)  # type: ignore[arg-type]
    writer.start()
    body = otlp_body(0, 8)
    writer.accept(body, 1, process(body))
    assert writer.flush(20)
    assert flaky.failed and writer.stats.store_failures == 1
    assert counts(store) == (8, 8, 8)
    writer.stop()


def test_a_long_wal_replays_in_batches_without_duplicates(store: Store, tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    bodies = [otlp_body(n * 10, 10) for n in range(30)]
    for body in bodies + bodies[:2]:  # a sender resent two requests
        wal.append(body, 1)
    write_tables(store, [process(bodies[0])])  # stored before the crash
    wal.close()
    writer = BatchWriter(store, WriteAheadLog(tmp_path / "wal", fsync=False), max_rows=100)
    assert writer.replay(process) == 32
    assert counts(store) == (300, 300, 300)
    assert list(writer.wal.pending()) == []

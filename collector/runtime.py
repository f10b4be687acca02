"""Everything the collector process owns, opened once at start.

The collector is the one process that owns the store (chDB locks its
directory to one process); routers reach it through ``app.state.runtime``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from analytics.config import AnalyticsConfig
from analytics.runner import JobRunner
from analytics.scheduler import JobScheduler
from collector.auth import KeyRing, ensure_admin_key
from collector.decode_pool import DecodePool, pipeline_config
from ingest.audit import AuditLog
from ingest.audit_chain import ANCHOR_FILE, AnchoredAuditLog, check_chain_on_start
from ingest.faults import with_faults
from ingest.forward import Forwarder, ForwardingStore, open_forwarder
from ingest.migrate import apply_content_ttl, apply_table_ttl, migrate
from ingest.otlp import decode_request
from ingest.pipeline import PipelineConfig, TableBatch, process_spans
from ingest.retention import RetentionJob
from ingest.store import Store, open_store
from ingest.wal import WriteAheadLog
from ingest.writer import BatchWriter
from tokentrail.settings import Settings

log = logging.getLogger("tokentrail.collector")

# WAL record kinds: how to decode a logged body again on replay.
KIND_PROTOBUF = 1
KIND_JSON = 2
KIND_GZIP = 4


def wal_kind(content_type: str, gzipped: bool) -> int:
    kind = KIND_JSON if "json" in content_type else KIND_PROTOBUF
    return kind | (KIND_GZIP if gzipped else 0)


@dataclass
class ReceiveCounters:
    requests: int = 0
    spans: int = 0
    rejected_spans: int = 0
    bad_requests: int = 0
    refused_busy: int = 0


@dataclass
class Runtime:
    settings: Settings
    store: Store
    keys: KeyRing
    audit: AuditLog
    pipeline: PipelineConfig
    writer: BatchWriter
    # Receive-stage counters for /metrics (the writer keeps its own).
    received: ReceiveCounters = field(default_factory=lambda: ReceiveCounters())
    # Compliance: forwarding of stored batches and the audited retention purge.
    forwarder: Forwarder | None = None
    retention: RetentionJob | None = None
    # Analytics: the jobs (run on demand) and the thread that runs them every few minutes.
    jobs: JobRunner | None = None
    scheduler: JobScheduler | None = None
    # Where OTLP requests are decoded and processed (worker processes or here).
    decoder: DecodePool | None = None

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.data_dir, settings.clickhouse_url, settings.database)
        store = with_faults(store, settings.faults_file)  # the store itself unless configured
        applied = migrate(store)
        if applied:
            log.info("applied schema migrations %s", applied)
        apply_content_ttl(store, settings.content_ttl_days)
        apply_table_ttl(store, settings.retention_days, settings.content_ttl_days)
        keys = KeyRing(store)
        audit = AnchoredAuditLog(store, settings.data_dir / ANCHOR_FILE)
        check_chain_on_start(audit)
        if ensure_admin_key(keys, settings.admin_key_path):
            audit.append("collector", "admin", "key.create", "admin", {"reason": "first start"})
            log.info("created an admin key in %s", settings.admin_key_path)
        pipeline = pipeline_config(settings)
        analytics = AnalyticsConfig.from_settings(settings)  # a bad budgets file stops start-up
        forwarder = open_forwarder(settings)
        writer = BatchWriter(
            ForwardingStore(store, forwarder) if forwarder else store,
            WriteAheadLog(settings.wal_dir, fsync=settings.wal_fsync),
            max_rows=settings.batch_max_rows,
            max_seconds=settings.batch_max_seconds,
            queue_max_rows=settings.queue_max_rows,
        )
        runtime = cls(settings, store, keys, audit, pipeline, writer)
        runtime.forwarder = forwarder
        runtime.retention = RetentionJob(
            store,
            audit,
            settings.retention_days,
            settings.content_ttl_days,
            settings.retention_purge_seconds,
        )
        runtime.retention.start()
        replayed = writer.replay(runtime.process_logged)
        if replayed:
            log.info("replayed %d requests from the write-ahead log", replayed)
        writer.start()
        runtime.decoder = DecodePool(settings, pipeline)
        runtime.jobs = JobRunner(store, analytics, pipeline.prices)
        runtime.scheduler = JobScheduler(runtime.jobs, analytics.interval_s)
        runtime.scheduler.start()
        return runtime

    def process_logged(self, payload: bytes, kind: int) -> TableBatch:
        content_type = "application/json" if kind & KIND_JSON else "application/x-protobuf"
        encoding = "gzip" if kind & KIND_GZIP else None
        decoded = decode_request(
            payload, content_type, encoding, max_bytes=self.settings.max_request_bytes
        )
        return process_spans(decoded["spans"], self.pipeline)

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.retention is not None:
            self.retention.stop()
        self.writer.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
        self.store.close()

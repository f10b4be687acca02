"""Decode and process OTLP requests in worker processes.

Decoding, normalizing, pricing and redacting are pure-Python CPU work, and
in one process they queue behind one GIL with everything else the collector
does (HTTP, the WAL, the store's inserts, the jobs). With
``TOKENTRAIL_DECODE_WORKERS`` > 0 each request's body goes to a worker process,
which returns the Arrow tables ready for the store — so ingest uses the
machine's cores, as the OpenTelemetry Collector's receivers do. 0 keeps it
in the collector's own process (tests, one-core machines).

Workers are spawned, not forked (the parent runs chDB's threads), and build
their pipeline from the same settings, so their output is the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import anyio

from ingest.otlp import decode_request
from ingest.pipeline import PipelineConfig, TableBatch, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionPolicy, RedactionRules
from tokentrail.settings import Settings

log = logging.getLogger("tokentrail.decode")


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        prices=PriceBook.load(settings.prices_file),
        redaction=RedactionRules.default(settings.redaction_patterns),
        policy=RedactionPolicy(settings.redaction_default_mode, settings.redaction_team_modes),
    )


@dataclass
class Processed:
    """One request, decoded and run through the pipeline."""

    batch: TableBatch
    spans: int
    rejected: int
    errors: list[str]


def decode_and_process(
    config: PipelineConfig, body: bytes, content_type: str, encoding: str | None, max_bytes: int
) -> Processed:
    decoded = decode_request(body, content_type, encoding, max_bytes=max_bytes)
    batch = process_spans(decoded["spans"], config)
    return Processed(batch, len(decoded["spans"]), decoded["rejected"], decoded["errors"])


# -- inside a worker process --------------------------------------------------
_worker_config: PipelineConfig | None = None


def _start_worker(settings: Settings) -> None:
    global _worker_config
    _worker_config = pipeline_config(settings)


def _in_worker(body: bytes, content_type: str, encoding: str | None, max_bytes: int) -> Processed:
    assert _worker_config is not None
    return decode_and_process(_worker_config, body, content_type, encoding, max_bytes)


# -- in the collector ---------------------------------------------------------
class DecodePool:
    """Runs ``decode_and_process`` in ``workers`` processes, or in the
    caller's thread (one at a time) when ``workers`` is 0."""

    def __init__(self, settings: Settings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config
        self.workers = settings.decode_workers
        # In-process, requests contending for the GIL made throughput drop
        # by a quarter: one at a time decodes, whichever transport brought it.
        self._one_at_a_time = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        # Threads the HTTP receiver lets into accept_export: the pool's width,
        # plus one so a request's WAL fsync overlaps the next one's decoding.
        self.limiter = anyio.CapacityLimiter(max(self.workers, 1) + 1)
        if self.workers:
            self._executor = self._new_executor()
            # Start the workers now, not on the first request.
            for future in [self._executor.submit(int) for _ in range(self.workers)]:
                future.result()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.settings,),
        )

    def process(self, body: bytes, content_type: str, encoding: str | None) -> Processed:
        max_bytes = self.settings.max_request_bytes
        if self._executor is None:
            with self._one_at_a_time:
                return decode_and_process(self.config, body, content_type, encoding, max_bytes)
        try:
            return self._executor.submit(
                _in_worker, body, content_type, encoding, max_bytes
            ).result()
        except BrokenProcessPool:
            # A worker died (out of memory, killed): start new ones and do
            # this request here rather than fail it.
            log.error("a decode worker died; starting new workers")
            self._executor = self._new_executor()
            return decode_and_process(self.config, body, content_type, encoding, max_bytes)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

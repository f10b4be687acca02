"""GET /metrics: the collector's own health in Prometheus text format.

Scrape it with a key (``authorization: {credentials: <key>}`` in the scrape
config); counters only, never data.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from collector.auth import Caller
from collector.runtime import Runtime

router = APIRouter(tags=["engineer"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_text(runtime: Runtime) -> str:
    received = runtime.received
    writer = runtime.writer.stats
    durations = writer.durations or [0.0]
    metrics: list[tuple[str, str, str, float]] = [
        ("tokentrail_otlp_requests_total", "counter", "OTLP requests accepted", received.requests),
        ("tokentrail_spans_received_total", "counter", "spans accepted", received.spans),
        (
            "tokentrail_spans_rejected_total",
            "counter",
            "spans rejected as invalid",
            received.rejected_spans,
        ),
        (
            "tokentrail_bad_requests_total",
            "counter",
            "OTLP requests refused as malformed",
            received.bad_requests,
        ),
        (
            "tokentrail_busy_refusals_total",
            "counter",
            "OTLP requests refused with 503 (queue full)",
            received.refused_busy,
        ),
        (
            "tokentrail_rows_accepted_total",
            "counter",
            "rows logged to the WAL",
            writer.accepted_rows,
        ),
        (
            "tokentrail_rows_stored_total",
            "counter",
            "rows written to the store",
            writer.stored_rows,
        ),
        (
            "tokentrail_wal_replayed_total",
            "counter",
            "WAL records replayed at start",
            writer.replayed_records,
        ),
        (
            "tokentrail_store_failures_total",
            "counter",
            "failed store writes (retried)",
            writer.store_failures,
        ),
        (
            "tokentrail_unpriced_calls_total",
            "counter",
            "model calls with no known price",
            writer.unpriced_calls,
        ),
        ("tokentrail_merged_calls_total", "counter", "proxy+SDK twins merged", writer.merged_calls),
        (
            "tokentrail_queue_rows",
            "gauge",
            "rows waiting for the store",
            runtime.writer.queued_rows,
        ),
        (
            "tokentrail_wal_bytes",
            "gauge",
            "bytes in the write-ahead log",
            runtime.writer.wal.size_bytes(),
        ),
        (
            "tokentrail_store_flush_seconds_last",
            "gauge",
            "duration of the last store flush",
            durations[-1],
        ),
        (
            "tokentrail_store_flush_seconds_max",
            "gauge",
            "longest of the last 100 store flushes",
            max(durations),
        ),
    ]
    for name, seconds in sorted(getattr(runtime, "job_durations", {}).items()):
        metrics.append(
            (
                f"tokentrail_job_seconds_{name}",
                "gauge",
                f"duration of the last {name} job run",
                seconds,
            )
        )
    lines = []
    for name, kind, help_text, value in metrics:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


@router.get(
    "/metrics",
    summary="Collector health in Prometheus text format",
    response_class=PlainTextResponse,
)
def metrics(request: Request, _caller: Caller("engineer")) -> PlainTextResponse:
    return PlainTextResponse(prometheus_text(request.app.state.runtime), media_type=PROMETHEUS_TEXT)

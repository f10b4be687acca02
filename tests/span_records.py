"""Decoded spans (``SpanRecord``) for dialect tests, shaped as ``ingest.otlp`` makes them."""

from __future__ import annotations

from typing import Any

from ingest.records import EventRecord, SpanRecord

TRACE = "0af7651916cd43dd8448eb211c80319c"
START_NS = 1_795_000_000_000_000_000


def span_record(
    attributes: dict[str, Any],
    *,
    name: str = "span",
    span_id: str = "00000000000000a1",
    parent: str = "",
    start_ms: int = 0,
    duration_ms: int = 250,
    status: str = "unset",
    events: list[EventRecord] | None = None,
    resource: dict[str, Any] | None = None,
    scope: str = "test",
    trace_id: str = TRACE,
) -> SpanRecord:
    start = START_NS + start_ms * 1_000_000
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind="client",
        start_ns=start,
        end_ns=start + duration_ms * 1_000_000,
        status=status,
        status_message="",
        attributes=attributes,
        resource=resource or {"service.name": "app"},
        events=events or [],
        scope_name=scope,
    )


def event(name: str, attributes: dict[str, Any] | None = None, at_ms: int = 0) -> EventRecord:
    return EventRecord(name=name, time_ns=START_NS + at_ms * 1_000_000, attributes=attributes or {})

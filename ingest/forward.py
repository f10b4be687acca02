"""Forwarding: stored data, as stored (redacted), to an OTLP endpoint or a SIEM webhook.

``ForwardingStore`` wraps the store the batching writer writes to: after a
batch of ``spans``, ``llm_calls`` or ``tool_calls`` is stored, its Arrow table
is handed to ``Forwarder.submit``, which only puts it on a bounded queue. A
thread of its own encodes and sends: spans as OTLP/HTTP protobuf to the OTLP
target, call rows as JSON to the webhook. A full queue drops the batch (and
counts it); a failing target is retried a few times, then counted. Neither
ever slows or fails ingest. Delivery is at least once: a write-ahead-log
replay after a crash forwards its rows again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.dialects import CONTENT_ATTRIBUTE_KEYS
from ingest.export import json_ready_rows
from ingest.migrate import CONTENT_COLUMNS
from ingest.store import Params, Store

log = logging.getLogger("tokentrail.forward")

CALL_TABLES = ("llm_calls", "tool_calls")
_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"ok": 1, "error": 2}
_ATTEMPTS = 3


@dataclass
class TargetStats:
    url: str
    sent_batches: int = 0
    sent_rows: int = 0
    failed_batches: int = 0
    dropped_batches: int = 0
    last_error: str = ""
    last_sent_at: float | None = None


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    return AnyValue(string_value=orjson.dumps(value, default=str).decode())


def _key_values(pairs: Any, content: bool) -> list[KeyValue]:
    items = pairs.items() if isinstance(pairs, dict) else (pairs or [])
    return [
        KeyValue(key=key, value=_any_value(value))
        for key, value in items
        if content or key not in CONTENT_ATTRIBUTE_KEYS
    ]


def otlp_request(spans: pa.Table, content: bool = True) -> bytes:
    """Stored ``spans`` rows as an OTLP ExportTraceServiceRequest (protobuf).

    Attribute values come back as the text they were stored as."""
    request = ExportTraceServiceRequest()
    by_resource: dict[tuple, dict[str, Any]] = {}
    ts = spans.column("ts")
    start_times = ts.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_pylist()
    for row, start_ns in zip(spans.to_pylist(), start_times, strict=True):
        start_ns = start_ns or 0
        resource_key = tuple(row["resource"] or [])
        group = by_resource.get(resource_key)
        if group is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(_key_values(resource_key, True))
            group = by_resource[resource_key] = {"spans": resource_spans, "scopes": {}}
        scope = group["scopes"].get(row["scope_name"])
        if scope is None:
            scope = group["spans"].scope_spans.add()
            scope.scope.name = row["scope_name"] or ""
            group["scopes"][row["scope_name"]] = scope
        span = scope.spans.add(
            trace_id=bytes.fromhex(row["trace_id"]),
            span_id=bytes.fromhex(row["span_id"]),
            parent_span_id=bytes.fromhex(row["parent_span_id"] or ""),
            name=row["name"],
            kind=_KINDS.get(row["kind"], 0),
            start_time_unix_nano=start_ns,
            end_time_unix_nano=start_ns + int((row["duration_ms"] or 0) * 1e6),
        )
        span.attributes.extend(_key_values(row["attributes"], content))
        span.status.code = _STATUS.get(row["status"], 0)
        span.status.message = row["status_message"] or ""
        for event in orjson.loads(row["events"]) if row["events"] else []:
            span.events.add(
                name=event.get("name", ""),
                time_unix_nano=int(event.get("time_ns") or 0),
                attributes=_key_values(event.get("attributes") or {}, content),
            )
    return request.SerializeToString()


def webhook_body(table_name: str, rows: pa.Table, content: bool = True) -> bytes:
    if not content:
        rows = rows.drop_columns([c for c in CONTENT_COLUMNS[table_name] if c in rows.column_names])
    return orjson.dumps(
        {"source": "tokentrail", "table": table_name, "rows": json_ready_rows(rows)}
    )


class Forwarder:
    def __init__(
        self,
        otlp_url: str = "",
        otlp_headers: dict[str, str] | None = None,
        webhook_url: str = "",
        webhook_headers: dict[str, str] | None = None,
        content: bool = True,
        queue_batches: int = 1000,
        timeout: float = 10.0,
    ) -> None:
        self.content = content
        self.targets: dict[str, tuple[TargetStats, dict[str, str]]] = {}
        if otlp_url:
            headers = {**(otlp_headers or {}), "Content-Type": "application/x-protobuf"}
            self.targets["otlp"] = (TargetStats(otlp_url), headers)
        if webhook_url:
            headers = {**(webhook_headers or {}), "Content-Type": "application/json"}
            self.targets["webhook"] = (TargetStats(webhook_url), headers)
        self._queue: queue.Queue[tuple[str, str, pa.Table] | None] = queue.Queue(queue_batches)
        self._client = httpx.Client(timeout=timeout)
        self._last_drop_log = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokentrail-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, table_name: str, rows: pa.Table) -> None:
        """Queue a stored batch for each target that takes it; never blocks."""
        if rows.num_rows == 0:
            return
        for name, (stats, _) in self.targets.items():
            wanted = table_name == "spans" if name == "otlp" else table_name in CALL_TABLES
            if not wanted:
                continue
            try:
                self._queue.put_nowait((name, table_name, rows))
            except queue.Full:
                stats.dropped_batches += 1
                now = time.monotonic()
                if now - self._last_drop_log > 60:
                    self._last_drop_log = now
                    log.warning("forwarding queue is full: dropping batches for %s", stats.url)

    def _encode(self, target: str, table_name: str, rows: pa.Table) -> bytes:
        if target == "otlp":
            return otlp_request(rows, self.content)
        return webhook_body(table_name, rows, self.content)

    def _send(self, target: str, table_name: str, rows: pa.Table) -> None:
        stats, headers = self.targets[target]
        try:
            body = self._encode(target, table_name, rows)
        except Exception as exc:  # a row we cannot encode must not stop the thread
            stats.failed_batches += 1
            stats.last_error = f"encoding failed: {exc}"[:500]
            return
        for attempt in range(_ATTEMPTS):
            try:
                response = self._client.post(stats.url, content=body, headers=headers)
                if response.status_code < 300:
                    stats.sent_batches += 1
                    stats.sent_rows += rows.num_rows
                    stats.last_sent_at = time.time()
                    return
                stats.last_error = f"{response.status_code}: {response.text[:300]}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the target refuses this body; retrying will not help
            except httpx.HTTPError as exc:
                stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if self._stopping.wait(0.5 * 2**attempt):
                break
        stats.failed_batches += 1
        log.warning("forwarding to %s failed: %s", stats.url, stats.last_error)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                return
            self._send(*item)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then give up."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._stopping.set()
            self._thread.join(1.0)
        self._client.close()

    def status(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "queued_batches": self._queue.qsize(),
            "targets": [
                {"target": name, **vars(stats)} for name, (stats, _) in self.targets.items()
            ],
        }


class ForwardingStore:
    """A store that hands every batch it stored to a Forwarder."""

    def __init__(self, store: Store, forwarder: Forwarder) -> None:
        self.store = store
        self.forwarder = forwarder
        self.backend = store.backend
        self.database = store.database

    def command(self, sql: str, params: Params = None) -> None:
        self.store.command(sql, params)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.store.insert_arrow(table, data)
        self.forwarder.submit(table, data)

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        return self.store.query_arrow(sql, params)

    def close(self) -> None:
        self.store.close()


def open_forwarder(settings: Any) -> Forwarder | None:
    """A started Forwarder for the configured targets, or None without any."""
    if not (settings.forward_otlp_url or settings.forward_webhook_url):
        return None
    forwarder = Forwarder(
        settings.forward_otlp_url,
        settings.forward_otlp_headers,
        settings.forward_webhook_url,
        settings.forward_webhook_headers,
        content=settings.forward_content,
        queue_batches=settings.forward_queue_batches,
    )
    forwarder.start()
    log.info(
        "forwarding stored data to %s", ", ".join(s.url for s, _ in forwarder.targets.values())
    )
    return forwarder

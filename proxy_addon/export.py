"""A captured call → an OTel GenAI span → the spool, off the request path.

The addon hands each finished flow to ``CallExporter.submit``; a worker
thread parses it (the wire-format module), redacts content, builds a span
with the OpenTelemetry SDK (GenAI semantic conventions plus ``tokentrail.*``)
and spools batches encoded by the SDK's OTLP encoder.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ingest.redact import RedactionRules, redact_text
from proxy_addon.providers.base import CallFacts, RequestFacts
from proxy_addon.spool import Spool

log = logging.getLogger("tokentrail.proxy.export")
SCOPE = InstrumentationScope("tokentrail.proxy", "0.1.0")
OPERATION_NAMES = {"completion": "text_completion"}  # ours → gen_ai.operation.name


@dataclass
class CapturedCall:
    """Everything the addon knows about one model call when it ends."""

    provider: str
    request: RequestFacts
    parse: Callable[[], CallFacts]  # runs the wire-format parser (in the worker)
    http_status: int
    start_ns: int
    end_ns: int
    trace_id: int
    span_id: int
    parent_span_id: int | None
    server_address: str
    server_port: int
    attributes: dict[str, Any] = field(default_factory=dict)  # tokentrail.* already known


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def call_span(
    call: CapturedCall, facts: CallFacts, capture_content: bool, rules: RedactionRules
) -> ReadableSpan:
    request = call.request
    operation = OPERATION_NAMES.get(request.operation, request.operation)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": request.request_model,
        "gen_ai.request.stream": request.is_stream,
        "server.address": call.server_address,
        "server.port": call.server_port,
        "http.response.status_code": call.http_status,
        "tokentrail.source": "proxy",
        "tokentrail.wire_format": request.format,
        **call.attributes,
    }
    optional = {
        "gen_ai.response.model": facts.response_model,
        "gen_ai.response.id": facts.provider_request_id,
        "gen_ai.usage.input_tokens": facts.input_tokens,
        "gen_ai.usage.output_tokens": facts.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": facts.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": facts.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": facts.reasoning_tokens,
        "gen_ai.response.time_to_first_chunk": None
        if facts.ttft_ms is None
        else facts.ttft_ms / 1000,
        "error.type": facts.error_type,
        "tokentrail.provider_cost_usd": facts.provider_cost_usd,
        "tokentrail.body_note": facts.body_note,
    }
    attributes.update({k: v for k, v in optional.items() if v not in (None, "")})
    if facts.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = facts.finish_reason.split(",")
    # Tool calls travel as tool_call parts of the output message (the GenAI
    # convention) so the collector makes tool_calls rows from them; their
    # arguments are content and are dropped when content capture is off.
    parts: list[dict[str, Any]] = [
        {
            "type": "tool_call",
            "id": t.tool_call_id,
            "name": t.tool_name,
            "arguments": redact_text(t.arguments, rules)[0] if capture_content else "",
        }
        for t in facts.tool_calls
    ]
    if capture_content:
        if request.input_content:
            attributes["gen_ai.input.messages"] = redact_text(request.input_content, rules)[0]
        if facts.output_content:
            parts.insert(
                0, {"type": "text", "content": redact_text(facts.output_content, rules)[0]}
            )
    if parts:
        message = {"role": "assistant", "parts": parts, "finish_reason": facts.finish_reason}
        attributes["gen_ai.output.messages"] = orjson.dumps([message]).decode()
    model = request.request_model or facts.response_model
    failed = facts.status == "error" or call.http_status >= 400
    return ReadableSpan(
        name=f"{operation} {model}".strip(),
        context=_context(call.trace_id, call.span_id),
        parent=_context(call.trace_id, call.parent_span_id) if call.parent_span_id else None,
        resource=Resource({"service.name": str(call.attributes.get("tokentrail.app", ""))}),
        attributes=attributes,
        kind=SpanKind.CLIENT,
        instrumentation_scope=SCOPE,
        status=Status(StatusCode.ERROR, facts.error_type) if failed else Status(StatusCode.UNSET),
        start_time=call.start_ns,
        end_time=call.end_ns,
    )


class CallExporter:
    """Parses and spools captured calls in a worker thread, in batches."""

    def __init__(
        self,
        spool: Spool,
        rules: RedactionRules,
        capture_content: bool = True,
        batch_size: int = 256,
        max_queue: int = 100_000,
    ) -> None:
        self.spool = spool
        self.rules = rules
        self.capture_content = capture_content
        self.batch_size = batch_size
        self.queue: queue.Queue[CapturedCall | None] = queue.Queue(max_queue)
        self.captured = 0
        self.parse_failures = 0
        self.thread = threading.Thread(target=self._run, name="tokentrail-export", daemon=True)
        self.thread.start()

    def submit(self, call: CapturedCall) -> None:
        try:
            self.queue.put_nowait(call)
        except queue.Full:
            self.parse_failures += 1
            log.error("export queue full: a call was not recorded")

    def _span(self, call: CapturedCall) -> ReadableSpan | None:
        try:
            facts = call.parse()
            return call_span(call, facts, self.capture_content, self.rules)
        except Exception:  # a parser bug must not stop the worker
            self.parse_failures += 1
            log.exception("could not parse a %s call", call.request.format)
            return None

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            # Whatever else is already waiting goes into the same OTLP request.
            while len(batch) < self.batch_size:
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            spans = [s for s in (self._span(c) for c in batch) if s is not None]
            if spans:
                self.spool.put(encode_spans(spans).SerializeToString())
                self.captured += len(spans)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(10)

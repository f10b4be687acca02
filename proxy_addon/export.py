"""A captured call → an OTel GenAI span → the spool, off the request path.

The addon journals each finished flow; the exporter process
(``proxy_addon/exporter.py``) reads it back and calls ``spool_calls``: parse
(the wire-format module), redact content, build a span with the OpenTelemetry
SDK (GenAI semantic conventions plus ``tokentrail.*``) and spool batches
encoded by the SDK's OTLP encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ingest.redact import RedactionRules, redact_text
from proxy_addon.providers import format_module
from proxy_addon.providers.base import CallFacts, RequestFacts, ResponseView
from proxy_addon.spool import Spool
from proxy_addon.streams import StreamCapture

log = logging.getLogger("tokentrail.proxy.export")
SCOPE = InstrumentationScope("tokentrail.proxy", "0.1.0")
OPERATION_NAMES = {"completion": "text_completion"}  # ours → gen_ai.operation.name


@dataclass
class CapturedCall:
    """Everything the addon knows about one model call when it ends: plain
    data, so the journal can keep it and a restarted proxy can parse it."""

    provider: str
    request: RequestFacts
    http_status: int
    response_headers: dict[str, str]
    body: bytes  # the whole response; b"" when it was streamed
    streamed: bool
    stream: StreamCapture | None  # a streamed response's chunks (None: the tap failed)
    error: str  # why the exchange broke off; "" when the response completed
    start_ns: int
    end_ns: int
    first_chunk_ns: int | None
    trace_id: int
    span_id: int
    parent_span_id: int | None
    server_address: str
    server_port: int
    attributes: dict[str, Any] = field(default_factory=dict)  # tokentrail.* already known


def call_facts(call: CapturedCall) -> CallFacts:
    """Run the call's wire-format parser over what was captured."""
    module = format_module(call.request.format)
    if call.error:
        view = ResponseView(call.http_status, {}, b"")
        stream = call.stream
        facts = stream.parse(module, call.request, view) if stream else CallFacts()
        facts.status = "error"
        facts.error_type = facts.error_type or ("interrupted" if stream else "connection_error")
        facts.body_note = facts.body_note or call.error[:200]
    elif call.streamed:
        view = ResponseView(call.http_status, call.response_headers, b"")
        if call.stream is None:
            facts = CallFacts(body_note="stream could not be parsed", status="ok")
        else:
            facts = call.stream.parse(module, call.request, view)
    else:
        view = ResponseView(call.http_status, call.response_headers, call.body)
        facts = module.parse_response(call.request, view)
    if call.first_chunk_ns is not None:
        facts.ttft_ms = (call.first_chunk_ns - call.start_ns) / 1e6
    return facts


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


@dataclass
class ExportCounts:
    captured: int = 0  # calls spooled as spans
    failed_to_parse: int = 0
    dropped_calls: int = 0  # calls the spool's bound refused (logged there)


def spool_calls(
    calls: list[CapturedCall],
    spool: Spool,
    rules: RedactionRules,
    capture_content: bool,
    counts: ExportCounts,
    resend: bool = False,
) -> None:
    """Parse calls into spans and put them in the spool as one OTLP request."""
    spans = []
    for call in calls:
        try:
            spans.append(call_span(call, call_facts(call), capture_content, rules))
        except Exception:  # a parser bug must not stop the exporter
            counts.failed_to_parse += 1
            log.exception("could not parse a %s call", call.request.format)
    if not spans:
        return
    if spool.put(encode_spans(spans).SerializeToString(), resend=resend):
        counts.captured += len(spans)
    else:
        counts.dropped_calls += len(spans)

"""Receive stage: OTLP/HTTP trace request bodies -> ``DecodedBatch``.

``decode_request`` picks the decoder by Content-Type and Content-Encoding:
protobuf here, JSON in ``ingest.otlp_json``; both follow the rejection rules
of ``ingest.otlp_rules``. This is the collector's hot path (target: 20k+
spans/s with ~20 attributes per span on two cores), so protobuf goes through
a C decoder (``ingest/_otlp_native.c``, built by setup.py where a compiler
exists) that reads the wire format straight into the records below; the upb
path (``decode_protobuf_upb``) is the reference it is tested against and the
fallback for whatever it declines.

Shared objects: every span of one ``resource_spans`` entry gets the *same*
``resource`` dict object (decoded once). Consumers must treat ``resource`` as
read-only; copy it before changing it.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.otlp_json import decode_json
from ingest.otlp_rules import (
    BAD_PARENT,
    BAD_SPAN,
    BAD_TRACE,
    KINDS,
    STATUSES,
    ZERO_SPAN,
    ZERO_TRACE,
    OtlpDecodeError,
    UnsupportedMediaType,
)
from ingest.records import AttrValue, DecodedBatch, EventRecord, SpanRecord

__all__ = [
    "MAX_BYTES",
    "RESEND_HEADER",
    "OtlpDecodeError",
    "UnsupportedMediaType",
    "decode_json",
    "decode_protobuf",
    "decode_protobuf_upb",
    "decode_request",
    "encode_response",
]

MAX_BYTES = 64 * 1024 * 1024

# Marks an export that may have been delivered before (the proxy's spool sends
# it); the collector stores only the rows it lacks.
RESEND_HEADER = "X-Tokentrail-Resend"

try:  # built by setup.py where a C compiler exists; optional
    from ingest import _otlp_native as _native
except ImportError:  # pragma: no cover - depends on the build machine
    _native = None

# The C decoder reports rejections by index into this tuple.
_REASONS = (BAD_TRACE, BAD_SPAN, BAD_PARENT)

_PB_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})


# ---------------------------------------------------------------- protobuf


def _pb_value(v: Any) -> AttrValue:
    """Slow path for nested AnyValues (arrays, kvlists); scalars are inlined by callers."""
    w = v.WhichOneof("value")
    if w is None:
        return None
    if w == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if w == "kvlist_value":
        return _pb_attrs(v.kvlist_value.values)
    return getattr(v, w)


def _pb_attrs(kvs: Any) -> dict[str, AttrValue]:
    # Most values are strings: reading string_value first costs one attribute
    # access; "" (unset, another type, or an empty string) takes the slow path,
    # which reads whichever field is set (an empty string comes back as "").
    return {kv.key: kv.value.string_value or _pb_any(kv.value) for kv in kvs}


def _pb_any(v: Any) -> AttrValue:
    w = v.WhichOneof("value")
    return getattr(v, w) if w in _PB_SCALARS else _pb_value(v)


def decode_protobuf(body: bytes) -> DecodedBatch:
    """Decode a binary protobuf ExportTraceServiceRequest (see module docstring for rules).

    The C decoder (``ingest/_otlp_native.c``) takes every body in the canonical
    encoding; anything it declines (odd encodings, invalid bodies) goes to upb,
    which accepts it or raises the canonical error."""
    if _native is not None:
        fast = _native.decode(body, KINDS, STATUSES)
        if fast is not None:
            spans, rejected, reason_codes = fast
            return {
                "spans": spans,
                "rejected": rejected,
                "errors": [_REASONS[code] for code in reason_codes],
            }
    return decode_protobuf_upb(body)


def decode_protobuf_upb(body: bytes) -> DecodedBatch:
    """The reference decoder: upb parses, Python maps. Always available."""
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except DecodeError as e:
        raise OtlpDecodeError(
            "Request body is not a valid protobuf ExportTraceServiceRequest."
        ) from e
    spans: list[SpanRecord] = []
    append = spans.append
    reasons: dict[str, None] = {}  # ordered set: one message per kind of rejection
    rejected = 0
    pb_attrs = _pb_attrs
    kinds, statuses = KINDS, STATUSES
    for rs in req.resource_spans:
        resource = pb_attrs(rs.resource.attributes)  # shared by all spans below
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            for sp in ss.spans:
                tid, sid, pid = sp.trace_id, sp.span_id, sp.parent_span_id
                if len(tid) != 16 or tid == ZERO_TRACE:
                    reason = BAD_TRACE
                elif len(sid) != 8 or sid == ZERO_SPAN:
                    reason = BAD_SPAN
                elif pid and len(pid) != 8:
                    reason = BAD_PARENT
                else:
                    reason = None
                if reason is not None:
                    rejected += 1
                    reasons[reason] = None
                    continue
                kind = sp.kind
                status = sp.status
                code = status.code
                events: list[EventRecord] = []
                for ev in sp.events:
                    events.append(
                        {
                            "name": ev.name,
                            "time_ns": ev.time_unix_nano,
                            "attributes": pb_attrs(ev.attributes),
                        }
                    )
                append(
                    {
                        "trace_id": tid.hex(),
                        "span_id": sid.hex(),
                        "parent_span_id": pid.hex(),
                        "name": sp.name,
                        "kind": kinds[kind] if 0 <= kind < 6 else "unspecified",
                        "start_ns": sp.start_time_unix_nano,
                        "end_ns": sp.end_time_unix_nano,
                        "status": statuses[code] if 0 <= code < 3 else "unset",
                        "status_message": status.message,
                        "attributes": pb_attrs(sp.attributes),
                        "resource": resource,
                        "events": events,
                        "scope_name": scope_name,
                    }
                )
    return {"spans": spans, "rejected": rejected, "errors": list(reasons)}


# --------------------------------------------------------------- transport

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Inflate gzip (all members) in bounded steps, so a zip bomb stops at max_bytes."""
    out = bytearray()
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header required
        buf = data
        while True:
            try:
                chunk = d.decompress(buf, max_bytes + 1 - len(out))  # limit is always >= 1
            except zlib.error:
                raise OtlpDecodeError("Request body is not valid gzip data.") from None
            out += chunk
            if len(out) > max_bytes:
                raise OtlpDecodeError(f"Decompressed request body exceeds {max_bytes} bytes.")
            if d.eof:
                break
            buf = d.unconsumed_tail
            if not buf and not chunk:
                raise OtlpDecodeError("Request body is truncated gzip data.")
        data = d.unused_data
        if not data:
            return bytes(out)


def decode_request(
    body: bytes, content_type: str, content_encoding: str | None, max_bytes: int = MAX_BYTES
) -> DecodedBatch:
    """Decode a POST /v1/traces body by its Content-Type and Content-Encoding headers.

    Raises ``UnsupportedMediaType`` (HTTP 415) for a Content-Type other than
    application/x-protobuf or application/json (parameters ignored) and for a
    Content-Encoding other than gzip/identity (RFC 9110 puts unsupported
    content codings under 415 too); ``OtlpDecodeError`` (HTTP 400) for bad
    gzip, a body over ``max_bytes`` (compressed or not) and invalid content.
    """
    media = content_type.partition(";")[0].strip().lower()
    if media not in (_PROTOBUF, _JSON):
        raise UnsupportedMediaType(
            f"Unsupported Content-Type {media or '(none)'!r}; use {_PROTOBUF} or {_JSON}."
        )
    coding = (content_encoding or "").strip().lower()
    if coding == "gzip":
        body = _gunzip(body, max_bytes)
    elif coding not in ("", "identity"):
        raise UnsupportedMediaType(f"Unsupported Content-Encoding {coding!r}; use gzip or none.")
    elif len(body) > max_bytes:
        raise OtlpDecodeError(f"Request body exceeds {max_bytes} bytes.")
    return decode_protobuf(body) if media == _PROTOBUF else decode_json(body)


def encode_response(rejected: int, error_message: str, as_json: bool) -> bytes:
    """ExportTraceServiceResponse body; partial_success only when spans were rejected."""
    if as_json:  # OTLP JSON: camelCase names, int64 as a decimal string
        doc: dict[str, Any] = {}
        if rejected > 0:
            doc["partialSuccess"] = {
                "rejectedSpans": str(rejected),
                "errorMessage": error_message,
            }
        return orjson.dumps(doc)
    resp = ExportTraceServiceResponse()
    if rejected > 0:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = error_message
    return resp.SerializeToString()

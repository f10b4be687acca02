"""Receive stage: OTLP/HTTP trace request bodies -> ``DecodedBatch``.

This is the collector's hot path (target: 20k+ spans/s with ~20 attributes per
span on two cores), so attribute decoding is written as flat loops with inline
fast paths instead of one helper call per value. Both decoders produce the
same records and the same rejection rules:

* A span whose trace id is not 16 bytes (32 hex chars) or is all zeroes, whose
  span id is not 8 bytes or is all zeroes, or whose parent span id is neither
  empty nor 8 bytes, is rejected: it is counted in ``rejected`` and its reason
  is added once to ``errors``. The other spans are kept. (The OTLP proto
  declares all-zero ids invalid; storing them would merge unrelated spans.)
* Anything else that is structurally wrong fails the whole request with
  ``OtlpDecodeError`` (HTTP 400); ``UnsupportedMediaType`` means HTTP 415.

Shared objects: every span of one ``resource_spans`` entry gets the *same*
``resource`` dict object (decoded once). Consumers must treat ``resource`` as
read-only; copy it before changing it.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.records import AttrValue, DecodedBatch, EventRecord, SpanRecord

MAX_BYTES = 64 * 1024 * 1024


class OtlpDecodeError(ValueError):
    """Body is not a valid OTLP ExportTraceServiceRequest.

    The message says what was wrong (user-facing, one sentence); HTTP 400.
    """


class UnsupportedMediaType(OtlpDecodeError):
    """Content-Type (or Content-Encoding) the receiver does not accept; answer HTTP 415."""


# Enum index -> name; unknown values (OTLP enums are open) map to the default.
_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUSES = ("unset", "ok", "error")
# JSON accepts the integer or the enum's proto name for the same field.
_KIND_JSON: dict[int | str, str] = {i: k for i, k in enumerate(_KINDS)}
_KIND_JSON.update({f"SPAN_KIND_{k.upper()}": k for k in _KINDS})
_STATUS_JSON: dict[int | str, str] = {i: s for i, s in enumerate(_STATUSES)}
_STATUS_JSON.update({f"STATUS_CODE_{s.upper()}": s for s in _STATUSES})

# Marks an export that may have been delivered before (the proxy's spool sends
# it); the collector stores only the rows it lacks.
RESEND_HEADER = "X-Tokentrail-Resend"

_PB_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_U64 = 2**64 - 1
_I64 = 2**63

_BAD_TRACE = "span rejected: trace id must be 16 bytes (32 hex characters) and not all zeroes"
_BAD_SPAN = "span rejected: span id must be 8 bytes (16 hex characters) and not all zeroes"
_BAD_PARENT = "span rejected: parent span id must be empty or 8 bytes (16 hex characters)"


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
    """Decode a binary protobuf ExportTraceServiceRequest (see module docstring for rules)."""
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
    kinds, statuses = _KINDS, _STATUSES
    for rs in req.resource_spans:
        resource = pb_attrs(rs.resource.attributes)  # shared by all spans below
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            for sp in ss.spans:
                tid, sid, pid = sp.trace_id, sp.span_id, sp.parent_span_id
                if len(tid) != 16 or tid == _ZERO_TRACE:
                    reason = _BAD_TRACE
                elif len(sid) != 8 or sid == _ZERO_SPAN:
                    reason = _BAD_SPAN
                elif pid and len(pid) != 8:
                    reason = _BAD_PARENT
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


# -------------------------------------------------------------------- JSON


class _Bad(Exception):
    """Structural JSON problem. Paths are built outward only on failure (each level's
    ``except`` prepends its own step), so the success path never formats a path string."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(msg)
        self.path, self.msg = path, msg

    def under(self, head: str) -> _Bad:
        sep = "" if not self.path or self.path[0] == "[" else "."
        self.path = f"{head}{sep}{self.path}"
        return self


def _got(x: Any) -> str:
    return f"got {x[:40]!r}" if isinstance(x, str) else f"got {type(x).__name__}"


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _jtype(x: Any, typ: type, path: str) -> Any:
    """``x`` checked to be ``typ``; null/missing means the proto default (empty)."""
    if x is None:
        return typ()
    if type(x) is not typ:
        raise _Bad(path, f"expected {_TYPE_NAMES[typ]}, {_got(x)}")
    return x


def _jint(x: Any, path: str, lo: int = 0, hi: int = _U64) -> int:
    """int64/fixed64: OTLP JSON sends decimal strings, but numbers are accepted too."""
    n = None
    if type(x) is int:
        n = x
    elif type(x) is float and x.is_integer():
        n = int(x)
    elif type(x) is str:
        try:
            n = int(x)
        except ValueError:
            n = None
    if n is None:
        raise _Bad(path, f"expected an integer, {_got(x)}")
    if not lo <= n <= hi:
        raise _Bad(path, f"integer {n} is out of range")
    return n


def _jenum(x: Any, table: dict[int | str, str], default: str, path: str) -> str:
    """Enums come as numbers or proto names; unknown numbers are legal (open enums)."""
    name = table.get(x) if type(x) in (int, str) else None
    if name is None:
        if type(x) is not int:
            raise _Bad(path, f"expected an enum number or name, {_got(x)}")
        return default
    return name


# Both JSON spellings of each AnyValue field -> the camelCase one.
_ANY = {k: k for k in ("stringValue", "boolValue", "intValue", "doubleValue", "bytesValue")}
_ANY.update(arrayValue="arrayValue", kvlistValue="kvlistValue")
_ANY.update({"".join("_" + c.lower() if c.isupper() else c for c in k): k for k in list(_ANY)})


def _jany(v: Any) -> AttrValue:
    """Full, validating AnyValue decode (slow path: ``_jattrs`` inlines common scalars)."""
    for k, x in _jtype(v, dict, "").items():
        k = _ANY.get(k, "")
        if k == "stringValue":
            return _jtype(x, str, k)
        if k == "intValue":
            return _jint(x, k, -_I64, _I64 - 1)
        if k == "boolValue":
            if type(x) is not bool:
                raise _Bad(k, f"expected true or false, {_got(x)}")
            return x
        if k == "doubleValue":
            try:  # proto JSON writes NaN/Infinity/-Infinity as strings; float() parses them
                if type(x) in (int, float, str):
                    return float(x)
            except ValueError:
                pass
            raise _Bad(k, f"expected a number, {_got(x)}")
        if k == "bytesValue":
            try:  # proto JSON parsers accept standard and URL-safe base64, padded or not
                b64 = x.replace("-", "+").replace("_", "/")
                return base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            except (AttributeError, binascii.Error):
                raise _Bad(k, f"expected base64, {_got(x)}") from None
        if k:  # arrayValue / kvlistValue, both {"values": [...]}
            vals = _jtype(_jtype(x, dict, k).get("values"), list, f"{k}.values")
            if k == "kvlistValue":
                return _jattrs(vals, f"{k}.values")
            out = []
            for i, e in enumerate(vals):
                try:
                    out.append(_jany(e))
                except _Bad as err:
                    raise err.under(f"{k}.values[{i}]") from None
            return out
    return None  # empty AnyValue (or only unknown fields): value not set


def _jattrs(kvs: Any, where: str) -> dict[str, AttrValue]:
    """KeyValue list -> dict; ``where`` is the field name used in error paths."""
    out: dict[str, AttrValue] = {}
    for kv in _jtype(kvs, list, where):
        # Fast path for the common {"key": str, "value": {"stringValue"|"intValue": x}};
        # the one-field unpack raises for any other shape, which takes the slow path.
        try:
            key = kv["key"]
            ((vk, x),) = kv["value"].items()
        except (TypeError, KeyError, ValueError, AttributeError):
            key = vk = None
        if type(key) is str:
            if vk == "stringValue":
                if type(x) is str:
                    out[key] = x
                    continue
            elif vk == "intValue":
                if type(x) is str:
                    try:
                        out[key] = n = int(x)
                        if -_I64 <= n < _I64:
                            continue
                    except ValueError:
                        pass
                elif type(x) is int and -_I64 <= x < _I64:
                    out[key] = x
                    continue
        try:
            kv = _jtype(kv, dict, "")
            key = _jtype(kv.get("key"), str, "key")
            try:
                out[key] = _jany(kv.get("value"))
            except _Bad as e:
                raise e.under("value") from None
        except _Bad as e:
            raise e.under(f"{where}[{kvs.index(kv)}]") from None
    return out


def _jhex(x: Any, nchars: int, path: str) -> str | None:
    """Lowercase hex id, or None for hex of the wrong length (the span gets rejected).

    Anything not hex (e.g. base64 ids from pre-1.0 exporters) is a structural error.
    """
    if type(x) is str:
        if len(x) == nchars:
            try:  # fromhex skips whitespace, so also require the full byte count
                if len(bytes.fromhex(x)) == nchars // 2:
                    return x.lower()
            except ValueError:
                pass
        elif all(c in "0123456789abcdefABCDEF" for c in x):
            return None
    raise _Bad(path, f"expected {nchars} hex characters, {_got(x)}")


def decode_json(body: bytes) -> DecodedBatch:
    """Decode an OTLP/JSON ExportTraceServiceRequest without protobuf's json_format.

    Follows the OTLP JSON rules: lowerCamelCase names (snake_case proto names
    also accepted), hex ids (any case), int64 as string or number, enums as
    numbers or names, null or missing fields as defaults, unknown fields
    ignored. Ids of the wrong length (including "" / missing) reject just that
    span, as in ``decode_protobuf``; every other problem (non-hex id, bad
    timestamp, wrong JSON type, unknown enum name) raises ``OtlpDecodeError``
    naming the path, e.g. ``resourceSpans[0].scopeSpans[1].spans[3].traceId``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpDecodeError(f"Request body is not valid JSON ({e}).") from None
    try:
        return _decode_doc(_jtype(doc, dict, "request"))
    except _Bad as e:
        raise OtlpDecodeError(f"{e.path}: {e.msg}") from None


def _decode_doc(doc: dict[str, Any]) -> DecodedBatch:
    spans: list[SpanRecord] = []
    append = spans.append
    reasons: dict[str, None] = {}
    rejected = 0
    jattrs, jhex = _jattrs, _jhex
    rss = _jtype(doc.get("resourceSpans", doc.get("resource_spans")), list, "resourceSpans")
    for ri, rs in enumerate(rss):
        try:
            rs = _jtype(rs, dict, "")
            res = _jtype(rs.get("resource"), dict, "resource")
            resource = jattrs(res.get("attributes"), "resource.attributes")  # shared
            sss = _jtype(rs.get("scopeSpans", rs.get("scope_spans")), list, "scopeSpans")
        except _Bad as e:
            raise e.under(f"resourceSpans[{ri}]") from None
        for si, ss in enumerate(sss):
            try:
                ss = _jtype(ss, dict, "")
                scope_name = _jtype(
                    _jtype(ss.get("scope"), dict, "scope").get("name"), str, "scope.name"
                )
                sl = _jtype(ss.get("spans"), list, "spans")
            except _Bad as e:
                raise e.under(f"resourceSpans[{ri}].scopeSpans[{si}]") from None
            for i, s in enumerate(sl):
                try:  # paths below are relative to the span; the handler prefixes them
                    get = _jtype(s, dict, "").get
                    # `or` falls back to the snake_case proto name and maps null to default.
                    tid = jhex(get("traceId") or get("trace_id") or "", 32, "traceId")
                    sid = jhex(get("spanId") or get("span_id") or "", 16, "spanId")
                    pid = get("parentSpanId") or get("parent_span_id") or ""
                    if pid:
                        pid = jhex(pid, 16, "parentSpanId")
                    start = get("startTimeUnixNano") or get("start_time_unix_nano") or 0
                    if type(start) is not int or not 0 <= start <= _U64:
                        start = _jint(start, "startTimeUnixNano")
                    end = get("endTimeUnixNano") or get("end_time_unix_nano") or 0
                    if type(end) is not int or not 0 <= end <= _U64:
                        end = _jint(end, "endTimeUnixNano")
                    kind = _jenum(get("kind") or 0, _KIND_JSON, "unspecified", "kind")
                    st = _jtype(get("status"), dict, "status")
                    status = _jenum(st.get("code") or 0, _STATUS_JSON, "unset", "status.code")
                    message = _jtype(st.get("message"), str, "status.message")
                    name = _jtype(get("name"), str, "name")
                    attrs = jattrs(get("attributes"), "attributes")
                    events: list[EventRecord] = []
                    for ei, ev in enumerate(_jtype(get("events"), list, "events")):
                        try:
                            ev = _jtype(ev, dict, "")
                            t = ev.get("timeUnixNano", ev.get("time_unix_nano")) or 0
                            events.append(
                                {
                                    "name": _jtype(ev.get("name"), str, "name"),
                                    "time_ns": _jint(t, "timeUnixNano"),
                                    "attributes": jattrs(ev.get("attributes"), "attributes"),
                                }
                            )
                        except _Bad as e:
                            raise e.under(f"events[{ei}]") from None
                except _Bad as e:
                    raise e.under(f"resourceSpans[{ri}].scopeSpans[{si}].spans[{i}]") from None
                if tid is None or tid == "0" * 32:
                    reason: str | None = _BAD_TRACE
                elif sid is None or sid == "0" * 16:
                    reason = _BAD_SPAN
                else:
                    reason = _BAD_PARENT if pid is None else None
                if reason is not None:
                    rejected += 1
                    reasons[reason] = None
                    continue
                append(
                    {
                        "trace_id": tid,
                        "span_id": sid,
                        "parent_span_id": pid,
                        "name": name,
                        "kind": kind,
                        "start_ns": start,
                        "end_ns": end,
                        "status": status,
                        "status_message": message,
                        "attributes": attrs,
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

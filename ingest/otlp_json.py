"""Receive stage, OTLP/JSON: a trace request body -> ``DecodedBatch``.

A direct mapping of the OTLP JSON rules (hex ids, int64 as decimal strings,
camelCase names, enums as integers or names), not protobuf's json_format,
which is about 100 times slower. It produces the same records and applies the
same rejection rules (``ingest.otlp_rules``) as the protobuf decoder.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from ingest.otlp_rules import (
    BAD_PARENT,
    BAD_SPAN,
    BAD_TRACE,
    I64,
    KINDS,
    STATUSES,
    U64,
    OtlpDecodeError,
)
from ingest.records import AttrValue, DecodedBatch, EventRecord, SpanRecord

# JSON accepts the integer or the enum's proto name for the same field.
_KIND_JSON: dict[int | str, str] = {i: k for i, k in enumerate(KINDS)}
_KIND_JSON.update({f"SPAN_KIND_{k.upper()}": k for k in KINDS})
_STATUS_JSON: dict[int | str, str] = {i: s for i, s in enumerate(STATUSES)}
_STATUS_JSON.update({f"STATUS_CODE_{s.upper()}": s for s in STATUSES})


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


def _jint(x: Any, path: str, lo: int = 0, hi: int = U64) -> int:
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
            return _jint(x, k, -I64, I64 - 1)
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
                        if -I64 <= n < I64:
                            continue
                    except ValueError:
                        pass
                elif type(x) is int and -I64 <= x < I64:
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
                    if type(start) is not int or not 0 <= start <= U64:
                        start = _jint(start, "startTimeUnixNano")
                    end = get("endTimeUnixNano") or get("end_time_unix_nano") or 0
                    if type(end) is not int or not 0 <= end <= U64:
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
                    reason: str | None = BAD_TRACE
                elif sid is None or sid == "0" * 16:
                    reason = BAD_SPAN
                else:
                    reason = BAD_PARENT if pid is None else None
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

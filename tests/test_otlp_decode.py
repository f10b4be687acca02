"""ingest.otlp: the OTLP/HTTP receive stage.

Protobuf bodies come from the real OpenTelemetry SDK encoder, so the decoder is
checked against what exporters actually send; JSON bodies are written the way
the OTLP spec examples are (hex ids, int64 as strings, nested AnyValues).
"""

from __future__ import annotations

import base64
import gzip
import zlib
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ingest.otlp import (
    OtlpDecodeError,
    UnsupportedMediaType,
    decode_json,
    decode_protobuf,
    decode_request,
    encode_response,
)

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"


def sdk_spans() -> tuple[ReadableSpan, ...]:
    """A parent/child pair plus one span from a second tracer, via the real SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "billing", "team": "payments"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tokentrail.test", "1.0")
    attributes = {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1234,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.is_stream": True,
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "ids": [1, 2, 3],
    }
    with (
        tracer.start_as_current_span("agent run", kind=SpanKind.INTERNAL),
        tracer.start_as_current_span(
            "chat gpt-4o", kind=SpanKind.CLIENT, attributes=attributes
        ) as child,
    ):
        child.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hi", "n": 2})
        child.set_status(Status(StatusCode.ERROR, "rate limited"))
    provider.get_tracer("other.scope").start_span("lone", kind=SpanKind.SERVER).end()
    provider.shutdown()
    return exporter.get_finished_spans()


def pb_body(spans: tuple[ReadableSpan, ...]) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """Proto JSON of a request, with ids re-encoded as hex as the OTLP spec requires."""
    doc = json_format.MessageToDict(req)  # test-only: camelCase, string int64, enum names
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex().upper()  # any case
    return doc


def json_span(**overrides: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": SPAN,
        "name": "s",
        "kind": 3,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
    }
    span.update(overrides)
    return span


def json_body(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


# ---------------------------------------------------------------- protobuf


def test_protobuf_from_sdk_encoder() -> None:
    spans = sdk_spans()
    batch = decode_protobuf(pb_body(spans))
    assert batch["rejected"] == 0 and batch["errors"] == []
    by_name = {s["name"]: s for s in batch["spans"]}
    assert set(by_name) == {"agent run", "chat gpt-4o", "lone"}

    sdk_child = next(s for s in spans if s.name == "chat gpt-4o")
    child, root = by_name["chat gpt-4o"], by_name["agent run"]
    assert child["trace_id"] == format(sdk_child.context.trace_id, "032x")
    assert child["span_id"] == format(sdk_child.context.span_id, "016x")
    assert child["parent_span_id"] == root["span_id"]
    assert root["parent_span_id"] == ""
    kinds = (child["kind"], root["kind"], by_name["lone"]["kind"])
    assert kinds == ("client", "internal", "server")
    assert (child["status"], child["status_message"]) == ("error", "rate limited")
    assert root["status"] == "unset"
    assert (child["start_ns"], child["end_ns"]) == (sdk_child.start_time, sdk_child.end_time)
    assert child["attributes"] == {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1234,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.is_stream": True,
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "ids": [1, 2, 3],
    }
    [event] = child["events"]
    assert event["name"] == "gen_ai.content.prompt"
    assert event["time_ns"] == sdk_child.events[0].timestamp
    assert event["attributes"] == {"gen_ai.prompt": "hi", "n": 2}
    assert child["resource"]["service.name"] == "billing"
    assert child["resource"]["team"] == "payments"
    assert child["scope_name"] == "tokentrail.test"
    assert by_name["lone"]["scope_name"] == "other.scope"


def test_protobuf_resource_dict_is_shared_per_resource() -> None:
    batch = decode_protobuf(pb_body(sdk_spans()))
    resources = {id(s["resource"]) for s in batch["spans"]}
    assert len(resources) == 1  # decoded once, the same object for every span


def test_protobuf_nested_values_bytes_and_unknown_enums() -> None:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(TRACE), bytes.fromhex(SPAN)
    span.kind = 42  # OTLP enums are open: unknown numbers must not fail the request
    span.status.code = 9
    inner = AnyValue()
    inner.kvlist_value.values.extend(
        [
            KeyValue(key="k", value=AnyValue(string_value="v")),
            KeyValue(key="arr", value=AnyValue(int_value=-7)),
        ]
    )
    outer = AnyValue()
    outer.array_value.values.extend([inner, AnyValue(double_value=1.5), AnyValue()])
    span.attributes.extend(
        [
            KeyValue(key="blob", value=AnyValue(bytes_value=b"\x00\xff")),
            KeyValue(key="nested", value=outer),
            KeyValue(key="unset"),
        ]
    )
    [rec] = decode_protobuf(req.SerializeToString())["spans"]
    assert rec["attributes"] == {
        "blob": b"\x00\xff",
        "nested": [{"k": "v", "arr": -7}, 1.5, None],
        "unset": None,
    }
    assert (rec["kind"], rec["status"]) == ("unspecified", "unset")
    assert rec["resource"] == {} and rec["scope_name"] == "" and rec["events"] == []


@pytest.mark.parametrize(
    "body", [b"\xff\xff\xff\xff", b"not protobuf at all", b'{"resourceSpans": []}']
)
def test_protobuf_garbage_raises(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        decode_protobuf(body)


def test_protobuf_bad_id_lengths_reject_only_those_spans() -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    good = bytes.fromhex(TRACE), bytes.fromhex(SPAN), b""
    cases = [
        good,
        (b"\x01" * 15, good[1], b""),  # short trace id
        (b"", good[1], b""),  # missing trace id
        (bytes(16), good[1], b""),  # all-zero trace id
        (good[0], b"\x01" * 9, b""),  # long span id
        (good[0], good[1], b"\x01" * 4),  # bad parent
        (good[0], good[1], bytes.fromhex(PARENT)),
        (b"\x02" * 15, good[1], b""),  # same reason again: reported once
    ]
    for i, (tid, sid, pid) in enumerate(cases):
        spans.add(trace_id=tid, span_id=sid, parent_span_id=pid, name=f"s{i}")
    batch = decode_protobuf(req.SerializeToString())
    assert [s["name"] for s in batch["spans"]] == ["s0", "s6"]
    assert batch["spans"][1]["parent_span_id"] == PARENT
    assert batch["rejected"] == 6
    assert len(batch["errors"]) == 3  # trace, span, parent: one message per kind
    assert any("trace id" in e for e in batch["errors"])
    assert any("parent span id" in e for e in batch["errors"])


# -------------------------------------------------------------------- JSON


def test_json_matches_protobuf_for_the_same_request() -> None:
    req = encode_spans(sdk_spans())
    from_json = decode_json(orjson.dumps(otlp_json(req)))  # enum names, string int64
    assert from_json == decode_protobuf(req.SerializeToString())


def test_json_spec_style_example() -> None:
    body = b"""{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.svc"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": "SPAN_KIND_SERVER",
            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
            "attributes": [
              {"key": "my.span.attr", "value": {"stringValue": "some value"}},
              {"key": "n", "value": {"intValue": "-42"}},
              {"key": "m", "value": {"intValue": 7}},
              {"key": "ok", "value": {"boolValue": true}},
              {"key": "ratio", "value": {"doubleValue": 0.5}},
              {"key": "inf", "value": {"doubleValue": "Infinity"}},
              {"key": "raw", "value": {"bytesValue": "AP8="}},
              {"key": "list", "value": {"arrayValue": {"values": [
                {"stringValue": "a"}, {"intValue": "1"},
                {"kvlistValue": {"values": [{"key": "x", "value": {"boolValue": false}}]}}
              ]}}},
              {"key": "map", "value": {"kvlistValue": {"values": [
                {"key": "inner", "value": {"arrayValue": {"values": []}}},
                {"key": "empty", "value": {}}
              ]}}}
            ],
            "events": [{"timeUnixNano": "1544712660500000000", "name": "ev",
                        "attributes": [{"key": "e", "value": {"intValue": "1"}}]}]
          }, {
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b175",
            "start_time_unix_nano": "5",
            "kind": 3,
            "status": null
          }]
        }]
      }]
    }"""
    batch = decode_json(body)
    assert batch["rejected"] == 0
    first, second = batch["spans"]
    assert first["trace_id"] == TRACE and first["span_id"] == SPAN
    assert first["parent_span_id"] == PARENT
    assert (first["kind"], first["status"], first["status_message"]) == ("server", "error", "boom")
    assert (first["start_ns"], first["end_ns"]) == (1544712660000000000, 1544712661000000000)
    assert first["attributes"] == {
        "my.span.attr": "some value",
        "n": -42,
        "m": 7,
        "ok": True,
        "ratio": 0.5,
        "inf": float("inf"),
        "raw": b"\x00\xff",
        "list": ["a", 1, {"x": False}],
        "map": {"inner": [], "empty": None},
    }
    assert first["events"] == [
        {"name": "ev", "time_ns": 1544712660500000000, "attributes": {"e": 1}}
    ]
    assert first["resource"] == {"service.name": "my.svc"}
    assert first["scope_name"] == "my.library"
    # snake_case proto names and defaults for everything missing
    assert second["span_id"] == "eee19b7ec3c1b175" and second["start_ns"] == 5
    assert (second["kind"], second["status"], second["name"], second["end_ns"]) == (
        "client",
        "unset",
        "",
        0,
    )
    assert second["resource"] is first["resource"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"[]", "request: expected an object"),
        (b'{"resourceSpans": {}}', "resourceSpans: expected a list"),
        (
            orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": []}, {"spans": [1]}]}]}),
            "resourceSpans[0].scopeSpans[1].spans[0]: expected an object",
        ),
        (
            json_body(json_span(), json_span(traceId="zz" * 16)),
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: expected 32 hex characters",
        ),
        (
            json_body(json_span(spanId="W47/95gDgQPSabYzgT/GDA==")),  # base64, not hex
            "spans[0].spanId: expected 16 hex characters",
        ),
        (
            json_body(json_span(startTimeUnixNano="yesterday")),
            "spans[0].startTimeUnixNano: expected an integer",
        ),
        (json_body(json_span(kind="SPAN_KIND_WEIRD")), "spans[0].kind: expected an enum"),
        (
            json_body(json_span(attributes=[{"key": "a", "value": {"intValue": "x"}}])),
            "spans[0].attributes[0].value.intValue: expected an integer",
        ),
        (
            json_body(
                json_span(
                    attributes=[
                        {"key": "ok", "value": {"stringValue": "v"}},
                        {"key": "a", "value": {"arrayValue": {"values": [{"boolValue": 1}]}}},
                    ]
                )
            ),
            "spans[0].attributes[1].value.arrayValue.values[0].boolValue: expected true or false",
        ),
        (
            json_body(json_span(events=[{"name": "e", "timeUnixNano": "1.5"}])),
            "spans[0].events[0].timeUnixNano: expected an integer",
        ),
        (
            orjson.dumps({"resourceSpans": [{"resource": {"attributes": [{"key": 5}]}}]}),
            "resourceSpans[0].resource.attributes[0].key: expected a string",
        ),
    ],
)
def test_json_structural_errors_name_the_path(body: bytes, path: str) -> None:
    with pytest.raises(OtlpDecodeError) as info:
        decode_json(body)
    assert path in str(info.value)


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"resourceSpans": [}'])
def test_json_not_json_raises(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError, match="not valid JSON"):
        decode_json(body)


def test_json_bad_id_lengths_reject_only_those_spans() -> None:
    batch = decode_json(
        json_body(
            json_span(name="keep"),
            json_span(name="short", traceId=TRACE[:30]),
            json_span(name="odd", traceId=TRACE[:31]),
            json_span(name="missing", traceId=""),
            json_span(name="zero", spanId="0" * 16),
            json_span(name="zero-trace", traceId="0" * 32),
            json_span(name="parent", parentSpanId="abcd"),
            json_span(name="root-ok", parentSpanId=""),
        )
    )
    assert [s["name"] for s in batch["spans"]] == ["keep", "root-ok"]
    assert batch["rejected"] == 6
    assert len(batch["errors"]) == 3


# --------------------------------------------------------------- transport


def test_decode_request_gzip_for_both_encodings() -> None:
    req = encode_spans(sdk_spans())
    expected = decode_protobuf(req.SerializeToString())
    pb = gzip.compress(req.SerializeToString())
    js = gzip.compress(orjson.dumps(otlp_json(req)))
    assert decode_request(pb, "application/x-protobuf", "gzip") == expected
    assert decode_request(js, "Application/JSON; charset=utf-8", "GZIP") == expected
    assert decode_request(req.SerializeToString(), "application/x-protobuf", None) == expected
    assert decode_request(orjson.dumps(otlp_json(req)), "application/json", "identity") == expected
    # concatenated gzip members are one valid gzip stream (RFC 1952)
    raw = req.SerializeToString()
    two = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert decode_request(two, "application/x-protobuf", "gzip") == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x1f\x8b not really gzip", "not valid gzip"),
        (b"plain text", "not valid gzip"),
        (gzip.compress(b"x" * 1000)[:-12], "truncated"),
    ],
)
def test_decode_request_bad_gzip(body: bytes, message: str) -> None:
    with pytest.raises(OtlpDecodeError, match=message):
        decode_request(body, "application/x-protobuf", "gzip")


def test_decode_request_stops_inflating_at_max_bytes() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    bomb = b"".join(comp.compress(chunk) for _ in range(256)) + comp.flush()  # 256 MiB of zeros
    assert len(bomb) < 1 << 20
    with pytest.raises(OtlpDecodeError, match="exceeds"):
        decode_request(bomb, "application/x-protobuf", "gzip")  # default 64 MiB limit
    small = gzip.compress(b"{}" + b" " * 5000)
    with pytest.raises(OtlpDecodeError, match="exceeds 1000 bytes"):
        decode_request(small, "application/json", "gzip", max_bytes=1000)
    assert decode_request(small, "application/json", "gzip", max_bytes=5002)["spans"] == []
    with pytest.raises(OtlpDecodeError, match="exceeds"):
        decode_request(b"{}" + b" " * 5000, "application/json", None, max_bytes=1000)


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("text/plain", None), ("", None), ("application/protobuf", None), ("application/json", "br")],
)
def test_decode_request_unsupported_media_type(content_type: str, encoding: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_request(b"{}", content_type, encoding)
    assert issubclass(UnsupportedMediaType, OtlpDecodeError)


def test_decode_request_errors_are_400_not_415() -> None:
    with pytest.raises(OtlpDecodeError) as info:
        decode_request(b"{", "application/json", None)
    assert not isinstance(info.value, UnsupportedMediaType)


def test_encode_response_round_trip() -> None:
    full = ExportTraceServiceResponse.FromString(encode_response(0, "", as_json=False))
    assert not full.HasField("partial_success")
    part = ExportTraceServiceResponse.FromString(encode_response(3, "bad ids", as_json=False))
    assert part.partial_success.rejected_spans == 3
    assert part.partial_success.error_message == "bad ids"

    assert orjson.loads(encode_response(0, "", as_json=True)) == {}
    doc = orjson.loads(encode_response(3, "bad ids", as_json=True))
    assert doc == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "bad ids"}}
    # and protobuf's own JSON parser agrees it is a valid ExportTraceServiceResponse
    parsed = json_format.Parse(encode_response(3, "bad ids", as_json=True), part.__class__())
    assert parsed == part

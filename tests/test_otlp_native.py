"""ingest/_otlp_native.c against the upb decoder it replaces on the hot path.

The C decoder must answer exactly what ``decode_protobuf_upb`` answers (same
records, same key order, same shared resource dict) or decline with None, and
it must never accept a body upb rejects. Hypothesis builds requests with every
AnyValue type, events, links and bad ids; then mutates their bytes.
"""

from __future__ import annotations

import random
import shutil
import sysconfig

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ingest import otlp
from ingest.otlp import OtlpDecodeError, decode_protobuf, decode_protobuf_upb
from ingest.otlp_rules import KINDS, STATUSES

native = otlp._native
needs_native = pytest.mark.skipif(native is None, reason="ingest._otlp_native is not built")


def test_the_c_decoder_is_built_where_a_compiler_exists() -> None:
    """setup.py marks the extension optional; on a machine that can build it,
    a silent fallback to upb would only show up as a slow collector."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here")
    assert native is not None


def _same(body: bytes) -> object:
    """The C decoder's answer if it gives one; assert it equals upb's."""
    got = native.decode(body, KINDS, STATUSES)
    if got is None:
        return None
    reference = decode_protobuf_upb(body)
    assert decode_protobuf(body) == reference
    spans, rejected, _codes = got
    assert spans == reference["spans"]
    assert rejected == reference["rejected"]
    # Key order matters downstream (the spans table's maps keep it).
    for mine, theirs in zip(spans, reference["spans"], strict=True):
        assert list(mine) == list(theirs)
        assert list(mine["attributes"]) == list(theirs["attributes"])
    return got


# ------------------------------------------------------------- generators

ids16 = st.one_of(st.binary(min_size=16, max_size=16), st.just(bytes(16)), st.binary(max_size=20))
ids8 = st.one_of(st.binary(min_size=8, max_size=8), st.just(bytes(8)), st.binary(max_size=10))
texts = st.text(max_size=12)
scalars = st.one_of(
    texts.map(lambda v: AnyValue(string_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
    st.floats(allow_nan=False).map(lambda v: AnyValue(double_value=v)),
    st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
    st.just(AnyValue()),
)


def _array(values: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(values)
    return value


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    value = AnyValue()
    value.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
    return value


any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(_array),
        st.lists(st.tuples(texts, inner), max_size=3).map(_kvlist),
    ),
    max_leaves=8,
)
key_values = st.lists(
    st.tuples(st.sampled_from(["gen_ai.request.model", "k", "ü", ""]) | texts, any_values),
    max_size=6,
).map(lambda pairs: [KeyValue(key=k, value=v) for k, v in pairs])


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(ids16),
        span_id=draw(ids8),
        parent_span_id=draw(st.one_of(st.just(b""), ids8)),
        trace_state=draw(st.sampled_from(["", "k=v"])),
        name=draw(texts),
        kind=draw(st.integers(-3, 8)),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        dropped_attributes_count=draw(st.integers(0, 3)),
        flags=draw(st.integers(0, 2**32 - 1)),
    )
    span.attributes.extend(draw(key_values))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(name=draw(texts), time_unix_nano=draw(st.integers(0, 2**64 - 1)))
        event.attributes.extend(draw(key_values))
    for _ in range(draw(st.integers(0, 1))):
        link = span.links.add(trace_id=draw(ids16), span_id=draw(ids8), trace_state="a=b")
        link.attributes.extend(draw(key_values))
    if draw(st.booleans()):
        span.status.CopyFrom(Status(code=draw(st.integers(-1, 4)), message=draw(texts)))
    return span


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add(schema_url=draw(st.sampled_from(["", "https://x"])))
        if draw(st.booleans()):
            rs.resource.attributes.extend(draw(key_values))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            if draw(st.booleans()):
                ss.scope.name = draw(texts)
                ss.scope.version = "1.0"
                ss.scope.attributes.extend(draw(key_values))
            ss.spans.extend(draw(st.lists(spans(), max_size=3)))
    return req


# ------------------------------------------------------------------ tests


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_canonical_bodies_decode_exactly_as_upb_does(req: ExportTraceServiceRequest) -> None:
    # SerializeToString writes the canonical encoding: the C decoder takes it all.
    assert _same(req.SerializeToString()) is not None


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.randoms(use_true_random=False))
def test_mutated_bodies_are_declined_or_decoded_as_upb_does(
    req: ExportTraceServiceRequest, rng: random.Random
) -> None:
    body = bytearray(req.SerializeToString())
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(body) + 1)
        action = rng.randrange(3)
        if action == 0 and body:
            body[min(where, len(body) - 1)] = rng.randrange(256)
        elif action == 1:
            body[where:where] = bytes([rng.randrange(256)])
        elif body:
            del body[min(where, len(body) - 1)]
    data = bytes(body)
    try:
        decode_protobuf_upb(data)
    except OtlpDecodeError:
        # upb rejects it: so must the C decoder, and decode_protobuf says why.
        assert native.decode(data, KINDS, STATUSES) is None
        with pytest.raises(OtlpDecodeError):
            decode_protobuf(data)
        return
    _same(data)


@needs_native
def test_resource_is_one_dict_shared_by_its_spans() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="billing"))
    ss = rs.scope_spans.add()
    for n in (1, 2):
        ss.spans.add(trace_id=bytes([n]) * 16, span_id=bytes([n]) * 8, name="s")
    first, second = _same(req.SerializeToString())[0]
    assert first["resource"] is second["resource"] == {"service.name": "billing"}


@needs_native
def test_scope_after_its_spans_and_resource_after_its_scopes_on_the_wire() -> None:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="late")
    service = KeyValue(key="service.name", value=AnyValue(string_value="api"))
    resource_kv = service.SerializeToString()

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    scope = field(1, b"lib")  # InstrumentationScope.name
    scope_spans = field(2, span.SerializeToString()) + field(1, scope)
    resource_spans = field(2, scope_spans) + field(1, field(1, resource_kv))
    body = field(1, resource_spans)
    [record] = _same(body)[0]
    assert record["scope_name"] == "lib"
    assert record["resource"] == {"service.name": "api"}


def test_a_field_given_twice_goes_to_upb_which_merges_it() -> None:
    """Protobuf merges a singular message that appears twice; the C decoder
    declines such a body and upb's merge is what gets stored."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="a", value=AnyValue(string_value="1"))
    rs.scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    second = rs.resource.__class__()
    second.attributes.add(key="b", value=AnyValue(string_value="2"))
    second_bytes = second.SerializeToString()
    # ResourceSpans with a second `resource` (field 1) after the first.
    rs_bytes = rs.SerializeToString() + b"\x0a" + bytes([len(second_bytes)]) + second_bytes
    body = b"\x0a" + bytes([len(rs_bytes)]) + rs_bytes
    if native is not None:
        assert native.decode(body, KINDS, STATUSES) is None
    [record] = decode_protobuf(body)["spans"]
    assert record["resource"] == {"a": "1", "b": "2"}


def test_bad_utf8_is_refused_by_both() -> None:
    kv = b"\x0a\x02\xff\xfe"  # KeyValue.key, not UTF-8
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString()
    span += b"\x4a" + bytes([len(kv)]) + kv  # Span.attributes (field 9)
    scope_spans = b"\x12" + bytes([len(span)]) + span
    resource_spans = b"\x12" + bytes([len(scope_spans)]) + scope_spans
    body = b"\x0a" + bytes([len(resource_spans)]) + resource_spans
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)
    if native is not None:
        assert native.decode(body, KINDS, STATUSES) is None
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        decode_protobuf(body)


@needs_native
def test_deep_nesting_is_left_to_upb() -> None:
    value = AnyValue(string_value="leaf")
    for _ in range(40):
        value = _array([value])
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    )
    span.attributes.add(key="deep", value=value)
    body = req.SerializeToString()
    assert native.decode(body, KINDS, STATUSES) is None
    [record] = decode_protobuf(body)["spans"]
    [reference] = decode_protobuf_upb(body)["spans"]
    assert record["attributes"]["deep"] == reference["attributes"]["deep"]

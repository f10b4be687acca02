"""The OTLP request bodies bench/ingest.py sends: serialized ExportTraceServiceRequests.

Every run parses, decodes, processes and sends the same pre-built bodies, so
building them stays outside every timing. The spans themselves (chat spans with
``ATTRIBUTES_PER_SPAN`` attributes, named as a dialect names them) come from
bench/spans.py.
"""

from __future__ import annotations

import random
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bench.spans import span_fields


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(
            key=key,
            value=AnyValue(
                array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value])
            ),
        )
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_bodies(
    spans: int, batch: int, content: bool, dialect: str = "genai", seed: int = 7
) -> list[bytes]:
    """Serialized ExportTraceServiceRequest bodies, ``batch`` spans each (the last
    may be short); one scope per instrumentation, as an app with several has."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    bodies: list[bytes] = []
    # Categorical attributes repeat: build their KeyValues once and let the
    # C++/upb side copy them (extend), which keeps 200k spans quick to build.
    kv_cache: dict[tuple[str, str], KeyValue] = {}
    trace_id = b""
    root_id = b""
    done = 0
    while done < spans:
        n = min(batch, spans - done)
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [
                _kv("service.name", f"checkout-api-{len(bodies) % 3}"),
                _kv("service.version", "2.14.1"),
                _kv("deployment.environment.name", "production"),
                _kv("telemetry.sdk.name", "opentelemetry"),
                _kv("telemetry.sdk.language", "python"),
                _kv("telemetry.sdk.version", "1.38.0"),
            ]
        )
        scopes: dict[str, Any] = {}
        for j in range(n):
            i = done + j
            if i % 4 == 0:  # an agent turn: ~4 model calls under one root span
                trace_id = rng.randbytes(16)
                root_id = rng.randbytes(8)
            fields = span_fields(dialect, rng, i, content)
            ss = scopes.get(fields["scope"])
            if ss is None:
                ss = scopes[fields["scope"]] = rs.scope_spans.add()
                ss.scope.name = fields["scope"]
            start = now_ns - rng.randrange(3_600 * 10**9)
            kvs = []
            for key, value in fields["attributes"]:
                if isinstance(value, str) and len(value) < 40:
                    kv = kv_cache.get((key, value))
                    if kv is None:
                        kv = kv_cache[(key, value)] = _kv(key, value)
                    kvs.append(kv)
                else:
                    kvs.append(_kv(key, value))
            failed = fields["failed"]
            sp = Span(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent_span_id=root_id,
                name=fields["name"],
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(150, 9_000) * 10**6,
                status=Status(
                    code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_UNSET
                ),
            )
            sp.attributes.extend(kvs)
            ss.spans.append(sp)
        bodies.append(req.SerializeToString())
        done += n
    return bodies

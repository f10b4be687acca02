"""OTLP/gRPC beside OTLP/HTTP: same keys, same pipeline, same rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from demo.simulator import RunningSimulator, start_simulator
from tests.conftest import ROOT, CollectorProcess, collector_env, free_port
from tests.instrumented_app import run_app

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class GrpcCollector(CollectorProcess):
    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.env['TOKENTRAIL_GRPC_PORT']}"


def grpc_collector_at(path: Path, **env: str) -> GrpcCollector:
    return GrpcCollector(
        path / "data", free_port(), collector_env(TOKENTRAIL_GRPC_PORT=str(free_port()), **env)
    )


@pytest.fixture(scope="module")
def grpc_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcCollector]:
    proc = grpc_collector_at(tmp_path_factory.mktemp("grpc"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with start_simulator() as sim:
        yield sim


def chat_request(trace: int, model: str = "gpt-4o-mini") -> bytes:
    span = Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=(trace + 1).to_bytes(8, "big"),
        name=f"chat {model}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=time.time_ns(),
        end_time_unix_nano=time.time_ns() + 10**8,
    )
    for key, value in (
        ("gen_ai.operation.name", AnyValue(string_value="chat")),
        ("gen_ai.provider.name", AnyValue(string_value="openai")),
        ("gen_ai.request.model", AnyValue(string_value=model)),
        ("gen_ai.usage.input_tokens", AnyValue(int_value=100)),
        ("gen_ai.usage.output_tokens", AnyValue(int_value=10)),
    ):
        span.attributes.append(KeyValue(key=key, value=value))
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    return request.SerializeToString()


def export(address: str, body: bytes, key: str | None) -> tuple[bytes, Any]:
    """One raw Export call; returns (response bytes, call) or raises grpc.RpcError."""
    with grpc.insecure_channel(address) as channel:
        method = channel.unary_unary(EXPORT)  # bytes in, bytes out
        metadata = [("authorization", f"Bearer {key}")] if key else []
        return method.with_call(body, metadata=metadata, timeout=30)


def test_same_spans_over_grpc_and_http_make_the_same_rows(
    collector: CollectorProcess, grpc_collector: GrpcCollector, simulator: RunningSimulator
) -> None:
    """The same spans (one SDK, two exporters) → identical rows in both stores."""
    exports = [
        {
            "protocol": "http",
            "endpoint": f"{collector.url}/v1/traces",
            "key": collector.create_key("ingest", "http-twin"),
        },
        {
            "protocol": "grpc",
            "endpoint": grpc_collector.grpc_address,
            "key": grpc_collector.create_key("ingest", "grpc-twin"),
            "gzip": "yes",  # gRPC-level compression is undone before the pipeline
        },
    ]
    seen = run_app("openinference", simulator.url, exports, service="twins", team="qa")
    traces = [seen["chat"]["trace_id"], seen["stream"]["trace_id"], seen["agent"]["trace_id"]]
    for trace_id in traces:
        for proc in (collector, grpc_collector):
            assert proc.wait_for(lambda p=proc, t=trace_id: p.calls(trace_id=t)), trace_id
        over_http = collector.calls(trace_id=trace_id)
        over_grpc = grpc_collector.calls(trace_id=trace_id)
        assert over_http and over_http == over_grpc  # every llm_calls column
        tree_http = collector.get(f"/api/v1/traces/{trace_id}").json()
        tree_grpc = grpc_collector.get(f"/api/v1/traces/{trace_id}").json()
        assert tree_http == tree_grpc  # spans, tool_calls and the calls again
    agent_tree = json.dumps(collector.get(f"/api/v1/traces/{traces[2]}").json())
    assert agent_tree.count('"status": "requested"') == 1 and "get_weather" in agent_tree


def test_keys_and_roles(grpc_collector: GrpcCollector) -> None:
    body = chat_request(0xA11CE)
    with pytest.raises(grpc.RpcError) as missing:
        export(grpc_collector.grpc_address, body, key=None)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" in missing.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        export(grpc_collector.grpc_address, body, key="tt_000000000000_not-a-key")
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finance = grpc_collector.create_key("finance", "not-an-exporter")
    with pytest.raises(grpc.RpcError) as denied:
        export(grpc_collector.grpc_address, body, key=finance)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ingest = grpc_collector.create_key("ingest", "exporter")
    response, call = export(grpc_collector.grpc_address, body, key=ingest)
    assert call.code() == grpc.StatusCode.OK
    assert not ExportTraceServiceResponse.FromString(response).HasField("partial_success")
    trace_id = format(0xA11CE, "032x")
    rows = grpc_collector.wait_for(lambda: grpc_collector.calls(trace_id=trace_id))
    assert len(rows) == 1 and rows[0]["input_tokens"] == 100 and rows[0]["cost_usd"] > 0
    # A revoked key stops working at once.
    key_id = ingest.split("_")[1]
    revoked = httpx.delete(
        f"{grpc_collector.url}/api/v1/keys/{key_id}", headers=grpc_collector.headers(), timeout=30
    )
    assert revoked.status_code == 200
    with pytest.raises(grpc.RpcError) as gone:
        export(grpc_collector.grpc_address, body, key=ingest)
    assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bad_input_and_partial_success(grpc_collector: GrpcCollector) -> None:
    key = grpc_collector.create_key("ingest", "bad-input")
    with pytest.raises(grpc.RpcError) as garbage:
        export(grpc_collector.grpc_address, b"\xff\xff\xff not protobuf", key)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A span with a bad id is rejected, the rest of the request is accepted.
    request = ExportTraceServiceRequest.FromString(chat_request(0xB0B))
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
    bad.trace_id = b"\x00" * 16
    response, _ = export(grpc_collector.grpc_address, request.SerializeToString(), key)
    partial = ExportTraceServiceResponse.FromString(response).partial_success
    assert partial.rejected_spans == 1 and "trace id" in partial.error_message


def test_store_behind_answers_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    """Queue bound 1 row and a long batch age: the first export waits in the
    queue, the next is refused with RetryInfo, which the OTel gRPC exporter honours."""
    proc = grpc_collector_at(
        tmp_path,
        TOKENTRAIL_QUEUE_MAX_ROWS="1",
        TOKENTRAIL_BATCH_MAX_SECONDS="3",
        TOKENTRAIL_BATCH_MAX_ROWS="100000",
    )
    proc.start()
    try:
        key = proc.create_key("ingest", "busy")
        export(proc.grpc_address, chat_request(0xC0FFEE), key)  # queued, not yet stored
        with pytest.raises(grpc.RpcError) as busy:
            export(proc.grpc_address, chat_request(0xC0FFEF), key)
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(busy.value.trailing_metadata())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == code_pb2.RESOURCE_EXHAUSTED
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 5
        bare = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert bare.retry_delay.seconds == 5

        # The real exporter waits as told and gets in once the queue drained.
        provider = TracerProvider()
        exporter = OTLPSpanExporter(
            endpoint=proc.grpc_address,
            insecure=True,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        started = time.monotonic()
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 7,
        }
        with provider.get_tracer("t").start_as_current_span("chat", attributes=attributes) as s:
            trace_id = format(s.get_span_context().trace_id, "032x")
        provider.shutdown()
        rows = proc.wait_for(lambda: proc.calls(trace_id=trace_id), timeout=30)
        assert len(rows) == 1 and rows[0]["input_tokens"] == 7
        # Refused at first (the queue still held the first request), it waited
        # the 5 s the RetryInfo said before its retry got in.
        assert time.monotonic() - started >= 4.5
    finally:
        proc.stop()


def test_explicit_port_that_is_taken_stops_the_collector(
    grpc_collector: GrpcCollector, tmp_path: Path
) -> None:
    taken = grpc_collector.env["TOKENTRAIL_GRPC_PORT"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokentrail.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--grpc-port",
            taken,
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=collector_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"cannot listen for OTLP/gRPC on 127.0.0.1:{taken}" in done.stdout + done.stderr

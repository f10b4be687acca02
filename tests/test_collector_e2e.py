"""The collector end to end: the real OTel SDK exporter → HTTP → store → API."""

from __future__ import annotations

import gzip
import json
import os
import signal
import uuid
from decimal import Decimal

import httpx
import orjson
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.conftest import CollectorProcess


def send_spans(collector: CollectorProcess, key: str, resource: dict, spans: list[dict]) -> None:
    """Export spans with the real opentelemetry-sdk OTLP/HTTP exporter."""
    provider = TracerProvider(resource=Resource.create(resource))
    exporter = OTLPSpanExporter(
        endpoint=f"{collector.url}/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for span in spans:
        with tracer.start_as_current_span(span["name"], attributes=span["attributes"]):
            pass
    provider.shutdown()


def chat_span(model: str, input_tokens: int, output_tokens: int, cached: int, **extra) -> dict:
    return {
        "name": f"chat {model}",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.response.finish_reasons": ["stop"],
            **extra,
        },
    }


def test_sdk_span_becomes_one_priced_attributed_row(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest", "sdk-app")
    span = chat_span("gpt-4o", 12_345, 678, 4_096, **{"tokentrail.project": "checkout"})
    send_spans(
        collector, key, {"service.name": "support-bot", "tokentrail.team": "payments"}, [span]
    )

    rows = collector.wait_for(lambda: collector.calls(project="checkout"))
    assert len(rows) == 1
    row = rows[0]
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (
        12_345,
        678,
        4_096,
    )
    assert (row["team"], row["project"], row["app"]) == ("payments", "checkout", "support-bot")
    assert row["provider"] == "openai" and row["operation"] == "chat" and row["source"] == "otlp"
    expected = calc_price(
        Usage(input_tokens=12_345, cache_read_tokens=4_096, output_tokens=678),
        "gpt-4o",
        provider_id="openai",
    ).total_price
    uncached = calc_price(
        Usage(input_tokens=12_345, output_tokens=678), "gpt-4o", provider_id="openai"
    )
    assert Decimal(str(row["cost_usd"])) == expected
    assert expected < uncached.total_price  # cached tokens were priced as cached
    assert row["cost_source"] == "genai-prices" and row["price_version"].startswith("genai-prices")


def test_row_survives_restart(fresh_collector: CollectorProcess) -> None:
    key = fresh_collector.create_key("ingest")
    send_spans(
        fresh_collector, key, {"service.name": "batch-job"}, [chat_span("gpt-4o-mini", 100, 10, 0)]
    )
    assert fresh_collector.wait_for(lambda: fresh_collector.calls(app="batch-job"))
    admin_before = fresh_collector.admin_key
    fresh_collector.restart()
    rows = fresh_collector.calls(app="batch-job")
    assert len(rows) == 1 and rows[0]["input_tokens"] == 100
    # Keys are stored, not regenerated: both still work after the restart.
    assert fresh_collector.admin_key == admin_before
    assert fresh_collector.get("/api/v1/spend", key=key).status_code == 403


def test_bad_bodies_get_4xx_and_lose_nothing(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    send_spans(collector, key, {"service.name": "before-garbage"}, [chat_span("gpt-4o", 5, 5, 0)])
    assert collector.wait_for(lambda: collector.calls(app="before-garbage"))

    garbage = collector.post(
        "/v1/traces",
        key,
        content=b"\xff\x00garbage",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert garbage.status_code == 400 and "protobuf" in garbage.text
    malformed = collector.post(
        "/v1/traces",
        key,
        content=b'{"resourceSpans": [{"scopeSpans": 7}]}',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400 and "scopeSpans" in malformed.json()["message"]
    not_json = collector.post(
        "/v1/traces", key, content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    wrong_type = collector.post(
        "/v1/traces", key, content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415

    assert collector.get("/healthz").json()["status"] == "ok"
    assert len(collector.calls(app="before-garbage")) == 1
    send_spans(collector, key, {"service.name": "after-garbage"}, [chat_span("gpt-4o", 5, 5, 0)])
    assert collector.wait_for(lambda: collector.calls(app="after-garbage"))


def otlp_json_body(trace_id: str, span_id: str, service: str, attributes: list[dict]) -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "manual"},
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": span_id,
                                    "name": "chat claude",
                                    "kind": 3,
                                    "startTimeUnixNano": "1795400000000000000",
                                    "endTimeUnixNano": "1795400001500000000",
                                    "attributes": attributes,
                                    "status": {"code": 0},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )


def anthropic_attributes() -> list[dict]:
    return [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.system", "value": {"stringValue": "anthropic"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4-20250514"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3000"}},
        {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "1000"}},
        {"key": "gen_ai.usage.cache_creation.input_tokens", "value": {"intValue": "500"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "250"}},
        {"key": "tokentrail.team", "value": {"stringValue": "research"}},
    ]


def test_otlp_json_gzip_with_string_int64(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    body = otlp_json_body(
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "json-app", anthropic_attributes()
    )
    response = collector.post(
        "/v1/traces",
        key,
        content=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}  # full success: no partial_success
    rows = collector.wait_for(
        lambda: collector.calls(
            app="json-app", **{"from": "2026-11-20T00:00:00Z", "to": "2026-11-30T00:00:00Z"}
        )
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["duration_ms"] == 1500.0 and row["ts"].startswith("2026-11-23T02:13:20")
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        3000,
        1000,
        500,
    )
    expected = calc_price(
        Usage(input_tokens=3000, cache_read_tokens=1000, cache_write_tokens=500, output_tokens=250),
        "claude-sonnet-4-20250514",
        provider_id="anthropic",
    ).total_price
    assert Decimal(str(row["cost_usd"])) == expected


def test_partial_success_reports_rejected_spans(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    body = orjson.loads(
        otlp_json_body(
            "5b8efff798038103d269b633813fc60d",
            "eee19b7ec3c1b175",
            "partial-app",
            anthropic_attributes(),
        )
    )
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "abcd"})  # 2 bytes: not a span id
    response = collector.post(
        "/v1/traces", key, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and partial["errorMessage"]

    protobuf = collector.post(
        "/v1/traces", key, content=b"", headers={"Content-Type": "application/x-protobuf"}
    )
    assert protobuf.status_code == 200
    ExportTraceServiceResponse.FromString(protobuf.content)  # a valid (empty) response


def test_unpriced_model_is_kept_with_null_cost(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    span = chat_span("our-finetune-v7", 10, 20, 0)
    span["attributes"]["gen_ai.provider.name"] = "vllm"
    send_spans(collector, key, {"service.name": "unpriced-app"}, [span])
    rows = collector.wait_for(lambda: collector.calls(app="unpriced-app"))
    assert rows[0]["cost_usd"] is None and rows[0]["cost_source"] == "unpriced"
    assert rows[0]["input_tokens"] == 10
    health = collector.get("/healthz").json()
    assert health["writer"]["unpriced_calls"] >= 1


def test_auth_401_without_key_403_with_wrong_role(collector: CollectorProcess) -> None:
    finance = collector.create_key("finance", "fin")
    ingest = collector.create_key("ingest", "ing")
    assert httpx.get(f"{collector.url}/api/v1/calls").status_code == 401
    assert httpx.post(f"{collector.url}/v1/traces", content=b"").status_code == 401
    assert collector.get("/api/v1/calls", key="tt_nope_nope").status_code == 401
    assert collector.get("/api/v1/calls", key=finance).status_code == 403
    assert collector.get("/api/v1/spend", key=finance).status_code == 200
    assert collector.get("/api/v1/spend", key=ingest).status_code == 403
    forbidden = collector.post(
        "/v1/traces", finance, content=b"", headers={"Content-Type": "application/x-protobuf"}
    )
    assert forbidden.status_code == 403 and "ingest" in forbidden.json()["detail"]
    assert (
        collector.post("/api/v1/keys", ingest, json={"role": "admin", "name": "x"}).status_code
        == 403
    )


def test_revoked_key_stops_working(collector: CollectorProcess) -> None:
    created = collector.post("/api/v1/keys", json={"role": "finance", "name": "temp"}).json()
    assert collector.get("/api/v1/spend", key=created["key"]).status_code == 200
    assert (
        httpx.delete(
            f"{collector.url}/api/v1/keys/{created['key_id']}", headers=collector.headers()
        ).status_code
        == 200
    )
    assert collector.get("/api/v1/spend", key=created["key"]).status_code == 401
    listed = collector.get("/api/v1/keys").json()["rows"]
    assert all("key_hash" not in row and "key" not in row for row in listed)


def test_spend_groups_and_buckets(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    send_spans(
        collector,
        key,
        {"service.name": "spend-app", "tokentrail.team": "alpha"},
        [chat_span("gpt-4o", 1000, 100, 0), chat_span("gpt-4o", 2000, 200, 0)],
    )
    send_spans(
        collector,
        key,
        {"service.name": "spend-app", "tokentrail.team": "beta"},
        [chat_span("gpt-4o-mini", 500, 50, 0)],
    )
    finance = collector.create_key("finance")

    def spend_rows() -> list[dict]:
        response = collector.get(
            "/api/v1/spend", key=finance, group_by="team,model", granularity="day"
        )
        rows = [r for r in response.json()["rows"] if r["team"] in ("alpha", "beta")]
        return rows if sum(r["calls"] for r in rows) == 3 else []

    rows = collector.wait_for(spend_rows)
    by_team = {row["team"]: row for row in rows}
    assert by_team["alpha"]["calls"] == 2 and by_team["alpha"]["input_tokens"] == 3000
    assert by_team["alpha"]["model"] == "gpt-4o" and by_team["beta"]["model"] == "gpt-4o-mini"
    alpha_cost = calc_price(
        Usage(input_tokens=3000, output_tokens=300), "gpt-4o", provider_id="openai"
    ).total_price
    assert Decimal(str(by_team["alpha"]["cost_usd"])) == alpha_cost
    assert all(row["period"].endswith("T00:00:00+00:00") for row in rows)
    assert "input_content" not in json.dumps(rows)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"group_by": "team,salary"}, "cannot group by salary"),
        ({"granularity": "week"}, "hour or day"),
        ({"from": "last tuesday"}, "not a time"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "before"),
    ],
)
def test_spend_bad_parameters_are_400(
    collector: CollectorProcess, params: dict, fragment: str
) -> None:
    response = collector.get("/api/v1/spend", **params)
    assert response.status_code == 400 and fragment in response.json()["detail"]


def test_calls_filters_and_paging(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    spans = [chat_span("gpt-4o-mini", i + 1, 1, 0) for i in range(5)]
    send_spans(collector, key, {"service.name": "paging-app", "tokentrail.team": "paging"}, spans)
    assert collector.wait_for(lambda: len(collector.calls(app="paging-app")) == 5)
    first = collector.get("/api/v1/calls", app="paging-app", limit=2).json()
    assert len(first["rows"]) == 2 and first["next_offset"] == 2
    last = collector.get("/api/v1/calls", app="paging-app", limit=2, offset=4).json()
    assert len(last["rows"]) == 1 and last["next_offset"] is None
    assert collector.get("/api/v1/calls", app="paging-app", limit=5000).status_code == 400
    assert collector.calls(app="paging-app", model="gpt-4o") == []
    assert collector.calls(team="paging", status="error") == []
    sneaky = collector.calls(team="paging' OR 1=1 --")
    assert sneaky == []


def test_content_is_redacted_and_reads_are_audited(collector: CollectorProcess) -> None:
    key = collector.create_key("ingest")
    messages = json.dumps(
        [
            {
                "role": "user",
                "parts": [
                    {
                        "type": "text",
                        "content": "my card is 4111 1111 1111 1111, mail jane@corp.example",
                    }
                ],
            }
        ]
    )
    span = chat_span("gpt-4o", 50, 5, 0, **{"gen_ai.input.messages": messages})
    send_spans(collector, key, {"service.name": "redact-app"}, [span])
    rows = collector.wait_for(lambda: collector.calls(app="redact-app"))
    content = rows[0]["input_content"]
    assert "4111" not in content and "jane@corp.example" not in content
    assert rows[0]["redaction_count"] == 2
    assert "gen_ai.input.messages" not in rows[0]["attributes"]
    compliance = collector.create_key("compliance")
    meta = collector.get("/api/v1/calls", key=compliance, app="redact-app").json()["rows"]
    assert meta and "input_content" not in meta[0]


def test_kill_9_after_acknowledgement_loses_and_duplicates_nothing(tmp_path) -> None:
    from tests.conftest import collector_env, free_port
    from tests.test_writer import otlp_body

    # Batches wait up to 60 s, so at the kill everything is only in the WAL.
    proc = CollectorProcess(
        tmp_path / "data", free_port(), collector_env(TOKENTRAIL_BATCH_MAX_SECONDS="60")
    )
    proc.start()
    try:
        key = proc.create_key("ingest")
        for n in range(6):
            response = proc.post(
                "/v1/traces",
                key,
                content=otlp_body(1000 + n * 10, 10),
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert response.status_code == 200
        proc.stop(signal.SIGKILL)
        proc.start()
        rows = proc.calls(limit=1000, **{"from": "2026-01-01", "to": "2027-01-01"})
        assert len(rows) == 60 and len({r["span_id"] for r in rows}) == 60
        proc.restart()  # a clean restart replays nothing twice
        assert len(proc.calls(limit=1000, **{"from": "2026-01-01", "to": "2027-01-01"})) == 60
    finally:
        proc.stop()


SERVER_URL = os.environ.get("TOKENTRAIL_TEST_CLICKHOUSE_URL", "")


@pytest.mark.skipif(
    not SERVER_URL, reason="set TOKENTRAIL_TEST_CLICKHOUSE_URL to test a ClickHouse server"
)
def test_collector_on_a_clickhouse_server(tmp_path) -> None:
    from tests.conftest import collector_env, free_port

    base, _, _ = SERVER_URL.rstrip("/").rpartition("/")
    database = f"tt_e2e_{uuid.uuid4().hex[:8]}"
    proc = CollectorProcess(
        tmp_path / "data",
        free_port(),
        collector_env(TOKENTRAIL_CLICKHOUSE_URL=f"{base}/{database}"),
    )
    proc.start()
    try:
        assert proc.get("/healthz").json()["store"]["backend"] == "clickhouse"
        key = proc.create_key("ingest")
        send_spans(proc, key, {"service.name": "server-app"}, [chat_span("gpt-4o", 100, 10, 50)])
        rows = proc.wait_for(lambda: proc.calls(app="server-app"))
        expected = calc_price(
            Usage(input_tokens=100, cache_read_tokens=50, output_tokens=10),
            "gpt-4o",
            provider_id="openai",
        ).total_price
        assert Decimal(str(rows[0]["cost_usd"])) == expected
        proc.restart()
        assert len(proc.calls(app="server-app")) == 1
    finally:
        proc.stop()
        from ingest.store import ServerStore

        ServerStore(f"{base}/{database}").command(f"DROP DATABASE IF EXISTS {database}")


def test_backpressure_answers_503_with_retry_after_and_keeps_what_it_took(tmp_path) -> None:
    from tests.conftest import collector_env, free_port
    from tests.test_writer import otlp_body

    # The store "falls behind": batches wait 60 s, and only 30 rows may wait.
    env = collector_env(
        TOKENTRAIL_BATCH_MAX_SECONDS="60",
        TOKENTRAIL_BATCH_MAX_ROWS="100000",
        TOKENTRAIL_QUEUE_MAX_ROWS="30",
    )
    proc = CollectorProcess(tmp_path / "data", free_port(), env)
    proc.start()
    try:
        key = proc.create_key("ingest")
        headers = {"Content-Type": "application/x-protobuf"}
        accepted = proc.post("/v1/traces", key, content=otlp_body(5000, 10), headers=headers)
        refused = proc.post("/v1/traces", key, content=otlp_body(5100, 10), headers=headers)
        assert accepted.status_code == 200
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert proc.get("/healthz").json()["writer"]["queued_rows"] == 20
        proc.restart()  # a clean stop flushes what was accepted
        assert len(proc.calls(limit=100, **{"from": "2026-01-01", "to": "2027-01-01"})) == 10
    finally:
        proc.stop()


def test_prometheus_metrics_count_what_happened(collector: CollectorProcess) -> None:
    from tests.test_writer import otlp_body

    key = collector.create_key("ingest")
    before = _metric_values(collector)
    collector.post(
        "/v1/traces",
        key,
        content=otlp_body(7000, 3),
        headers={"Content-Type": "application/x-protobuf"},
    )
    collector.post(
        "/v1/traces", key, content=b"junk", headers={"Content-Type": "application/x-protobuf"}
    )
    after = _metric_values(collector)
    assert after["tokentrail_spans_received_total"] - before["tokentrail_spans_received_total"] == 3
    assert after["tokentrail_bad_requests_total"] - before["tokentrail_bad_requests_total"] == 1
    assert "tokentrail_queue_rows" in after and "tokentrail_wal_bytes" in after
    assert httpx.get(f"{collector.url}/metrics").status_code == 401


def _metric_values(collector: CollectorProcess) -> dict[str, float]:
    response = collector.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        line.split()[0]: float(line.split()[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }

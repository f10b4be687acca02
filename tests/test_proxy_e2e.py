"""The capture proxy end to end: real SDKs → real mitmdump with TLS interception
→ simulated provider over HTTPS; spans → real collector → llm_calls rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price

from proxy_addon.eventstream import EventStreamDecoder
from tests import proxy_support
from tests.conftest import CollectorProcess, free_port
from tests.proxy_support import ProxyProcess

# The certificates and the simulator over HTTPS, shared with tests/faults/.
certs = proxy_support.certs
sim = proxy_support.sim


@pytest.fixture(scope="module")
def proxy(
    collector: CollectorProcess,
    certs: tuple[str, str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(
        tmp_path_factory.mktemp("proxy") / "data",
        free_port(),
        collector.url,
        collector.create_key("ingest", "proxy"),
        Path(certs[2]),
    )
    proc.start()
    yield proc
    proc.stop()


def openai_client(proxy: ProxyProcess, sim: Any, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{sim.url}/v1", api_key="sk-test-key", http_client=proxy.client(), **kwargs
    )


def rows_for(collector: CollectorProcess, team: str, count: int, timeout: float = 30) -> list[dict]:
    """The team's llm_calls rows once ``count`` have arrived (proxy → spool → collector)."""

    def ready() -> list[dict]:
        rows = collector.calls(team=team, limit=1000)
        return rows if len(rows) >= count else []

    rows = collector.wait_for(ready, timeout)
    assert len(rows) == count, f"expected {count} rows for {team}, got {collector.calls(team=team)}"
    return sorted(rows, key=lambda r: r["ts"])


def price(model: str, provider: str, row: dict) -> Decimal:
    return calc_price(
        Usage(
            input_tokens=row["input_tokens"],
            cache_read_tokens=row["cache_read_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            output_tokens=row["output_tokens"],
        ),
        model,
        provider_id=provider,
    ).total_price


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_openai_chat_plain_and_streamed_with_tools(collector, proxy, sim) -> None:
    client = openai_client(proxy, sim)
    team = {"x-tokentrail-team": "oa-chat", "x-tokentrail-project": "p1"}
    plain = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello there, how are you?"}],
        extra_headers={**team, "x-sim-cached-tokens": "0"},
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={**team, "x-sim-prompt-tokens": "2048", "x-sim-cached-tokens": "1024"},
        )
    )
    streamed_usage = chunks[-1].usage
    rows = rows_for(collector, "oa-chat", 2)
    first, second = rows
    assert (first["input_tokens"], first["output_tokens"]) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    # On an unknown host the OpenAI shape names no provider; pricing found OpenAI's list.
    assert first["source"] == "proxy" and first["provider"] == "openai"
    assert Decimal(str(first["cost_usd"])) == price("gpt-4o-mini", "openai", first)
    assert second["is_stream"] and second["input_tokens"] == streamed_usage.prompt_tokens == 2048
    assert second["cache_read_tokens"] == 1024 and second["finish_reason"] == "tool_calls"
    assert second["tool_call_count"] == 1 and second["ttft_ms"] is not None
    assert Decimal(str(second["cost_usd"])) == price("gpt-4o", "openai", second)
    assert second["project"] == "p1"
    # Our attribution headers never reach the provider; the credential is fingerprinted.
    seen = sim.requests[-1].headers
    assert not any(name.startswith("x-tokentrail-") for name in seen)
    assert second["api_key_fingerprint"] and "sk-test-key" not in json.dumps(rows)


def test_openai_responses_embeddings_and_completions(collector, proxy, sim) -> None:
    client = openai_client(proxy, sim)
    headers = {"x-tokentrail-team": "oa-other"}
    response = client.responses.create(model="gpt-4o", input="Say hi", extra_headers=headers)
    events = list(
        client.responses.create(
            model="gpt-4o-mini", input="Stream hi", stream=True, extra_headers=headers
        )
    )
    completed = [e for e in events if e.type == "response.completed"][0].response
    embedded = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], extra_headers=headers
    )
    legacy = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once", extra_headers=headers
    )
    rows = rows_for(collector, "oa-other", 4)
    by_op = {(r["operation"], r["is_stream"]): r for r in rows}
    assert by_op[("responses", False)]["input_tokens"] == response.usage.input_tokens
    assert by_op[("responses", False)]["output_tokens"] == response.usage.output_tokens
    assert by_op[("responses", True)]["input_tokens"] == completed.usage.input_tokens
    assert by_op[("embeddings", False)]["input_tokens"] == embedded.usage.prompt_tokens
    assert by_op[("embeddings", False)]["output_tokens"] == 0
    assert by_op[("completion", False)]["output_tokens"] == legacy.usage.completion_tokens
    for row in rows:
        assert row["cost_usd"] is not None, row


def test_anthropic_messages_cache_accounting_and_streamed_tool_use(collector, proxy, sim) -> None:
    client = anthropic.Anthropic(
        base_url=sim.url, api_key="sk-ant-test", http_client=proxy.client()
    )
    headers = {"x-tokentrail-team": "anth", "x-sim-cache-read": "1000", "x-sim-cache-write": "200"}
    message = client.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=200,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers,
    )
    tools = [
        {
            "name": "get_weather",
            "description": "w",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with client.messages.stream(
        model="claude-3-5-haiku-20241022",
        max_tokens=200,
        tools=tools,
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        extra_headers={"x-tokentrail-team": "anth"},
    ) as stream:
        final = stream.get_final_message()
    plain, streamed = rows_for(collector, "anth", 2)
    usage = message.usage
    assert plain["input_tokens"] == usage.input_tokens + 1000 + 200  # the whole prompt
    assert (plain["cache_read_tokens"], plain["cache_write_tokens"]) == (1000, 200)
    assert Decimal(str(plain["cost_usd"])) == price("claude-sonnet-4-20250514", "anthropic", plain)
    assert streamed["output_tokens"] == final.usage.output_tokens
    assert streamed["tool_call_count"] == 1 and streamed["finish_reason"] == "tool_use"


def test_gemini_and_bedrock_over_raw_http(collector, proxy, sim) -> None:
    headers = {"x-tokentrail-team": "raw", "x-goog-api-key": "AIza-test"}
    body = {"contents": [{"role": "user", "parts": [{"text": "hello gemini"}]}]}
    with proxy.client() as client:
        plain = client.post(
            f"{sim.url}/v1beta/models/gemini-2.0-flash:generateContent", json=body, headers=headers
        ).json()
        streamed = client.post(
            f"{sim.url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json=body,
            headers=headers,
        ).text
        converse = {"messages": [{"role": "user", "content": [{"text": "hello bedrock"}]}]}
        model = "anthropic.claude-3-haiku-20240307-v1:0"
        bedrock = client.post(
            f"{sim.url}/model/{model}/converse", json=converse, headers={"x-tokentrail-team": "raw"}
        ).json()
        stream_bytes = client.post(
            f"{sim.url}/model/{model}/converse-stream",
            json=converse,
            headers={"x-tokentrail-team": "raw"},
        ).content
    rows = rows_for(collector, "raw", 4)
    gemini_rows = [r for r in rows if r["provider"] == "google"]
    bedrock_rows = [r for r in rows if r["provider"] == "aws"]
    assert len(gemini_rows) == 2 and len(bedrock_rows) == 2
    assert {r["input_tokens"] for r in gemini_rows} == {plain["usageMetadata"]["promptTokenCount"]}
    last_sse = [json.loads(line[5:]) for line in streamed.splitlines() if line.startswith("data:")][
        -1
    ]
    assert any(
        r["output_tokens"] == last_sse["usageMetadata"]["candidatesTokenCount"]
        for r in gemini_rows
        if r["is_stream"]
    )
    plain_bedrock = next(r for r in bedrock_rows if not r["is_stream"])
    assert plain_bedrock["input_tokens"] == bedrock["usage"]["inputTokens"]
    assert plain_bedrock["output_tokens"] == bedrock["usage"]["outputTokens"]
    decoder = EventStreamDecoder()
    messages = decoder.feed(stream_bytes)
    metadata = [
        json.loads(payload)
        for headers_, payload in messages
        if headers_.get(":event-type") == "metadata"
    ][0]
    streamed_bedrock = next(r for r in bedrock_rows if r["is_stream"])
    assert streamed_bedrock["output_tokens"] == metadata["usage"]["outputTokens"]


def test_sdk_retry_of_a_429_and_a_500_are_recorded_as_attempts(collector, proxy, sim) -> None:
    client = openai_client(proxy, sim, max_retries=2)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "retry me"}],
        extra_headers={
            "x-tokentrail-team": "retry",
            "x-sim-fail": "429",
            "x-sim-fail-attempts": "1",
        },
    )
    with pytest.raises(openai.InternalServerError):
        openai_client(proxy, sim, max_retries=0).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "fail me"}],
            extra_headers={"x-tokentrail-team": "retry", "x-sim-fail-always": "500"},
        )
    rows = rows_for(collector, "retry", 3)
    failed, retried, broken = rows
    assert (failed["status"], failed["http_status"], failed["attempt"]) == ("error", 429, 0)
    assert failed["input_tokens"] is None and failed["cost_usd"] is None
    assert (retried["status"], retried["attempt"], retried["retry_of"]) == (
        "ok",
        1,
        failed["span_id"],
    )
    assert (broken["status"], broken["http_status"]) == ("error", 500) and broken["error_type"]


def test_responses_are_byte_identical_through_the_proxy(collector, proxy, sim) -> None:
    headers = {"authorization": "Bearer sk-x", "x-tokentrail-team": "bytes"}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "stream please"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with proxy.client() as client:
        for payload in (body, {**body, "stream": False}):
            sim.clear_requests()
            with client.stream(
                "POST", f"{sim.url}/v1/chat/completions", json=payload, headers=headers
            ) as response:
                received = b"".join(response.iter_raw())
            assert received == bytes(sim.requests[-1].response_body)
    rows_for(collector, "bytes", 2)


def test_a_slow_stream_reaches_the_client_event_by_event(collector, proxy, sim) -> None:
    """The proxy forwards what each read brings (proxy_addon/coalesce.py), never
    waiting for more: with 150 ms between events the first arrives long before
    the last, and the bytes are still the provider's."""
    headers = {
        "authorization": "Bearer sk-x",
        "x-tokentrail-team": "slow",
        "x-sim-token-delay-ms": "150",
    }
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "stream slowly"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 4,
    }
    with proxy.client() as client:
        sim.clear_requests()
        started = time.monotonic()
        arrivals: list[float] = []
        received = b""
        with client.stream(
            "POST", f"{sim.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            for piece in response.iter_raw():
                arrivals.append(time.monotonic() - started)
                received += piece
    assert received == bytes(sim.requests[-1].response_body)
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.3, arrivals
    row = rows_for(collector, "slow", 1)[0]
    assert row["is_stream"] and row["ttft_ms"] is not None and row["output_tokens"]


def test_unknown_traffic_passes_untouched_and_unrecorded(collector, proxy, sim) -> None:
    with proxy.client() as client:
        response = client.get(f"{sim.url}/health")
        models = client.get(f"{sim.url}/v1/models", headers={"x-tokentrail-team": "none"})
    assert response.status_code == 200 and models.status_code == 404
    time.sleep(1)
    assert collector.calls(team="none") == []


def test_collector_down_then_back_loses_nothing_and_duplicates_nothing(
    fresh_collector: CollectorProcess, certs, sim, tmp_path: Path
) -> None:
    proc = ProxyProcess(
        tmp_path / "proxy",
        free_port(),
        fresh_collector.url,
        fresh_collector.create_key("ingest", "proxy"),
        Path(certs[2]),
    )
    proc.start()
    try:
        fresh_collector.stop()
        client = openai_client(proc, sim)
        for i in range(200):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"q{i}"}],
                extra_headers={"x-tokentrail-team": "offline"},
            )
        fresh_collector.start()
        rows = rows_for(fresh_collector, "offline", 200, timeout=60)
        assert len({r["span_id"] for r in rows}) == 200
    finally:
        proc.stop()


def test_an_addon_that_raises_everywhere_still_forwards_everything(
    collector, certs, sim, tmp_path: Path
) -> None:
    proc = ProxyProcess(
        tmp_path / "chaos", free_port(), collector.url, "unused", Path(certs[2]), extra=("--chaos",)
    )
    proc.start()
    try:
        client = openai_client(proc, sim)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert reply.choices[0].message.content and chunks[-1].usage.total_tokens > 0
    finally:
        proc.stop()


def test_azure_deployment_path_takes_the_model_from_the_response(collector, proxy, sim) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=sim.url,
        api_version="2024-10-21",
        api_key="az-key",
        http_client=proxy.client(),
    )
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tokentrail-team": "azure"},
    )
    (row,) = rows_for(collector, "azure", 1)
    assert row["request_model"] == "gpt-4o" and row["response_model"] == reply.model
    assert row["input_tokens"] == reply.usage.prompt_tokens and row["cost_usd"] is not None


def test_traceparent_joins_the_callers_trace(collector, proxy, sim) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    openai_client(proxy, sim).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "traced"}],
        extra_headers={"x-tokentrail-team": "traced", "traceparent": f"00-{trace_id}-{parent}-01"},
    )
    (row,) = rows_for(collector, "traced", 1)
    assert (row["trace_id"], row["parent_span_id"]) == (trace_id, parent)


def test_reverse_listener_no_content_and_key_teams(collector, certs, sim, tmp_path: Path) -> None:
    secret = "sk-team-search-key"
    fingerprint = __import__("hashlib").sha256(secret.encode()).hexdigest()[:12]
    key_teams = tmp_path / "key-teams.json"
    key_teams.write_text(json.dumps({fingerprint: "search"}))
    reverse_port = free_port()
    proc = ProxyProcess(
        tmp_path / "rev",
        free_port(),
        collector.url,
        collector.create_key("ingest", "rev"),
        Path(certs[2]),
        extra=(
            "--reverse",
            f"{sim.url}={reverse_port}",
            "--no-content",
            "--key-teams",
            str(key_teams),
        ),
    )
    proc.start()
    try:
        # Base-URL style: the app points at the listener, no proxy settings, no CA.
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{reverse_port}/v1", api_key=secret)
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "my email is a@b.example"}]
        )
        (row,) = rows_for(collector, "search", 1)
        assert row["input_content"] == "" and row["output_content"] == ""
        assert row["api_key_fingerprint"] == fingerprint and row["input_tokens"] > 0
    finally:
        proc.stop()


def test_the_same_call_seen_by_proxy_and_sdk_is_one_row(collector, proxy, sim) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.propagate import inject
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": "twin-app", "tokentrail.team": "twins"})
    )
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                endpoint=f"{collector.url}/v1/traces",
                headers={"Authorization": f"Bearer {collector.create_key('ingest')}"},
            )
        )
    )
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as span:
        carrier: dict[str, str] = {}
        inject(carrier)  # what an instrumented HTTP client sends: traceparent
        reply = openai_client(proxy, sim).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "twin"}],
            extra_headers=carrier,
        )
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.id": reply.id,
                "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
            }
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    def merged() -> list[dict]:
        rows = collector.calls(trace_id=trace_id)
        return rows if len(rows) == 1 and rows[0]["source"] == "proxy+otlp" else []

    rows = collector.wait_for(merged, 30)
    assert rows, collector.calls(trace_id=trace_id)
    (row,) = rows
    assert (row["team"], row["app"]) == ("twins", "twin-app")  # context from the SDK
    assert row["input_tokens"] == reply.usage.prompt_tokens and row["http_status"] == 200
    assert row["api_key_fingerprint"]  # provider facts from the proxy

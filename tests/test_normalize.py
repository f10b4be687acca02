"""normalize: GenAI semantic-convention spans → llm_calls / tool_calls rows."""

from __future__ import annotations

import json
from typing import Any

from ingest.attribution import attribute_call
from ingest.normalize import normalize_spans, request_hash
from ingest.records import SpanRecord


def span(
    attributes: dict[str, Any],
    *,
    name: str = "chat gpt-4o",
    span_id: str = "00000000000000a1",
    parent: str = "",
    resource: dict[str, Any] | None = None,
    status: str = "unset",
    events: list | None = None,
) -> SpanRecord:
    return SpanRecord(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind="client",
        start_ns=1_795_000_000_000_000_000,
        end_ns=1_795_000_000_250_000_000,
        status=status,
        status_message="",
        attributes=attributes,
        resource=resource or {"service.name": "app"},
        events=events or [],
        scope_name="test",
    )


CURRENT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "aws.bedrock",
    "gen_ai.request.model": "anthropic.claude-3-5-sonnet",
    "gen_ai.response.model": "claude-3-5-sonnet",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 800,
    "gen_ai.usage.cache_creation.input_tokens": 100,
    "gen_ai.usage.reasoning.output_tokens": 50,
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "gen_ai.response.id": "msg_123",
    "server.address": "bedrock-runtime.us-east-1.amazonaws.com",
    "http.response.status_code": 200,
    "gen_ai.request.stream": True,
    "gen_ai.response.time_to_first_chunk": 0.42,
}


def test_current_convention_maps_every_column() -> None:
    row = normalize_spans([span(CURRENT)]).llm_calls[0]
    assert row["provider"] == "aws" and row["operation"] == "chat"
    assert (row["request_model"], row["response_model"]) == (
        "anthropic.claude-3-5-sonnet",
        "claude-3-5-sonnet",
    )
    assert (
        row["input_tokens"],
        row["output_tokens"],
        row["cache_read_tokens"],
        row["cache_write_tokens"],
        row["reasoning_tokens"],
    ) == (1200, 300, 800, 100, 50)
    assert row["finish_reason"] == "stop,length" and row["provider_request_id"] == "msg_123"
    assert row["http_status"] == 200 and row["is_stream"] is True
    assert abs(row["ttft_ms"] - 420.0) < 1e-9 and row["duration_ms"] == 250.0
    assert row["status"] == "ok" and row["error_type"] == "" and row["source"] == "otlp"
    assert row["ts"] == 1_795_000_000_000_000  # microseconds


def test_previous_generation_names_are_read() -> None:
    old = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 7,
        "gen_ai.usage.cache_creation_input_tokens": 3,
    }
    row = normalize_spans([span(old)]).llm_calls[0]
    assert row["operation"] == "chat" and row["provider"] == "openai"
    assert (row["input_tokens"], row["output_tokens"], row["cache_write_tokens"]) == (70, 7, 3)


def test_cache_write_new_name_and_missing_usage_stays_unknown() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude",
        "gen_ai.usage.cache_write.input_tokens": 9,
    }
    row = normalize_spans([span(attrs)]).llm_calls[0]
    assert row["cache_write_tokens"] == 9
    assert row["input_tokens"] is None and row["output_tokens"] is None  # never invented


def test_errors_and_operations() -> None:
    failed = {**CURRENT, "error.type": "rate_limit_exceeded", "http.response.status_code": 429}
    row = normalize_spans([span(failed, status="error")]).llm_calls[0]
    assert (
        row["status"] == "error"
        and row["error_type"] == "rate_limit_exceeded"
        and row["http_status"] == 429
    )
    for otel, ours in [
        ("text_completion", "completion"),
        ("embeddings", "embeddings"),
        ("generate_content", "generate_content"),
    ]:
        attrs = {
            "gen_ai.operation.name": otel,
            "gen_ai.provider.name": "gcp.gemini",
            "gen_ai.request.model": "m",
            "gen_ai.usage.input_tokens": 5,
        }
        row = normalize_spans([span(attrs)]).llm_calls[0]
        assert row["operation"] == ours and row["provider"] == "google"
    embed = normalize_spans(
        [
            span(
                {
                    "gen_ai.operation.name": "embeddings",
                    "gen_ai.request.model": "e",
                    "gen_ai.usage.input_tokens": 5,
                }
            )
        ]
    ).llm_calls[0]
    assert embed["output_tokens"] == 0


def test_non_genai_spans_make_no_rows() -> None:
    batch = normalize_spans(
        [
            span({"http.request.method": "GET"}, name="GET /"),
            span({"gen_ai.operation.name": "invoke_agent"}, name="invoke_agent a"),
        ]
    )
    assert batch.llm_calls == [] and batch.tool_calls == []


def test_tool_calls_requested_and_executed_are_linked() -> None:
    output = json.dumps(
        [
            {
                "role": "assistant",
                "finish_reason": "tool_calls",
                "parts": [
                    {"type": "text", "content": "let me check"},
                    {
                        "type": "tool_call",
                        "id": "call_7",
                        "name": "get_weather",
                        "arguments": {"city": "Oslo"},
                    },
                ],
            }
        ]
    )
    model = span({**CURRENT, "gen_ai.output.messages": output})
    tool = span(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_7",
            "gen_ai.tool.call.arguments": '{"city": "Oslo"}',
            "gen_ai.tool.call.result": '{"temp": 3}',
        },
        name="execute_tool get_weather",
        span_id="00000000000000b2",
        parent="00000000000000ff",
    )
    batch = normalize_spans([model, tool])
    assert batch.llm_calls[0]["tool_call_count"] == 1
    requested, executed = batch.tool_calls
    assert requested["status"] == "requested" and requested["tool_name"] == "get_weather"
    assert json.loads(requested["arguments"]) == {"city": "Oslo"}
    assert (
        executed["span_id"] == "00000000000000b2" and executed["llm_span_id"] == "00000000000000a1"
    )
    assert executed["result"] == '{"temp": 3}' and executed["duration_ms"] == 250.0


def test_content_from_attributes_and_events() -> None:
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
    event = {
        "name": "gen_ai.client.inference.operation.details",
        "time_ns": 1,
        "attributes": {"gen_ai.output.messages": '[{"role": "assistant", "parts": []}]'},
    }
    row = normalize_spans(
        [
            span(
                {
                    **CURRENT,
                    "gen_ai.input.messages": messages,
                    "gen_ai.system_instructions": "be brief",
                },
                events=[event],
            )
        ]
    ).llm_calls[0]
    assert row["input_content"] == "be brief\n" + messages
    assert row["output_content"].startswith('[{"role": "assistant"')
    assert row["span_index"] == 0


def test_request_hash_matches_same_prompt_only() -> None:
    assert request_hash("openai", "gpt-4o", "hello") == request_hash("openai", "gpt-4o", "hello")
    assert request_hash("openai", "gpt-4o", "hello") != request_hash(
        "openai", "gpt-4o-mini", "hello"
    )
    assert request_hash("openai", "gpt-4o", "") == ""


def test_attribution_prefers_span_over_resource() -> None:
    who = attribute_call(
        {"tokentrail.team": "span-team", "tokentrail.user": "u1"},
        {
            "tokentrail.team": "resource-team",
            "tokentrail.project": "p",
            "service.name": "svc",
            "tokentrail.route": "r",
        },
    )
    assert who == {"team": "span-team", "project": "p", "user_id": "u1", "app": "svc", "route": "r"}

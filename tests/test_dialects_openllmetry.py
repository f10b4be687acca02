"""OpenLLMetry / Traceloop: current releases (GenAI names plus their own),
older ones (llm.request.type, flattened gen_ai.prompt.N / gen_ai.completion.N),
and the Traceloop SDK's workflow / tool spans."""

from __future__ import annotations

import json

from ingest.dialects import openllmetry
from ingest.normalize import normalize_spans
from ingest.pipeline import PipelineConfig, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionRules
from tests.span_records import span_record

# As opentelemetry-instrumentation-openai 0.62 records a chat completion that
# asks for a tool (names and shapes copied from a real span).
CURRENT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini",
    "gen_ai.response.id": "chatcmpl-tm4M",
    "gen_ai.response.finish_reasons": ["tool_call"],
    "gen_ai.is_streaming": True,
    "gen_ai.openai.api_base": "https://api.openai.com/v1/",
    "gen_ai.headers": "{'Authorization': 'Bearer sk-proj-abcdefghijklmnopqrstuvwx1234567890'}",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 9,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.reasoning_tokens": 4,
    "gen_ai.usage.total_tokens": 1209,
    "gen_ai.input.messages": '[{"role": "user", "parts": [{"content": "Oslo?", "type": "text"}]}]',
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [
                    {
                        "type": "tool_call",
                        "name": "get_weather",
                        "id": "call_1",
                        "arguments": {"city": "Oslo"},
                    }
                ],
                "finish_reason": "tool_call",
            }
        ]
    ),
}
# Older releases: llm.* names and flattened content.
OLDER = {
    "llm.request.type": "chat",
    "gen_ai.system": "Anthropic",
    "gen_ai.request.model": "claude-3-5-sonnet-20241022",
    "gen_ai.response.model": "claude-3-5-sonnet-20241022",
    "gen_ai.usage.prompt_tokens": 3000,
    "gen_ai.usage.completion_tokens": 120,
    "gen_ai.usage.cache_read_input_tokens": 2000,
    "gen_ai.usage.cache_creation_input_tokens": 500,
    "llm.usage.total_tokens": 3120,
    "llm.is_streaming": False,
    "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": "What is the weather in Oslo?",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.finish_reason": "tool_use",
    "gen_ai.completion.0.content": "Let me check.",
    "gen_ai.completion.0.tool_calls.0.id": "toolu_1",
    "gen_ai.completion.0.tool_calls.0.name": "get_weather",
    "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Oslo"}',
    "traceloop.association.properties.team": "travel",
    "traceloop.association.properties.user_id": "u-42",
}


def test_current_release_maps_every_column() -> None:
    batch = normalize_spans([span_record(CURRENT, name="openai.chat")])
    row = batch.llm_calls[0]
    assert (row["provider"], row["operation"], row["request_model"]) == (
        "openai",
        "chat",
        "gpt-4o-mini",
    )
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1200, 9, 1024)
    assert row["reasoning_tokens"] == 4 and row["cache_write_tokens"] is None
    assert row["is_stream"] is True and row["server_address"] == "api.openai.com"
    assert row["finish_reason"] == "tool_call" and row["provider_request_id"] == "chatcmpl-tm4M"
    assert row["tool_call_count"] == 1
    assert batch.tool_calls[0]["tool_call_id"] == "call_1"
    assert json.loads(batch.tool_calls[0]["arguments"]) == {"city": "Oslo"}


def test_older_release_with_flattened_content_and_association_properties() -> None:
    batch = normalize_spans([span_record(OLDER, name="anthropic.chat")])
    row = batch.llm_calls[0]
    assert (row["provider"], row["response_model"]) == ("anthropic", "claude-3-5-sonnet-20241022")
    assert (
        row["input_tokens"],
        row["output_tokens"],
        row["cache_read_tokens"],
        row["cache_write_tokens"],
    ) == (3000, 120, 2000, 500)
    assert row["is_stream"] is False and row["finish_reason"] == "tool_use"
    assert json.loads(row["input_content"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is the weather in Oslo?"}]}
    ]
    answered = json.loads(row["output_content"])[0]
    assert answered["finish_reason"] == "tool_use" and answered["parts"][0]["type"] == "text"
    assert row["tool_call_count"] == 1
    assert (batch.tool_calls[0]["tool_call_id"], batch.tool_calls[0]["tool_name"]) == (
        "toolu_1",
        "get_weather",
    )
    assert (row["team"], row["user_id"]) == ("travel", "u-42")
    # The app's own tokentrail.* attribution wins over association properties.
    row = normalize_spans([span_record({**OLDER, "tokentrail.team": "payments"})]).llm_calls[0]
    assert (row["team"], row["user_id"]) == ("payments", "u-42")


def test_workflow_and_tool_spans_of_the_traceloop_sdk() -> None:
    workflow = span_record(
        {
            "traceloop.span.kind": "workflow",
            "traceloop.entity.name": "trip_planner",
            "traceloop.workflow.name": "trip_planner",
        },
        name="trip_planner.workflow",
        span_id="00000000000000c0",
    )
    chat = span_record(
        {**OLDER, "traceloop.workflow.name": "trip_planner"},
        name="anthropic.chat",
        span_id="00000000000000c1",
        parent="00000000000000c0",
    )
    tool = span_record(
        {
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "get_weather",
            "traceloop.workflow.name": "trip_planner",
            "traceloop.entity.input": '{"args": [], "kwargs": {"city": "Oslo"}}',
            "traceloop.entity.output": '{"temp": 3}',
        },
        name="get_weather.tool",
        span_id="00000000000000c2",
        parent="00000000000000c0",
        start_ms=300,
    )
    batch = normalize_spans([workflow, chat, tool])
    assert [c["span_id"] for c in batch.llm_calls] == ["00000000000000c1"]
    requested, executed = batch.tool_calls
    assert (executed["tool_name"], executed["result"], executed["status"]) == (
        "get_weather",
        '{"temp": 3}',
        "ok",
    )
    assert json.loads(executed["arguments"])["kwargs"] == {"city": "Oslo"}
    assert executed["tool_call_id"] == "" and executed["llm_span_id"] == "00000000000000c1"
    assert requested["llm_span_id"] == "00000000000000c1"


def test_execute_tool_span_under_the_traceloop_sdk_is_still_a_tool() -> None:
    marked = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_1",
        "traceloop.workflow.name": "trip_planner",
    }
    span = span_record(marked, name="execute_tool get_weather")
    assert openllmetry.recognizes(span)
    executed = normalize_spans([span]).tool_calls[0]
    assert (executed["tool_name"], executed["tool_call_id"]) == ("get_weather", "call_1")


def test_content_and_headers_are_redacted_and_kept_out_of_call_attributes() -> None:
    config = PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())
    leaky = {
        **OLDER,
        "gen_ai.prompt.0.content": "I am jane@example.com",
        "gen_ai.prompt.version": "3",
    }
    tables = process_spans([span_record({**leaky, **CURRENT})], config).tables
    stored = dict(tables["spans"].column("attributes")[0].as_py())
    assert "jane@example.com" not in stored["gen_ai.prompt.0.content"]
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in stored["gen_ai.headers"]
    kept = dict(tables["llm_calls"].to_pylist()[0]["attributes"])
    content = ("gen_ai.prompt.0.content", "gen_ai.completion.0.content")
    assert not [k for k in kept if k in content or k.endswith(".arguments")]
    assert kept["gen_ai.completion.0.finish_reason"] == "tool_use"  # not content
    assert "gen_ai.headers" not in kept and "gen_ai.input.messages" not in kept
    assert kept["gen_ai.prompt.version"] == "3"  # not content

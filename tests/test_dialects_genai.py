"""GenAI semantic conventions, every generation: content in attributes, in the
v1.37 details event, in the v1.28 message/choice events and in the v1.26
prompt/completion events; tools linked by call id, parent span or sibling."""

from __future__ import annotations

import json
from typing import Any

from ingest.dialects import DIALECTS, content_keys_in, genai, openinference, openllmetry
from ingest.normalize import normalize_spans
from ingest.pipeline import PipelineConfig, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionRules
from tests.span_records import event, span_record

CHAT_128 = {  # what a v1.28-era instrumentation (gen_ai.system) puts on the span
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 40,
    "gen_ai.response.finish_reasons": ["tool_calls"],
}
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def body(content: dict[str, Any]) -> dict[str, str]:
    return {"gen_ai.system": "openai", "gen_ai.event.content": json.dumps(content)}


def test_dialects_are_tried_most_specific_first() -> None:
    assert (openinference, openllmetry, genai) == DIALECTS
    for dialect in DIALECTS:
        assert callable(dialect.model_call_facts) and callable(dialect.executed_tool_facts)
        assert callable(dialect.requested_tool_calls)


def test_v128_message_and_choice_events_with_json_bodies() -> None:
    events = [
        event("gen_ai.system.message", body({"content": "be brief"})),
        event("gen_ai.user.message", body({"content": "weather in Oslo?"})),
        event(
            "gen_ai.choice",
            body(
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                }
            ),
        ),
    ]
    batch = normalize_spans([span_record(CHAT_128, name="chat gpt-4o-mini", events=events)])
    row = batch.llm_calls[0]
    assert row["provider"] == "openai" and row["input_tokens"] == 1200
    asked = json.loads(row["input_content"])
    assert [m["role"] for m in asked] == ["system", "user"]
    assert asked[1]["parts"] == [{"type": "text", "content": "weather in Oslo?"}]
    answered = json.loads(row["output_content"])
    assert answered[0]["finish_reason"] == "tool_calls"
    assert row["tool_call_count"] == 1
    requested = batch.tool_calls[0]
    assert (requested["tool_call_id"], requested["tool_name"], requested["status"]) == (
        "call_1",
        "get_weather",
        "requested",
    )
    assert json.loads(requested["arguments"]) == {"city": "Oslo"}


def test_v128_events_with_flattened_bodies_and_tool_messages() -> None:
    events = [
        event("gen_ai.user.message", {"gen_ai.system": "openai", "content": "hi"}),
        event(
            "gen_ai.assistant.message",
            {"tool_calls": [WEATHER_CALL]},  # a kvlist/array body arrives structured
        ),
        event("gen_ai.tool.message", {"id": "call_1", "content": '{"temp": 3}'}),
        event("gen_ai.choice", {"finish_reason": "stop", "message": {"content": "It is 3 C."}}),
    ]
    row = normalize_spans([span_record(CHAT_128, events=events)]).llm_calls[0]
    asked = json.loads(row["input_content"])
    assert asked[1]["parts"][0]["type"] == "tool_call" and asked[1]["parts"][0]["id"] == "call_1"
    assert asked[2]["parts"] == [
        {"type": "tool_call_response", "id": "call_1", "result": '{"temp": 3}'}
    ]
    assert json.loads(row["output_content"])[0]["parts"][0]["content"] == "It is 3 C."
    # Tool calls in the *input* (earlier turns) are not requests of this call.
    assert row["tool_call_count"] == 0


def test_v126_prompt_and_completion_events_and_attributes() -> None:
    old = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 7,
    }
    events = [
        event("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "hi"}]'}),
        event("gen_ai.content.completion", {"gen_ai.completion": '[{"content": "hello"}]'}),
    ]
    row = normalize_spans([span_record(old, events=events)]).llm_calls[0]
    assert row["operation"] == "chat" and (row["input_tokens"], row["output_tokens"]) == (70, 7)
    assert row["input_content"] == '[{"role": "user", "content": "hi"}]'
    assert row["output_content"] == '[{"content": "hello"}]'
    as_attributes = {**old, "gen_ai.prompt": "question", "gen_ai.completion": "answer"}
    row = normalize_spans([span_record(as_attributes)]).llm_calls[0]
    assert (row["input_content"], row["output_content"]) == ("question", "answer")


def test_exception_event_names_the_error() -> None:
    failed = span_record(
        CHAT_128,
        status="error",
        events=[event("exception", {"exception.type": "openai.RateLimitError"})],
    )
    row = normalize_spans([failed]).llm_calls[0]
    assert row["status"] == "error" and row["error_type"] == "openai.RateLimitError"


AGENT = "00000000000000a0"


def tool_span(span_id: str, parent: str, start_ms: int, **attributes: Any) -> Any:
    return span_record(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather", **attributes},
        name="execute_tool get_weather",
        span_id=span_id,
        parent=parent,
        start_ms=start_ms,
    )


def test_agent_loop_links_tools_by_id_parent_and_sibling() -> None:
    """invoke_agent → chat (asks for get_weather) → execute_tool → chat."""
    output = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {}}
                ],
                "finish_reason": "tool_calls",
            }
        ]
    )
    agent = span_record(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather"},
        name="invoke_agent weather",
        span_id="00000000000000a0",
        duration_ms=900,
    )
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    first = span_record(
        {**chat, "gen_ai.output.messages": output},
        span_id="00000000000000a1",
        parent=AGENT,
    )
    second = span_record(chat, span_id="00000000000000a3", parent=AGENT, start_ms=500)
    by_id = tool_span("00000000000000a2", AGENT, 300, **{"gen_ai.tool.call.id": "call_1"})
    batch = normalize_spans([agent, first, by_id, second])
    assert [c["span_id"] for c in batch.llm_calls] == ["00000000000000a1", "00000000000000a3"]
    requested, executed = batch.tool_calls
    assert requested["status"] == "requested" and executed["status"] == "ok"
    assert executed["llm_span_id"] == "00000000000000a1"

    # No call id: the sibling model call that asked for tools before the tool ran.
    no_id = tool_span("00000000000000a2", AGENT, 300)
    executed = normalize_spans([agent, first, no_id, second]).tool_calls[1]
    assert executed["llm_span_id"] == "00000000000000a1"
    # No call id, no content (finish reason only): still the sibling that asked.
    quiet = span_record(
        {**chat, "gen_ai.response.finish_reasons": ["tool_calls"]},
        span_id="00000000000000a1",
        parent=AGENT,
    )
    executed = normalize_spans([agent, quiet, no_id, second]).tool_calls[0]
    assert executed["llm_span_id"] == "00000000000000a1"
    # A tool run inside the model-call span (e.g. a framework's auto tool loop).
    inside = tool_span("00000000000000a2", "00000000000000a3", 600)
    executed = normalize_spans([agent, quiet, second, inside]).tool_calls[0]
    assert executed["llm_span_id"] == "00000000000000a3"
    # A sibling call that asked for nothing is not the requester.
    executed = normalize_spans([agent, second, no_id]).tool_calls[0]
    assert executed["llm_span_id"] == ""


def test_content_in_events_is_redacted_and_kept_out_of_call_attributes() -> None:
    events = [
        event("gen_ai.user.message", body({"content": "mail me at jane.doe@example.com"})),
        event("gen_ai.user.message", {"content": "or call +1 415 555 0100"}),
    ]
    config = PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())
    attributes = {**CHAT_128, "gen_ai.prompt": "jane.doe@example.com"}
    tables = process_spans([span_record(attributes, events=events)], config).tables
    stored_events = tables["spans"].column("events")[0].as_py()
    assert "jane.doe@example.com" not in stored_events and "555 0100" not in stored_events
    call = tables["llm_calls"].to_pylist()[0]
    assert "jane.doe@example.com" not in call["input_content"]
    assert "gen_ai.prompt" not in dict(call["attributes"])
    assert dict(call["attributes"])["gen_ai.system"] == "openai"
    assert sorted(content_keys_in(attributes)) == ["gen_ai.prompt"]


def test_output_in_attribute_and_details_event_counts_each_tool_call_once() -> None:
    output = json.dumps(
        [{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_9", "name": "f"}]}]
    )
    details = event("gen_ai.client.inference.operation.details", {"gen_ai.output.messages": output})
    span = span_record({**CHAT_128, "gen_ai.output.messages": output}, events=[details])
    batch = normalize_spans([span])
    assert batch.llm_calls[0]["tool_call_count"] == 1 and len(batch.tool_calls) == 1

"""OpenInference: LLM / EMBEDDING spans → llm_calls, TOOL spans → tool_calls,
AGENT / CHAIN spans only structure; flattened messages become stored content."""

from __future__ import annotations

import json
from typing import Any

from ingest.normalize import normalize_spans
from ingest.pipeline import PipelineConfig, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionRules
from tests.span_records import event, span_record

# As openinference-instrumentation-openai 0.1.66 records a chat completion
# that asks for a tool (attribute names and shapes copied from a real span).
LLM = {
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.invocation_parameters": '{"model": "gpt-4o-mini", "stream": true}',
    "llm.token_count.prompt": 1200,
    "llm.token_count.completion": 9,
    "llm.token_count.total": 1209,
    "llm.token_count.prompt_details.cache_read": 1024,
    "llm.token_count.completion_details.reasoning": 0,
    "llm.finish_reason": "tool_calls",
    "llm.input_messages.0.message.role": "system",
    "llm.input_messages.0.message.content": "be brief",
    "llm.input_messages.1.message.role": "user",
    "llm.input_messages.1.message.contents.0.message_content.type": "text",
    "llm.input_messages.1.message.contents.0.message_content.text": "Oslo? jane@example.com",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Oslo"}',
    "llm.tools.0.tool.json_schema": '{"type": "function"}',
    "input.mime_type": "application/json",
    "input.value": '{"messages": [{"role": "user", "content": "jane@example.com"}]}',
    "output.mime_type": "application/json",
    "output.value": '{"id":"chatcmpl-123","choices":[]}',
    "metadata": '{"team": "search", "user_id": "u-7"}',
}


def llm_span(attributes: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("name", "ChatCompletion")
    return span_record(LLM if attributes is None else attributes, **kwargs)


def test_llm_span_maps_every_column() -> None:
    span = llm_span(events=[event("First Token Stream Event", at_ms=120)])
    batch = normalize_spans([span])
    row = batch.llm_calls[0]
    assert (row["provider"], row["operation"]) == ("openai", "chat")
    assert (row["request_model"], row["response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1200, 9, 1024)
    assert row["cache_write_tokens"] is None and row["reasoning_tokens"] == 0
    assert row["is_stream"] is True and row["ttft_ms"] == 120.0
    assert row["finish_reason"] == "tool_calls" and row["provider_request_id"] == "chatcmpl-123"
    assert (row["status"], row["source"], row["attempt"]) == ("ok", "otlp", 0)
    asked = json.loads(row["input_content"])
    assert asked == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "user",
            "parts": [{"type": "text", "content": "Oslo? jane@example.com"}],
        },
    ]
    answered = json.loads(row["output_content"])
    assert answered[0]["finish_reason"] == "tool_calls"
    assert row["tool_call_count"] == 1
    requested = batch.tool_calls[0]
    assert (requested["tool_call_id"], requested["tool_name"]) == ("call_1", "get_weather")
    assert requested["arguments"] == '{"city": "Oslo"}' and requested["status"] == "requested"
    # metadata attributes the call where tokentrail.* / service.name say nothing.
    assert (row["team"], row["user_id"], row["app"]) == ("search", "u-7", "app")


def test_tokentrail_attribution_wins_over_metadata() -> None:
    row = normalize_spans([llm_span({**LLM, "tokentrail.team": "payments"})]).llm_calls[0]
    assert row["team"] == "payments" and row["user_id"] == "u-7"


def test_without_messages_content_is_the_raw_input_and_output_value() -> None:
    bare = {k: v for k, v in LLM.items() if not k.startswith("llm.") or "token" in k}
    bare["llm.model_name"] = "gpt-4o-mini"
    row = normalize_spans([llm_span(bare)]).llm_calls[0]
    assert row["input_content"] == LLM["input.value"]
    assert row["output_content"] == LLM["output.value"]
    # The response JSON's tool calls still count.
    with_call = {
        **bare,
        "output.value": json.dumps(
            {
                "id": "chatcmpl-9",
                "choices": [
                    {
                        "finish_reason": "tool_calls",
                        "message": {
                            "tool_calls": [
                                {"id": "c9", "function": {"name": "f", "arguments": "{}"}}
                            ]
                        },
                    }
                ],
            }
        ),
    }
    batch = normalize_spans([llm_span(with_call)])
    assert batch.llm_calls[0]["tool_call_count"] == 1
    assert batch.llm_calls[0]["provider_request_id"] == "chatcmpl-9"
    assert batch.tool_calls[0]["tool_call_id"] == "c9"


def test_embedding_and_completion_spans() -> None:
    embedding = {
        "openinference.span.kind": "EMBEDDING",
        "llm.system": "openai",
        "embedding.model_name": "text-embedding-3-small",
        "embedding.invocation_parameters": '{"model": "text-embedding-3-small"}',
        "embedding.embeddings.0.embedding.text": "hello",
        "embedding.embeddings.0.embedding.vector": [0.1, 0.2],
        "llm.token_count.prompt": 5,
        "llm.token_count.total": 5,
    }
    row = normalize_spans([span_record(embedding, name="CreateEmbeddings")]).llm_calls[0]
    assert row["operation"] == "embeddings" and row["request_model"] == "text-embedding-3-small"
    assert (row["input_tokens"], row["output_tokens"]) == (5, 0)
    completion = {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.model_name": "gpt-3.5-turbo-instruct",
        "llm.prompts.0.prompt.text": "Say hi",
        "llm.choices.0.completion.text": "hi",
        "llm.token_count.prompt": 3,
        "llm.token_count.completion": 1,
    }
    row = normalize_spans([span_record(completion, name="Completion")]).llm_calls[0]
    assert row["operation"] == "completion"
    assert json.loads(row["output_content"])[0]["parts"][0]["content"] == "hi"


def test_agent_chain_and_tool_spans() -> None:
    """AGENT → LLM (asks) → TOOL → LLM; the TOOL span has no call id (the usual
    @tracer.tool case), so it is linked to the sibling LLM span that asked."""
    agent = span_record(
        {"openinference.span.kind": "AGENT", "input.value": "weather?"},
        name="agent",
        span_id="00000000000000b0",
    )
    chain = span_record(
        {"openinference.span.kind": "CHAIN"}, name="plan", span_id="00000000000000bc"
    )
    first = llm_span(span_id="00000000000000b1", parent="00000000000000b0")
    tool = span_record(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "tool.parameters": '{"type": "object"}',
            "input.value": '{"city": "Oslo"}',
            "output.value": '{"temp": 3}',
        },
        name="get_weather",
        span_id="00000000000000b2",
        parent="00000000000000b0",
        start_ms=300,
        status="ok",
    )
    answer = {**LLM, "llm.finish_reason": "stop"}
    answer = {k: v for k, v in answer.items() if "tool_calls" not in k}
    second = llm_span(answer, span_id="00000000000000b3", parent="00000000000000b0", start_ms=600)
    batch = normalize_spans([agent, chain, first, tool, second])
    assert [c["span_id"] for c in batch.llm_calls] == ["00000000000000b1", "00000000000000b3"]
    requested, executed = batch.tool_calls
    assert executed["span_id"] == "00000000000000b2"
    assert (executed["tool_name"], executed["arguments"], executed["result"]) == (
        "get_weather",
        '{"city": "Oslo"}',
        '{"temp": 3}',
    )
    assert executed["status"] == "ok" and executed["duration_ms"] == 250.0
    assert executed["llm_span_id"] == requested["llm_span_id"] == "00000000000000b1"
    # With tool.id the link is by call id, whatever the tree looks like.
    tool["attributes"]["tool.id"] = "call_1"
    tool["parent_span_id"] = "00000000000000ff"
    executed = normalize_spans([first, tool]).tool_calls[1]
    assert executed["tool_call_id"] == "call_1" and executed["llm_span_id"] == "00000000000000b1"


def test_failed_llm_span_takes_the_exception_type() -> None:
    failed = llm_span(
        {"openinference.span.kind": "LLM", "llm.invocation_parameters": '{"model": "gpt-4o"}'},
        status="error",
        events=[event("exception", {"exception.type": "openai.APIConnectionError"})],
    )
    row = normalize_spans([failed]).llm_calls[0]
    assert row["status"] == "error" and row["error_type"] == "openai.APIConnectionError"
    assert row["input_tokens"] is None and row["request_model"] == "gpt-4o"


def test_flattened_content_is_redacted_everywhere_and_not_in_call_attributes() -> None:
    config = PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())
    tables = process_spans([llm_span()], config).tables
    span_attributes = dict(tables["spans"].column("attributes")[0].as_py())
    text = "llm.input_messages.1.message.contents.0.message_content.text"
    assert "jane@example.com" not in span_attributes[text]
    assert "jane@example.com" not in span_attributes["input.value"]
    call = tables["llm_calls"].to_pylist()[0]
    kept = dict(call["attributes"])
    assert not [k for k in kept if k.startswith(("llm.input_messages", "llm.output_messages"))]
    assert "input.value" not in kept and kept["llm.token_count.prompt"] == "1200"
    assert "jane@example.com" not in call["input_content"]
    assert call["cost_usd"] is not None and call["cost_source"] == "genai-prices"
    # Embedded texts are content; the vectors beside them are not.
    embedding = {
        "openinference.span.kind": "EMBEDDING",
        "embedding.embeddings.0.embedding.text": "jane@example.com",
        "embedding.embeddings.0.embedding.vector": [0.5, 0.25],
    }
    stored = process_spans([span_record(embedding)], config).tables["spans"]
    stored_attributes = dict(stored.column("attributes")[0].as_py())
    assert "jane@example.com" not in stored_attributes["embedding.embeddings.0.embedding.text"]
    assert stored_attributes["embedding.embeddings.0.embedding.vector"] == "[0.5,0.25]"

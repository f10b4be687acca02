"""OpenTelemetry GenAI semantic conventions → llm_calls / tool_calls facts.

Reads every generation: v1.37+ (``gen_ai.provider.name``, content in
``gen_ai.input.messages`` / ``gen_ai.output.messages`` attributes or in the
``gen_ai.client.inference.operation.details`` event), v1.28–1.36
(``gen_ai.system``; content in ``gen_ai.system.message`` / ``gen_ai.user.message``
/ ``gen_ai.assistant.message`` / ``gen_ai.tool.message`` / ``gen_ai.choice``
events, whose body is flattened into attributes or JSON in
``gen_ai.event.content``), and v1.26–1.27 (``gen_ai.usage.prompt_tokens``;
``gen_ai.prompt`` / ``gen_ai.completion`` as attributes or in the
``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events).
"""

from __future__ import annotations

from typing import Any

from ingest.dialects import common
from ingest.dialects.common import first, int_or_none, text
from ingest.pricing import provider_id_from_otel
from ingest.records import AttrValue, EventRecord, SpanRecord

# gen_ai.operation.name → our operation column.
MODEL_OPERATIONS = {
    "chat": "chat",
    "text_completion": "completion",
    "generate_content": "generate_content",
    "embeddings": "embeddings",
    "responses": "responses",
}
TOOL_OPERATION = "execute_tool"

# Each column, then the attribute names that carry it, newest first.
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
TOKEN_KEYS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens",),
}
INPUT_CONTENT_KEYS = ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.prompt")
OUTPUT_CONTENT_KEYS = ("gen_ai.output.messages", "gen_ai.completion")
# Event carrying content as attributes named like the span attributes (v1.37+).
CONTENT_EVENT = "gen_ai.client.inference.operation.details"
# v1.26–1.27 events: event name → (attribute, input or output).
TEXT_EVENTS = {
    "gen_ai.content.prompt": ("gen_ai.prompt", "input"),
    "gen_ai.content.completion": ("gen_ai.completion", "output"),
}
# v1.28–1.36 message events → the role of the message they carry.
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
EVENT_BODY_KEY = "gen_ai.event.content"  # the body as JSON, where a span event carries it
TOOL_KEYS = {
    "tool_name": "gen_ai.tool.name",
    "tool_call_id": "gen_ai.tool.call.id",
    "arguments": "gen_ai.tool.call.arguments",
    "result": "gen_ai.tool.call.result",
}
# Columns only the capture proxy states (its spans carry them as tokentrail.*).
PROXY_COLUMNS = common.PROXY_COLUMNS


def operation_of(span: SpanRecord) -> str | None:
    """The span's GenAI operation, or None when it is not a GenAI span."""
    attributes = span["attributes"]
    name = attributes.get("gen_ai.operation.name")
    if isinstance(name, str):
        return name
    # Pre-1.27 instrumentations set only the system and the model.
    if "gen_ai.system" in attributes and "gen_ai.request.model" in attributes:
        return "chat"
    return None


def _event_body(attributes: dict[str, AttrValue]) -> dict[str, Any]:
    body = common.parsed_json(attributes.get(EVENT_BODY_KEY))
    return body if isinstance(body, dict) else attributes


def _event_message(role: str, body: dict[str, Any]) -> dict[str, Any]:
    """A v1.28-era event body as an OTel GenAI message."""
    content = body.get("content")
    parts: list[dict[str, Any]] = []
    if role == "tool":
        call_id = body.get("id") or body.get("tool_call_id")
        parts.append({"type": "tool_call_response", "id": text(call_id), "result": content})
    elif content not in (None, ""):
        parts.append({"type": "text", "content": content})
    parts += common.openai_tool_call_parts(body.get("tool_calls"))
    return {"role": text(body.get("role")) or role, "parts": parts}


def _choice_message(body: dict[str, Any]) -> dict[str, Any]:
    message = common.parsed_json(body.get("message"))
    message = _event_message("assistant", message if isinstance(message, dict) else {})
    message["finish_reason"] = text(body.get("finish_reason"))
    return message


def _event_content(events: list[EventRecord]) -> tuple[list[str], list[str]]:
    """Content carried by span events: (input parts, output parts)."""
    inputs: list[str] = []
    outputs: list[str] = []
    asked: list[dict[str, Any]] = []
    answered: list[dict[str, Any]] = []
    for event in events:
        name, attributes = event["name"], event["attributes"]
        if name == CONTENT_EVENT:
            inputs += [text(attributes[k]) for k in INPUT_CONTENT_KEYS if attributes.get(k)]
            outputs += [text(attributes[k]) for k in OUTPUT_CONTENT_KEYS if attributes.get(k)]
        elif name in MESSAGE_EVENTS:
            asked.append(_event_message(MESSAGE_EVENTS[name], _event_body(attributes)))
        elif name == CHOICE_EVENT:
            answered.append(_choice_message(_event_body(attributes)))
        elif name in TEXT_EVENTS:
            key, side = TEXT_EVENTS[name]
            if attributes.get(key):
                (inputs if side == "input" else outputs).append(text(attributes[key]))
    if asked:
        inputs.append(common.messages_json(asked))
    if answered:
        outputs.append(common.messages_json(answered))
    return inputs, outputs


def model_call_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The llm_calls columns this span states, or None if it is no model call."""
    operation = operation_of(span)
    if operation not in MODEL_OPERATIONS:
        return None
    a = span["attributes"]
    finish = a.get("gen_ai.response.finish_reasons")
    error_type = common.error_type(span)
    ttft = a.get("gen_ai.response.time_to_first_chunk")
    inputs = [text(a[key]) for key in INPUT_CONTENT_KEYS if a.get(key)]
    outputs = [text(a[key]) for key in OUTPUT_CONTENT_KEYS if a.get(key)]
    if span["events"]:
        from_events = _event_content(span["events"])
        inputs += from_events[0]
        outputs += from_events[1]
    facts: dict[str, Any] = {
        "operation": MODEL_OPERATIONS[operation],
        "provider": provider_id_from_otel(text(first(a, PROVIDER_KEYS))),
        "request_model": text(a.get("gen_ai.request.model")),
        "response_model": text(a.get("gen_ai.response.model")),
        "server_address": text(a.get("server.address")),
        "http_status": int_or_none(a.get("http.response.status_code")) or 0,
        "status": "error" if span["status"] == "error" or error_type else "ok",
        "error_type": error_type,
        "is_stream": common.flag(a.get("gen_ai.request.stream", False)),
        "ttft_ms": float(ttft) * 1000 if isinstance(ttft, int | float) else None,
        "finish_reason": ",".join(map(text, finish)) if isinstance(finish, list) else text(finish),
        "provider_request_id": text(a.get("gen_ai.response.id")),
        "input_content": "\n".join(inputs),
        "output_content": "\n".join(outputs),
    }
    for column, keys in TOKEN_KEYS.items():
        facts[column] = common.tokens(a, keys)
    # What the capture proxy adds beside the convention (see proxy_addon/export.py).
    if a.get("tokentrail.source") == "proxy":
        facts["source"] = "proxy"
        facts["attempt"] = int_or_none(a.get("tokentrail.attempt")) or 0
        for column in PROXY_COLUMNS:
            facts[column] = text(a.get(f"tokentrail.{column}"))
    else:
        facts.update(common.NOT_FROM_PROXY)
    if facts["operation"] == "embeddings" and facts["input_tokens"] is not None:
        facts["output_tokens"] = facts["output_tokens"] or 0
    return facts


def requested_tool_calls(output_content: str) -> list[dict[str, str]]:
    """Tool calls a model asked for: ``tool_call`` parts of the output messages
    (also those rebuilt from ``gen_ai.choice`` events)."""
    return common.requested_tool_calls(output_content)


def executed_tool_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The tool_calls columns of an ``execute_tool`` span."""
    if operation_of(span) != TOOL_OPERATION:
        return None
    a = span["attributes"]
    facts = {column: text(a.get(key)) for column, key in TOOL_KEYS.items()}
    facts["tool_name"] = facts["tool_name"] or span["name"].removeprefix("execute_tool").strip()
    facts["status"] = "error" if span["status"] == "error" or a.get("error.type") else "ok"
    return facts


# Attributes whose values are prompt/response content (or may hold secrets):
# redacted before any table stores them, including the raw ``spans`` table and
# span events, and left out of llm_calls.attributes (content has its columns).
CONTENT_ATTRIBUTE_KEYS = frozenset(
    INPUT_CONTENT_KEYS
    + OUTPUT_CONTENT_KEYS
    + ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result", EVENT_BODY_KEY)
    # Flattened bodies of the v1.28 message events.
    + ("content", "message", "tool_calls")
)
# Flattened content: prefix → regex the rest of the key must match (none in this dialect).
CONTENT_ATTRIBUTE_PREFIXES: dict[str, str] = {}

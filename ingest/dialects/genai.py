"""OpenTelemetry GenAI semantic conventions → llm_calls / tool_calls facts.

Reads both generations: v1.37+ (``gen_ai.provider.name``,
``gen_ai.input.messages``) and the older ``gen_ai.system`` /
``gen_ai.usage.prompt_tokens`` names that instrumentations on v1.36 or older
still emit.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.pricing import provider_id_from_otel
from ingest.records import AttrValue, SpanRecord

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
INPUT_CONTENT_KEYS = ("gen_ai.system_instructions", "gen_ai.input.messages")
OUTPUT_CONTENT_KEYS = ("gen_ai.output.messages",)
# Events that carry content in the newer convention.
CONTENT_EVENT = "gen_ai.client.inference.operation.details"


def _first(attributes: dict[str, AttrValue], keys: tuple[str, ...]) -> AttrValue:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _int_or_none(value: AttrValue) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return None


def _text(value: AttrValue) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _content(span: SpanRecord, keys: tuple[str, ...]) -> str:
    attributes = span["attributes"]
    parts = [_text(attributes[key]) for key in keys if attributes.get(key)]
    for event in span["events"]:
        if event["name"] == CONTENT_EVENT:
            parts += [_text(event["attributes"][k]) for k in keys if event["attributes"].get(k)]
    return "\n".join(parts)


def _tokens(attributes: dict[str, AttrValue], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return _int_or_none(value)
    return None


# Columns only the capture proxy states; OTLP spans from SDKs get these defaults.
PROXY_COLUMNS = ("retry_of", "fallback_of", "gateway_cache", "api_key_fingerprint")
_NOT_FROM_PROXY = dict.fromkeys(PROXY_COLUMNS, "") | {"attempt": 0}


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


def model_call_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The llm_calls columns this span states, or None if it is no model call."""
    operation = operation_of(span)
    if operation not in MODEL_OPERATIONS:
        return None
    a = span["attributes"]
    finish = a.get("gen_ai.response.finish_reasons")
    error_type = _text(a.get("error.type"))
    ttft = a.get("gen_ai.response.time_to_first_chunk")
    facts: dict[str, Any] = {
        "operation": MODEL_OPERATIONS[operation],
        "provider": provider_id_from_otel(
            _text(_first(a, ("gen_ai.provider.name", "gen_ai.system")))
        ),
        "request_model": _text(a.get("gen_ai.request.model")),
        "response_model": _text(a.get("gen_ai.response.model")),
        "server_address": _text(a.get("server.address")),
        "http_status": _int_or_none(a.get("http.response.status_code")) or 0,
        "status": "error" if span["status"] == "error" or error_type else "ok",
        "error_type": error_type,
        "is_stream": bool(a.get("gen_ai.request.stream", False)),
        "ttft_ms": float(ttft) * 1000 if isinstance(ttft, int | float) else None,
        "finish_reason": ",".join(finish) if isinstance(finish, list) else _text(finish),
        "provider_request_id": _text(a.get("gen_ai.response.id")),
        "input_content": _content(span, INPUT_CONTENT_KEYS),
        "output_content": _content(span, OUTPUT_CONTENT_KEYS),
    }
    for column, keys in TOKEN_KEYS.items():
        facts[column] = _tokens(a, keys)
    # What the capture proxy adds beside the convention (see proxy_addon/export.py).
    if a.get("tokentrail.source") == "proxy":
        facts["source"] = "proxy"
        facts["attempt"] = _int_or_none(a.get("tokentrail.attempt")) or 0
        for column in PROXY_COLUMNS:
            facts[column] = _text(a.get(f"tokentrail.{column}"))
    else:
        facts.update(_NOT_FROM_PROXY)
    if facts["operation"] == "embeddings" and facts["input_tokens"] is not None:
        facts["output_tokens"] = facts["output_tokens"] or 0
    return facts


def requested_tool_calls(output_content: str) -> list[dict[str, str]]:
    """Tool calls a model asked for, from ``gen_ai.output.messages`` JSON."""
    if "tool_call" not in output_content:
        return []
    found = []
    for chunk in output_content.split("\n"):
        try:
            messages = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            continue
        for message in messages if isinstance(messages, list) else []:
            for part in message.get("parts", []) if isinstance(message, dict) else []:
                if isinstance(part, dict) and part.get("type") == "tool_call":
                    found.append(
                        {
                            "tool_call_id": _text(part.get("id")),
                            "tool_name": _text(part.get("name")),
                            "arguments": _text(part.get("arguments")),
                        }
                    )
    return found


def executed_tool_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The tool_calls columns of an ``execute_tool`` span."""
    if operation_of(span) != TOOL_OPERATION:
        return None
    a = span["attributes"]
    name = _text(a.get("gen_ai.tool.name")) or span["name"].removeprefix("execute_tool ").strip()
    return {
        "tool_name": name,
        "tool_call_id": _text(a.get("gen_ai.tool.call.id")),
        "arguments": _text(a.get("gen_ai.tool.call.arguments")),
        "result": _text(a.get("gen_ai.tool.call.result")),
        "status": "error" if span["status"] == "error" or a.get("error.type") else "ok",
    }


# Attributes whose values are prompt/response content: redacted before any
# table stores them, including the raw ``spans`` table.
CONTENT_ATTRIBUTE_KEYS = frozenset(
    INPUT_CONTENT_KEYS
    + OUTPUT_CONTENT_KEYS
    + (
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
    )
)

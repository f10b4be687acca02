"""OpenLLMetry / Traceloop → llm_calls / tool_calls facts.

Names checked against opentelemetry-instrumentation-openai 0.62 (Traceloop's)
and opentelemetry-semantic-conventions-ai 0.5. Current releases emit mostly
GenAI semantic-convention names plus their own (``gen_ai.is_streaming``,
``gen_ai.usage.total_tokens``, ``gen_ai.openai.api_base``); older ones use
``llm.request.type``, ``llm.usage.*``, ``llm.is_streaming`` and flattened
content ``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``. The Traceloop
SDK adds ``traceloop.*`` (workflow / task / agent / tool spans, association
properties). A span is this dialect's when it carries one of ``MARKERS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ingest.dialects import common, genai
from ingest.dialects.common import first, int_or_none, text
from ingest.pricing import provider_id_from_otel
from ingest.records import AttrValue, SpanRecord

# Attributes only OpenLLMetry / the Traceloop SDK write.
MARKERS = (
    "llm.request.type",
    "gen_ai.is_streaming",
    "llm.is_streaming",
    "llm.usage.total_tokens",
    "gen_ai.openai.api_base",
    "traceloop.span.kind",
    "traceloop.entity.name",
    "traceloop.workflow.name",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.0.role",
    "gen_ai.completion.0.content",
    "gen_ai.completion.0.role",
    "gen_ai.completion.0.finish_reason",
)
# llm.request.type (older) or gen_ai.operation.name (current) → our operation.
REQUEST_TYPES = {
    "chat": "chat",
    "completion": "completion",
    "embedding": "embeddings",
    "rerank": "rerank",
    **genai.MODEL_OPERATIONS,
}
TOOL_SPAN_KIND = "tool"  # traceloop.span.kind of a @tool-decorated function

# Each column, then the attribute names that carry it, newest first.
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
TOKEN_KEYS: dict[str, tuple[str, ...]] = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.usage.prompt_tokens",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
    ),
}
STREAM_KEYS = ("gen_ai.is_streaming", "llm.is_streaming", "gen_ai.request.stream")
FINISH_KEYS = (
    "gen_ai.response.finish_reasons",
    "gen_ai.response.finish_reason",
    "llm.response.finish_reason",
    "gen_ai.completion.0.finish_reason",  # older releases: only on the flattened choice
)
API_BASE_KEY = "gen_ai.openai.api_base"
# One event per streamed chunk: the first one's time is the time to first token.
CHUNK_EVENTS = ("gen_ai.content.completion.chunk", "llm.content.completion.chunk")
PROMPTS = "gen_ai.prompt."  # .{i}.role|content|tool_call_id|tool_calls.{j}.id|name|arguments
COMPLETIONS = "gen_ai.completion."  # .{i}.role|content|finish_reason|tool_calls.{j}...
# Flattened content is there when its first message is (a finish reason alone is not content).
FIRST_PROMPT_KEYS = (PROMPTS + "0.content", PROMPTS + "0.role")
FIRST_COMPLETION_KEYS = (
    COMPLETIONS + "0.content",
    COMPLETIONS + "0.role",
    COMPLETIONS + "0.tool_calls.0.name",
)
ENTITY_INPUT = "traceloop.entity.input"
ENTITY_OUTPUT = "traceloop.entity.output"
ASSOCIATION = "traceloop.association.properties."  # .<key>: see common.ATTRIBUTION_FIELDS
ASSOCIATION_KEYS = {ASSOCIATION + key: key for key in common.ATTRIBUTION_FIELDS}
USER_KEYS = ("gen_ai.user", "llm.user")  # the OpenAI request's ``user``


_MARKER_SET = frozenset(MARKERS)


def recognizes(span: SpanRecord) -> bool:
    return not _MARKER_SET.isdisjoint(span["attributes"])


def _message(fields: dict[str, AttrValue], role: str) -> dict[str, Any]:
    """One flattened ``gen_ai.prompt.{i}`` / ``gen_ai.completion.{i}`` as a message."""
    role = text(fields.get("role")) or role
    parts: list[dict[str, Any]] = []
    content = fields.get("content")
    if role == "tool":
        call_id = text(fields.get("tool_call_id"))
        parts.append({"type": "tool_call_response", "id": call_id, "result": content})
    elif content not in (None, ""):
        parts.append({"type": "text", "content": content})
    for call in common.indexed(fields, "tool_calls."):
        parts.append(common.tool_call_part(call.get("id"), call.get("name"), call.get("arguments")))
    message: dict[str, Any] = {"role": role, "parts": parts}
    if fields.get("finish_reason"):
        message["finish_reason"] = text(fields["finish_reason"])
    return message


def _content(a: dict[str, AttrValue]) -> tuple[str, str]:
    """(input, output): GenAI messages attributes (current releases), else the
    flattened ``gen_ai.prompt.{i}`` / ``gen_ai.completion.{i}`` (older ones)."""
    inputs = [text(a[key]) for key in genai.INPUT_CONTENT_KEYS if a.get(key)]
    outputs = [text(a[key]) for key in genai.OUTPUT_CONTENT_KEYS if a.get(key)]
    if not inputs and any(key in a for key in FIRST_PROMPT_KEYS):
        asked = [_message(f, "user") for f in common.indexed(a, PROMPTS)]
        inputs.append(common.messages_json(asked))
    if not outputs and any(key in a for key in FIRST_COMPLETION_KEYS):
        answered = [_message(f, "assistant") for f in common.indexed(a, COMPLETIONS)]
        outputs.append(common.messages_json(answered))
    return "\n".join(inputs), "\n".join(outputs)


def _attribution(a: dict[str, AttrValue]) -> dict[str, str]:
    """Association properties as attribution, used where tokentrail.* left a gap."""
    properties = {key: a[full] for full, key in ASSOCIATION_KEYS.items() if full in a}
    found = common.attribution_from(properties.get) if properties else {}
    user = first(a, USER_KEYS)
    if user and "user_id" not in found:
        found["user_id"] = text(user)
    return found


def _ttft_ms(span: SpanRecord) -> float | None:
    for name in CHUNK_EVENTS:
        found = common.ttft_ms_from_event(span, name)
        if found is not None:
            return found
    return None


def _operation(a: dict[str, AttrValue]) -> str | None:
    if "traceloop.span.kind" in a:  # a workflow/task/agent/tool span, never a model call
        return None
    kind = a.get("llm.request.type") or a.get("gen_ai.operation.name")
    if isinstance(kind, str):
        return REQUEST_TYPES.get(kind)
    if "gen_ai.system" in a and "gen_ai.request.model" in a:
        return "chat"
    return None


def model_call_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The llm_calls columns of an OpenLLMetry model-call span, else None."""
    if not recognizes(span):
        return None
    a = span["attributes"]
    operation = _operation(a)
    if operation is None:
        return None
    finish = first(a, FINISH_KEYS)
    error_type = common.error_type(span)
    inputs, outputs = _content(a)
    api_base = text(a.get(API_BASE_KEY))
    facts: dict[str, Any] = {
        "operation": operation,
        "provider": provider_id_from_otel(text(first(a, PROVIDER_KEYS))),
        "request_model": text(a.get("gen_ai.request.model")),
        "response_model": text(a.get("gen_ai.response.model")),
        "server_address": text(a.get("server.address")) or (urlsplit(api_base).hostname or ""),
        "http_status": int_or_none(a.get("http.response.status_code")) or 0,
        "status": "error" if span["status"] == "error" or error_type else "ok",
        "error_type": error_type,
        "is_stream": common.flag(first(a, STREAM_KEYS)),
        "ttft_ms": _ttft_ms(span),
        "finish_reason": ",".join(map(text, finish)) if isinstance(finish, list) else text(finish),
        "provider_request_id": text(a.get("gen_ai.response.id")),
        "input_content": inputs,
        "output_content": outputs,
        "attribution": _attribution(a),
        **common.NOT_FROM_PROXY,
    }
    for column, keys in TOKEN_KEYS.items():
        facts[column] = common.tokens(a, keys)
    if operation == "embeddings" and facts["input_tokens"] is not None:
        facts["output_tokens"] = facts["output_tokens"] or 0
    return facts


def requested_tool_calls(output_content: str) -> list[dict[str, str]]:
    """Tool calls the model asked for: ``tool_call`` parts of the output messages."""
    return common.requested_tool_calls(output_content)


def executed_tool_facts(span: SpanRecord) -> dict[str, Any] | None:
    """A Traceloop ``tool`` span (or a GenAI ``execute_tool`` span under the
    Traceloop SDK, which marks every span) as tool_calls columns, else None."""
    a = span["attributes"]
    is_tool_kind = a.get("traceloop.span.kind") == TOOL_SPAN_KIND
    if not (is_tool_kind or a.get("gen_ai.operation.name") == genai.TOOL_OPERATION):
        return None
    if not recognizes(span):
        return None
    if not is_tool_kind:
        facts = genai.executed_tool_facts(span)
    else:
        name = text(a.get("traceloop.entity.name")) or span["name"].removesuffix(".tool")
        facts = {
            "tool_name": name,
            "tool_call_id": text(a.get("gen_ai.tool.call.id")),
            "arguments": text(a.get(ENTITY_INPUT)),
            "result": text(a.get(ENTITY_OUTPUT)),
            "status": "error" if span["status"] == "error" or a.get("error.type") else "ok",
        }
    if facts is not None:
        facts["attribution"] = _attribution(a)
    return facts


# Prompt/response content (and request headers, which may hold keys): redacted
# before storage, kept out of llm_calls.attributes.
CONTENT_ATTRIBUTE_KEYS = frozenset(
    {ENTITY_INPUT, ENTITY_OUTPUT, "gen_ai.headers", "llm.headers", "traceloop.prompt.template"}
)
# The text and tool arguments of each flattened message; its role, finish
# reason and tool names are not content (and are there without content capture).
_MESSAGE_CONTENT = r"\d+\.(?:content|tool_calls\.\d+\.arguments|function_call\.arguments)"
CONTENT_ATTRIBUTE_PREFIXES = {
    PROMPTS: _MESSAGE_CONTENT,
    COMPLETIONS: _MESSAGE_CONTENT,
    "traceloop.prompt.template_variables": "",
}

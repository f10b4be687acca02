"""OpenInference (Arize Phoenix) → llm_calls / tool_calls facts.

Names checked against openinference-semantic-conventions 0.1.42 and
openinference-instrumentation-openai 0.1.66. A span belongs to this dialect
when it has ``openinference.span.kind``: LLM and EMBEDDING spans are model
calls, TOOL spans executed tools; AGENT, CHAIN and the rest are only the
trace's structure (kept in ``spans``).
"""

from __future__ import annotations

from typing import Any

from ingest.dialects import common
from ingest.dialects.common import first, text
from ingest.pricing import provider_id_from_otel
from ingest.records import AttrValue, SpanRecord

SPAN_KIND = "openinference.span.kind"
MODEL_SPAN_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings"}
TOOL_SPAN_KIND = "TOOL"
# The OpenAI instrumentation names spans after the response type.
OPERATION_BY_SPAN_NAME = {
    "ChatCompletion": "chat",
    "Completion": "completion",
    "Response": "responses",
    "CreateEmbeddings": "embeddings",
}

# Each column, then the attribute names that carry it, most specific first.
PROVIDER_KEYS = ("llm.provider", "llm.system")
REQUEST_MODEL_KEYS = ("llm.request.model_name",)  # else "model" in the invocation parameters
RESPONSE_MODEL_KEYS = ("llm.response.model_name", "llm.model_name", "embedding.model_name")
INVOCATION_PARAMETER_KEYS = ("llm.invocation_parameters", "embedding.invocation_parameters")
TOKEN_KEYS: dict[str, tuple[str, ...]] = {
    # llm.token_count.prompt is the whole prompt, cache included (the spec's rule).
    "input_tokens": ("llm.token_count.prompt",),
    "output_tokens": ("llm.token_count.completion",),
    "cache_read_tokens": (
        "llm.token_count.prompt_details.cache_read",
        "llm.token_count.prompt_details.cache_input",
    ),
    "cache_write_tokens": ("llm.token_count.prompt_details.cache_write",),
    "reasoning_tokens": ("llm.token_count.completion_details.reasoning",),
}
FINISH_REASON_KEY = "llm.finish_reason"
FIRST_TOKEN_EVENT = "First Token Stream Event"
INPUT_MESSAGES = "llm.input_messages."
OUTPUT_MESSAGES = "llm.output_messages."
PROMPTS = "llm.prompts."  # completions API: llm.prompts.{i}.prompt.text
CHOICES = "llm.choices."  # completions API: llm.choices.{i}.completion.text
INPUT_VALUE = "input.value"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
METADATA = "metadata"  # JSON object; its team/project/user_id/route/app attribute the call
TOOL_KEYS = {
    "tool_name": ("tool.name",),
    "tool_call_id": ("tool.id", "tool_call.id"),
    # input.value holds the call's arguments; tool.parameters usually the schema.
    "arguments": (INPUT_VALUE, "tool.parameters"),
    "result": (OUTPUT_VALUE,),
}
# Message fields inside llm.{input,output}_messages.{i}.
ROLE = "message.role"
CONTENT = "message.content"
CONTENTS = "message.contents."  # .{j}.message_content.type|text
TOOL_CALLS = "message.tool_calls."  # .{j}.tool_call.id|function.name|function.arguments
TOOL_CALL_ID = "message.tool_call_id"
FUNCTION_CALL_NAME = "message.function_call_name"
FUNCTION_CALL_ARGUMENTS = "message.function_call_arguments_json"


def _kind(span: SpanRecord) -> str:
    kind = span["attributes"].get(SPAN_KIND)
    return kind.upper() if isinstance(kind, str) else ""


def _message(fields: dict[str, AttrValue]) -> dict[str, Any]:
    """One flattened OpenInference message as an OTel GenAI message."""
    role = text(fields.get(ROLE))
    parts: list[dict[str, Any]] = []
    content = fields.get(CONTENT)
    if role == "tool":
        result = content if content is not None else ""
        parts.append(
            {"type": "tool_call_response", "id": text(fields.get(TOOL_CALL_ID)), "result": result}
        )
    elif content not in (None, ""):
        parts.append({"type": "text", "content": content})
    for block in common.indexed(fields, CONTENTS):
        if block.get("message_content.text") not in (None, ""):
            parts.append({"type": "text", "content": block["message_content.text"]})
    for call in common.indexed(fields, TOOL_CALLS):
        parts.append(
            common.tool_call_part(
                call.get("tool_call.id"),
                call.get("tool_call.function.name"),
                call.get("tool_call.function.arguments"),
            )
        )
    if fields.get(FUNCTION_CALL_NAME):  # the legacy function_call API
        parts.append(
            common.tool_call_part(
                None, fields[FUNCTION_CALL_NAME], fields.get(FUNCTION_CALL_ARGUMENTS)
            )
        )
    return {"role": role, "parts": parts}


def _messages(a: dict[str, AttrValue], prefix: str) -> list[dict[str, Any]]:
    return [_message(fields) for fields in common.indexed(a, prefix)]


def _texts(a: dict[str, AttrValue], prefix: str, field: str, role: str) -> list[dict[str, Any]]:
    return [
        {"role": role, "parts": [{"type": "text", "content": item[field]}]}
        for item in common.indexed(a, prefix)
        if item.get(field) not in (None, "")
    ]


_LISTS = (INPUT_MESSAGES, OUTPUT_MESSAGES, PROMPTS, CHOICES)


def _content(a: dict[str, AttrValue]) -> tuple[str, str]:
    """(input, output) content: the flattened messages when the span has them,
    else ``input.value`` / ``output.value`` as the instrumentation wrote them."""
    present = {p for key in a if key.startswith(_LISTS) for p in _LISTS if key.startswith(p)}
    if INPUT_MESSAGES in present:
        inputs = common.messages_json(_messages(a, INPUT_MESSAGES))
    elif PROMPTS in present:
        inputs = common.messages_json(_texts(a, PROMPTS, "prompt.text", "user"))
    else:
        inputs = text(a.get(INPUT_VALUE))
    if OUTPUT_MESSAGES in present:
        answered = _messages(a, OUTPUT_MESSAGES)
        if answered and a.get(FINISH_REASON_KEY):
            answered[0]["finish_reason"] = text(a[FINISH_REASON_KEY])  # the first choice's
        outputs = common.messages_json(answered)
    elif CHOICES in present:
        outputs = common.messages_json(_texts(a, CHOICES, "completion.text", "assistant"))
    else:
        outputs = text(a.get(OUTPUT_VALUE))
    return inputs, outputs


def _response_id(a: dict[str, AttrValue]) -> str:
    """The provider's response id, from the response JSON in ``output.value``."""
    if a.get(OUTPUT_MIME_TYPE) != "application/json":
        return ""
    value = a.get(OUTPUT_VALUE)
    if not isinstance(value, str) or '"id"' not in value:
        return ""
    document = common.parsed_json(value)
    return text(document.get("id")) if isinstance(document, dict) else ""


def _attribution(a: dict[str, AttrValue]) -> dict[str, str]:
    metadata = common.parsed_json(a.get(METADATA))
    return common.attribution_from(metadata.get) if isinstance(metadata, dict) else {}


def model_call_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The llm_calls columns of an LLM or EMBEDDING span, else None."""
    kind = _kind(span)
    if kind not in MODEL_SPAN_KINDS:
        return None
    a = span["attributes"]
    parameters: dict[str, Any] = {}
    for key in INVOCATION_PARAMETER_KEYS:
        found = common.parsed_json(a.get(key))
        if isinstance(found, dict):
            parameters = found
            break
    error_type = common.error_type(span)
    inputs, outputs = _content(a)
    operation = OPERATION_BY_SPAN_NAME.get(span["name"]) or MODEL_SPAN_KINDS[kind]
    if operation == "chat" and PROMPTS + "0.prompt.text" in a:  # a completions-API call
        operation = "completion"
    facts: dict[str, Any] = {
        "operation": operation,
        "provider": provider_id_from_otel(text(first(a, PROVIDER_KEYS))),
        "request_model": text(first(a, REQUEST_MODEL_KEYS) or parameters.get("model")),
        "response_model": text(first(a, RESPONSE_MODEL_KEYS)),
        "server_address": "",
        "http_status": 0,
        "status": "error" if span["status"] == "error" or error_type else "ok",
        "error_type": error_type,
        "is_stream": common.flag(parameters.get("stream", False)),
        "ttft_ms": common.ttft_ms_from_event(span, FIRST_TOKEN_EVENT),
        "finish_reason": text(a.get(FINISH_REASON_KEY)),
        "provider_request_id": _response_id(a),
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
    """Tool calls the model asked for: the rebuilt output messages' ``tool_call``
    parts, or the ``tool_calls`` of the response JSON in ``output.value``."""
    return common.requested_tool_calls(output_content)


def executed_tool_facts(span: SpanRecord) -> dict[str, Any] | None:
    """The tool_calls columns of a TOOL span, else None."""
    if _kind(span) != TOOL_SPAN_KIND:
        return None
    a = span["attributes"]
    facts = {column: text(first(a, keys)) for column, keys in TOOL_KEYS.items()}
    facts["tool_name"] = facts["tool_name"] or span["name"]
    facts["status"] = "error" if span["status"] == "error" or a.get("error.type") else "ok"
    facts["attribution"] = _attribution(a)
    return facts


# Prompt/response content: redacted before storage, kept out of llm_calls.attributes.
CONTENT_ATTRIBUTE_KEYS = frozenset({INPUT_VALUE, OUTPUT_VALUE, "tool.parameters"})
# Flattened content: prefix → regex the rest of the key must match ("" = any).
CONTENT_ATTRIBUTE_PREFIXES = {
    INPUT_MESSAGES: "",
    OUTPUT_MESSAGES: "",
    PROMPTS: "",
    CHOICES: "",
    "llm.prompt_template.variables": "",
    # The embedded texts, not the vectors beside them.
    "embedding.embeddings.": r"\d+\.embedding\.text$",
}

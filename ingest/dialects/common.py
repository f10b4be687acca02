"""What every dialect module shares: attribute values → column values, and the
one shape stored content takes.

Content is stored as the OpenTelemetry GenAI messages JSON
(``[{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call", "id",
"name", "arguments"} | {"type": "tool_call_response", "id", "result"}],
"finish_reason"}]``) whatever the dialect, so engineers read one format and
``requested_tool_calls`` parses one format (plus the OpenAI shapes some
instrumentations put in their events and ``output.value``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.records import AttrValue, SpanRecord


def first(attributes: dict[str, AttrValue], keys: tuple[str, ...]) -> AttrValue:
    """The value of the first of ``keys`` the span has (newest name first)."""
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def int_or_none(value: AttrValue) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return None


def text(value: AttrValue) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def tokens(attributes: dict[str, AttrValue], keys: tuple[str, ...]) -> int | None:
    """A token count from the first key present; None when none is (never invented)."""
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            # Counts arrive as int_value almost always: skip the general path.
            return value if value.__class__ is int and value >= 0 else int_or_none(value)
    return None


def flag(value: AttrValue) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def parsed_json(value: AttrValue) -> Any:
    """A JSON-string attribute parsed; structured values (kvlist, array) as they are."""
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def error_type(span: SpanRecord) -> str:
    """``error.type``, else the type of the exception a failed span recorded."""
    found = span["attributes"].get("error.type")
    if found:
        return text(found)
    if span["status"] == "error":
        for event in span["events"]:
            if event["name"] == "exception":
                return text(event["attributes"].get("exception.type")) or "exception"
    return ""


def ttft_ms_from_event(span: SpanRecord, event_name: str) -> float | None:
    for event in span["events"]:
        if event["name"] == event_name:
            return max(event["time_ns"] - span["start_ns"], 0) / 1e6
    return None


# Columns only the capture proxy states; OTLP spans from SDKs get these defaults.
PROXY_COLUMNS = ("retry_of", "fallback_of", "gateway_cache", "api_key_fingerprint")
NOT_FROM_PROXY: dict[str, Any] = dict.fromkeys(PROXY_COLUMNS, "") | {"attempt": 0}


# Keys an app may put in its dialect's own metadata (OpenInference ``metadata``,
# Traceloop association properties) → our attribution columns.
ATTRIBUTION_FIELDS = {
    "team": "team",
    "project": "project",
    "user_id": "user_id",
    "user": "user_id",
    "route": "route",
    "app": "app",
}


def attribution_from(get: Any) -> dict[str, str]:
    """Attribution columns from a metadata lookup ``get(key)``; the first key wins."""
    found: dict[str, str] = {}
    for key, column in ATTRIBUTION_FIELDS.items():
        value = get(key)
        if value not in (None, "") and column not in found:
            found[column] = text(value)
    return found


def indexed(attributes: dict[str, AttrValue], prefix: str) -> list[dict[str, AttrValue]]:
    """Flattened ``{prefix}{i}.{field}`` attributes grouped by ``i``, in index order.

    OpenInference and OpenLLMetry flatten message lists into attributes such as
    ``llm.input_messages.0.message.role``; this undoes it for one prefix."""
    groups: dict[int, dict[str, AttrValue]] = {}
    size = len(prefix)
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        index, _, field = key[size:].partition(".")
        if index.isdigit() and field:
            groups.setdefault(int(index), {})[field] = value
    return [groups[i] for i in sorted(groups)]


def tool_call_part(call_id: AttrValue, name: AttrValue, arguments: AttrValue) -> dict[str, Any]:
    return {"type": "tool_call", "id": text(call_id), "name": text(name), "arguments": arguments}


def openai_tool_call_parts(tool_calls: AttrValue) -> list[dict[str, Any]]:
    """OpenAI-style ``[{id, function: {name, arguments}}]`` (or flat name/arguments) as parts."""
    calls = parsed_json(tool_calls) if isinstance(tool_calls, str) else tool_calls
    parts = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else call
        parts.append(
            tool_call_part(
                call.get("id") or call.get("call_id"),
                function.get("name"),
                function.get("arguments"),
            )
        )
    return parts


def messages_json(messages: list[dict[str, Any]]) -> str:
    return orjson.dumps(messages, default=str).decode() if messages else ""


def _found_call(part: dict[str, Any]) -> dict[str, str]:
    return {
        "tool_call_id": text(part.get("id")),
        "tool_name": text(part.get("name")),
        "arguments": text(part.get("arguments")),
    }


def _calls_in(document: Any, found: list[dict[str, str]], depth: int = 0) -> None:
    """Walk one parsed output document for tool calls, whatever the shape."""
    if depth > 4:
        return
    if isinstance(document, list):
        for item in document:
            _calls_in(item, found, depth + 1)
        return
    if not isinstance(document, dict):
        return
    parts = document.get("parts")
    if isinstance(parts, list):  # OTel GenAI message
        found.extend(
            _found_call(p) for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"
        )
        return
    if document.get("type") == "function_call":  # OpenAI Responses output item
        found.append(_found_call({**document, "id": document.get("call_id") or document.get("id")}))
        return
    if "tool_calls" in document:  # an OpenAI message
        found.extend(_found_call(p) for p in openai_tool_call_parts(document["tool_calls"]))
        return
    for key in ("message", "choices", "output"):  # choice event body, response JSON
        if key in document:
            _calls_in(parsed_json(document[key]), found, depth + 1)


def requested_tool_calls(output_content: str) -> list[dict[str, str]]:
    """Tool calls a model asked for, from stored output content.

    Output content holds one JSON document, or several joined by newlines
    (e.g. ``gen_ai.output.messages`` from an attribute and from an event)."""
    if "tool_call" not in output_content and "function_call" not in output_content:
        return []
    found: list[dict[str, str]] = []
    whole = parsed_json(output_content)
    if whole is not None:
        _calls_in(whole, found)
        return found
    for chunk in output_content.split("\n"):
        _calls_in(parsed_json(chunk), found)
    # The same output may come both as an attribute and in an event.
    seen: set[str] = set()
    unique = []
    for call in found:
        if not call["tool_call_id"] or call["tool_call_id"] not in seen:
            seen.add(call["tool_call_id"])
            unique.append(call)
    return unique

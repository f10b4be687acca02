"""Anthropic Messages API: ``POST .../v1/messages`` (and Claude on Vertex AI).

Token accounting (WIRE-FORMATS.md): Anthropic's ``usage.input_tokens`` is only
the *uncached* part of the prompt, so our ``input_tokens`` is
``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``, with
the two cache counts recorded as parts of it.

Streams are SSE. ``message_start`` carries the id, model and input/cache
counts; ``message_delta`` carries the stop reason and *cumulative* usage (newer
API versions repeat the input/cache counts there: those win when present). A
stream that ends without ``message_stop`` was cut off: it is recorded as an
error of type ``interrupted`` with only the usage the events actually showed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy_addon.providers._json import CONTENT_LIMIT
from proxy_addon.providers._json import as_int as _int
from proxy_addon.providers._json import as_str as _str
from proxy_addon.providers._json import dumps as _dumps
from proxy_addon.providers._json import loads as _loads
from proxy_addon.providers._json import truncate as _truncate
from proxy_addon.providers.base import (
    CallFacts,
    RequestFacts,
    RequestView,
    ResponseView,
    ToolCallFacts,
)
from proxy_addon.sse import SseDecoder

FORMAT = "anthropic"
# The SSE line after which a client may stop reading (see openai.STREAM_END_LINES).
STREAM_END_LINES = (b"event: message_stop",)
_ERROR_NOTE_LIMIT = 1024

_MESSAGES_PATH = re.compile(r"(?:^|/)v1/messages/?$")
# Claude on Vertex AI: the model is in the path, the body is a Messages request.
_VERTEX_PATH = re.compile(r"/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$")


# ---- small helpers (kept local: each wire-format module stands alone) ----


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---- request side ----


def matches_shape(request: RequestView) -> bool:
    path = request.path
    return bool(
        _MESSAGES_PATH.search(path)
        or _VERTEX_PATH.search(path)
        or "anthropic-version" in request.headers
    )


def parse_request(request: RequestView) -> RequestFacts | None:
    if request.method.upper() != "POST":
        return None
    vertex = _VERTEX_PATH.search(request.path)
    if not (vertex or _MESSAGES_PATH.search(request.path)):
        return None  # count_tokens, batches, models, legacy /v1/complete: not a message call
    body = _loads(request.body)
    facts = RequestFacts(format=FORMAT, operation="chat", request_model="", is_stream=False)
    if vertex:
        facts.request_model = vertex.group(1)
        facts.is_stream = vertex.group(2) == "streamRawPredict"
    if not isinstance(body, dict):
        facts.extra["request_note"] = "request body is not a JSON object"
        return facts
    facts.request_model = _str(body.get("model")) or facts.request_model
    facts.is_stream = body.get("stream") is True or facts.is_stream
    # One messages list, system first, so every format's prompt reads the same way.
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    prompt: list[Any] = []
    if body.get("system") not in (None, "", []):
        prompt.append({"role": "system", "content": body["system"]})
    prompt.extend(messages)
    facts.input_content = _dumps(prompt)
    return facts


# ---- response side ----


def _apply_usage(facts: CallFacts, usage: dict[str, Any]) -> None:
    uncached = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    if write is None and isinstance(usage.get("cache_creation"), dict):
        # Only the 5m/1h split was sent: its sum is the write count.
        split = [_int(v) for v in usage["cache_creation"].values()]
        write = (
            sum(v for v in split if v is not None) if any(v is not None for v in split) else None
        )
    if uncached is not None:
        facts.input_tokens = uncached + (read or 0) + (write or 0)
    facts.cache_read_tokens = read
    facts.cache_write_tokens = write
    facts.output_tokens = _int(usage.get("output_tokens"))
    facts.reasoning_tokens = _int(_dict(usage.get("output_tokens_details")).get("thinking_tokens"))


def _error_facts(response: ResponseView, body: bytes) -> CallFacts:
    data = _dict(_loads(body))
    error = _dict(data.get("error"))
    facts = CallFacts(status="error")
    facts.error_type = _str(error.get("type")) or f"http_{response.status}"
    facts.provider_request_id = response.headers.get("request-id", "") or _str(
        data.get("request_id")
    )
    message = _str(error.get("message"))
    if message:
        facts.body_note = f"provider error: {message[:_ERROR_NOTE_LIMIT]}"
    elif not data:
        facts.body_note = "error body is not JSON"
    return facts


def _looks_like_sse(response: ResponseView) -> bool:
    head = response.body.lstrip()[:6]
    return "text/event-stream" in response.headers.get("content-type", "") or head in (
        b"event:",
        b"data: ",
    )


def parse_response(facts: RequestFacts, response: ResponseView) -> CallFacts:
    if response.status >= 400:
        return _error_facts(response, response.body)
    data = _loads(response.body)
    if data is None and response.body and _looks_like_sse(response):
        # A stream the addon buffered instead of tapping: replay it through the tap.
        tap = StreamTap(facts)
        tap.feed(response.body)
        return tap.finish(ResponseView(response.status, response.headers, b""))
    out = CallFacts(response_model=facts.request_model)
    out.provider_request_id = response.headers.get("request-id", "")
    if not isinstance(data, dict):
        out.body_note = "response body is not JSON" if data is None else "response is not an object"
        return out
    out.provider_request_id = _str(data.get("id")) or out.provider_request_id
    out.response_model = _str(data.get("model")) or out.response_model
    out.finish_reason = _str(data.get("stop_reason"))
    usage = data.get("usage")
    if isinstance(usage, dict):
        _apply_usage(out, usage)
    else:
        out.body_note = "response has no usage"
    content = data.get("content")
    if isinstance(content, list):
        for block in content:
            block = _dict(block)
            if block.get("type") == "tool_use":
                args = _dumps(block.get("input", {}))
                out.tool_calls.append(
                    ToolCallFacts(_str(block.get("id")), _str(block.get("name")), args)
                )
        out.output_content = _dumps(content)
    return out


@dataclass
class _Block:
    """One content block being streamed; text is kept up to the content limit only."""

    type: str
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        if self.size <= CONTENT_LIMIT:  # past the limit the tail is cut anyway
            self.parts.append(text)
            self.size += len(text)

    def text(self) -> str:
        return "".join(self.parts)


class StreamTap:
    """Follows an Anthropic SSE stream chunk by chunk."""

    def __init__(self, facts: RequestFacts) -> None:
        self._facts = facts
        self._sse = SseDecoder()
        self._head = bytearray()  # the first bytes, for a non-SSE (error) body
        self._events = 0
        self._bad_events = 0
        self._usage: dict[str, Any] = {}
        self._saw_start = False
        self._saw_stop = False
        self._message_id = ""
        self._model = ""
        self._stop_reason = ""
        self._error_type = ""
        self._error_message = ""
        self._blocks: dict[int, _Block] = {}

    def feed(self, chunk: bytes) -> None:
        try:
            if len(self._head) < CONTENT_LIMIT:
                self._head += chunk[: CONTENT_LIMIT - len(self._head)]
            for event in self._sse.feed(chunk):
                self._on_event(event.event, event.data)
        except Exception:  # a parser must never break the proxied stream
            self._bad_events += 1

    def _on_event(self, name: str, raw: str) -> None:
        data = _loads(raw)
        if not isinstance(data, dict):
            self._bad_events += 1
            return
        self._events += 1
        kind = _str(data.get("type")) or name  # the data's own type is authoritative
        if kind == "message_start":
            self._saw_start = True
            message = _dict(data.get("message"))
            self._message_id = _str(message.get("id"))
            self._model = _str(message.get("model"))
            self._merge_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = _dict(data.get("content_block"))
            index = _int(data.get("index")) or 0
            entry = _Block(_str(block.get("type")), _str(block.get("id")), _str(block.get("name")))
            if isinstance(block.get("text"), str) and block["text"]:
                entry.add(block["text"])
            self._blocks[index] = entry
        elif kind == "content_block_delta":
            delta = _dict(data.get("delta"))
            index = _int(data.get("index")) or 0
            entry = self._blocks.setdefault(index, _Block("text"))
            for key in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(key), str):
                    entry.add(delta[key])
        elif kind == "message_delta":
            self._stop_reason = _str(_dict(data.get("delta")).get("stop_reason")) or (
                self._stop_reason
            )
            self._merge_usage(data.get("usage"))
        elif kind == "message_stop":
            self._saw_stop = True
        elif kind == "error":
            error = _dict(data.get("error"))
            self._error_type = _str(error.get("type")) or "error"
            self._error_message = _str(error.get("message"))
        # ping, content_block_stop and unknown future events carry nothing we record.

    def _merge_usage(self, usage: Any) -> None:
        # Counts are cumulative: a later non-null value replaces an earlier one.
        for key, value in _dict(usage).items():
            if value is not None:
                self._usage[key] = value

    def finish(self, response: ResponseView) -> CallFacts:
        try:
            return self._finish(response)
        except Exception as exc:  # never raise into the addon
            return CallFacts(status="error", error_type="parse_error", body_note=repr(exc)[:200])

    def _finish(self, response: ResponseView) -> CallFacts:
        for event in self._sse.flush():  # a last event not closed by a blank line
            self._on_event(event.event, event.data)
        if response.status >= 400:
            return _error_facts(response, bytes(self._head))
        if not self._events and _loads(bytes(self._head)) is not None:
            # Not SSE after all (e.g. the server ignored stream=true): a whole JSON body.
            return parse_response(
                self._facts, ResponseView(response.status, response.headers, bytes(self._head))
            )
        out = CallFacts(response_model=self._model or self._facts.request_model)
        out.provider_request_id = self._message_id or response.headers.get("request-id", "")
        out.finish_reason = self._stop_reason
        if self._saw_start or self._usage:
            _apply_usage(out, self._usage)
        content: list[dict[str, Any]] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.type == "tool_use":
                args = _truncate(block.text() or "{}")
                out.tool_calls.append(ToolCallFacts(block.id, block.name, args))
                parsed = _loads(args)
                tool_input = parsed if parsed is not None else args
                content.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": tool_input}
                )
            elif block.type == "thinking":
                content.append({"type": "thinking", "thinking": block.text()})
            elif block.type == "text":
                content.append({"type": "text", "text": block.text()})
            else:
                content.append({"type": block.type})
        if content:
            out.output_content = _dumps(content)
        notes = []
        if self._error_type:
            out.status, out.error_type = "error", self._error_type
            if self._error_message:
                notes.append(f"provider error: {self._error_message[:_ERROR_NOTE_LIMIT]}")
        elif not self._saw_stop:
            out.status, out.error_type = "error", "interrupted"
            notes.append("stream ended before message_stop")
        if not self._saw_start and not self._usage:
            notes.append("stream ended without usage")
        bad = self._bad_events + self._sse.dropped_events
        if bad:
            notes.append(f"{bad} unreadable or oversized stream event(s)")
        out.body_note = "; ".join(notes)
        return out

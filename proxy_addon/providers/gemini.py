"""Gemini API and Vertex AI: ``POST .../models/{model}:generateContent`` and friends.

Also ``:streamGenerateContent``, ``:embedContent``, ``:batchEmbedContents``, on
``/v1beta/models/...``, Vertex ``.../publishers/google/models/...`` or
``/tunedModels/...``; the model comes from the path. Operation is ``chat`` for
generateContent (a multi-turn chat call; one name across providers keeps "chat
calls by model" simple — OTel instrumentations say ``generate_content``, which
the normalizer should treat alike) and ``embeddings`` (no usage is reported).

Usage: ``promptTokenCount`` already includes cached tokens, so it is input as is
(plus ``toolUsePromptTokenCount``, built-in tools' prompt tokens, billed as input
as genai-prices counts them); ``cachedContentTokenCount`` is cache_read; output
is ``candidatesTokenCount + thoughtsTokenCount``; reasoning ``thoughtsTokenCount``.
The JSON is proto3, which omits zeros: in a ``usageMetadata`` a missing count is 0.

Streams: each chunk is a whole GenerateContentResponse, as SSE (``?alt=sse``) or,
without it, as one JSON array sent incrementally (``[{...},\\r\\n{...}]``). Usage
comes from the last chunk that has it; no ``finishReason`` means ``interrupted``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from proxy_addon.providers._json import CONTENT_LIMIT
from proxy_addon.providers._json import as_int as _int
from proxy_addon.providers._json import as_str as _str
from proxy_addon.providers._json import dumps as _dumps
from proxy_addon.providers._json import loads as _loads
from proxy_addon.providers.base import (
    CallFacts,
    RequestFacts,
    RequestView,
    ResponseView,
    ToolCallFacts,
)
from proxy_addon.sse import SseDecoder

FORMAT = "gemini"
_ERROR_NOTE_LIMIT = 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # one array element larger than this is skipped

_PATH = re.compile(r"/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")
_OPERATIONS = {
    "generateContent": ("chat", False),
    "streamGenerateContent": ("chat", True),
    "embedContent": ("embeddings", False),
    "batchEmbedContents": ("embeddings", False),
}


# ---- small helpers (kept local: each wire-format module stands alone) ----


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _model_name(name: str) -> str:
    return name.removeprefix("models/")


# ---- request side ----


def matches_shape(request: RequestView) -> bool:
    return bool(
        _PATH.search(request.path) or "x-goog-api-key" in request.headers or "key" in request.query
    )


def parse_request(request: RequestView) -> RequestFacts | None:
    match = _PATH.search(request.path)
    if request.method.upper() != "POST" or match is None or match.group(2) not in _OPERATIONS:
        return None  # countTokens, model listing, other publishers' :rawPredict ...
    operation, is_stream = _OPERATIONS[match.group(2)]
    facts = RequestFacts(FORMAT, operation, _model_name(unquote(match.group(1))), is_stream)
    body = _loads(request.body)
    if not isinstance(body, dict):
        facts.extra["request_note"] = "request body is not a JSON object"
        return facts
    if operation == "embeddings":
        if "requests" in body:
            inputs = [_dict(r).get("content") for r in _list(body.get("requests"))]
        else:
            inputs = [body.get("content")]
        facts.input_content = _dumps(inputs)
        return facts
    # REST accepts proto field names in camelCase and snake_case alike.
    system = body.get("systemInstruction", body.get("system_instruction"))
    prompt: list[Any] = []
    if isinstance(system, dict):
        prompt.append({**system, "role": "system"})
    elif isinstance(system, str) and system:
        prompt.append({"role": "system", "parts": [{"text": system}]})
    prompt.extend(_list(body.get("contents")))
    facts.input_content = _dumps(prompt)
    return facts


# ---- response side ----


def _apply_usage(facts: CallFacts, usage: dict[str, Any]) -> None:
    counts = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount")
    if not any(_int(usage.get(key)) is not None for key in counts):
        return  # nothing reported: keep None rather than claim zeros
    thoughts = _int(usage.get("thoughtsTokenCount")) or 0
    facts.input_tokens = (_int(usage.get("promptTokenCount")) or 0) + (
        _int(usage.get("toolUsePromptTokenCount")) or 0
    )
    facts.cache_read_tokens = _int(usage.get("cachedContentTokenCount")) or 0
    facts.output_tokens = (_int(usage.get("candidatesTokenCount")) or 0) + thoughts
    facts.reasoning_tokens = thoughts


def _error_info(data: Any) -> tuple[str, str]:
    """(status, message) from ``{"error": {...}}``, also inside a streamed JSON array."""
    if isinstance(data, list) and data:
        data = data[0]
    error = _dict(_dict(data).get("error"))
    return _str(error.get("status")), _str(error.get("message"))


def _error_facts(response: ResponseView, body: bytes) -> CallFacts:
    data = _loads(body)
    status, message = _error_info(data)
    facts = CallFacts(status="error", error_type=status or f"http_{response.status}")
    if message:
        facts.body_note = f"provider error: {message[:_ERROR_NOTE_LIMIT]}"
    elif data is None:
        facts.body_note = "error body is not JSON"
    return facts


class _Collector:
    """Folds GenerateContentResponse chunks (one, or a stream of them) into CallFacts."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self.chunks = 0
        self.usage: dict[str, Any] | None = None
        self.response_id = ""
        self.model_version = ""
        self.finish_reason = ""
        self.block_reason = ""
        self.error: tuple[str, str] | None = None
        self.tool_calls: list[ToolCallFacts] = []
        self.parts: list[Any] = []  # a whole response's parts, kept as sent
        self.text: list[str] = []  # a stream's text parts, joined at the end
        self.thought: list[str] = []
        self.size = 0

    def add(self, chunk: Any) -> None:
        chunk = _dict(chunk)
        if not chunk:
            return
        self.chunks += 1
        if "error" in chunk:
            self.error = _error_info(chunk)
            return
        self.response_id = _str(chunk.get("responseId")) or self.response_id
        self.model_version = _str(chunk.get("modelVersion")) or self.model_version
        if isinstance(chunk.get("usageMetadata"), dict):
            self.usage = chunk["usageMetadata"]
        feedback = _dict(chunk.get("promptFeedback"))
        self.block_reason = _str(feedback.get("blockReason")) or self.block_reason
        candidates = _list(chunk.get("candidates"))
        if not candidates:
            return
        # Only the first candidate is recorded (candidateCount > 1 is rare for chat).
        first = _dict(candidates[0])
        self.finish_reason = _str(first.get("finishReason")) or self.finish_reason
        for part in _list(_dict(first.get("content")).get("parts")):
            self._part(_dict(part))

    def _part(self, part: dict[str, Any]) -> None:
        if not self.facts.is_stream:
            self.parts.append(part)
        call = _dict(part.get("functionCall"))
        if call:
            # ids are often missing: make one that is stable for the same response.
            call_id = (
                _str(call.get("id")) or f"{self.response_id or 'gemini'}:{len(self.tool_calls)}"
            )
            self.tool_calls.append(
                ToolCallFacts(call_id, _str(call.get("name")), _dumps(call.get("args", {})))
            )
        elif isinstance(part.get("text"), str) and self.size <= CONTENT_LIMIT:
            self.size += len(part["text"])
            (self.thought if part.get("thought") is True else self.text).append(part["text"])

    def result(self) -> CallFacts:
        out = CallFacts(response_model=_model_name(self.model_version) or self.facts.request_model)
        out.provider_request_id = self.response_id
        out.finish_reason = self.finish_reason or self.block_reason
        out.tool_calls = self.tool_calls
        if self.usage is not None:
            _apply_usage(out, self.usage)
        if self.facts.is_stream:
            parts: list[Any] = []
            if self.thought:
                parts.append({"text": "".join(self.thought), "thought": True})
            if self.text:
                parts.append({"text": "".join(self.text)})
            for call in self.tool_calls:
                args = _loads(call.arguments)
                parts.append(
                    {
                        "functionCall": {
                            "id": call.tool_call_id,
                            "name": call.tool_name,
                            "args": args,
                        }
                    }
                )
        else:
            parts = self.parts
        if parts:
            out.output_content = _dumps(parts)
        if self.error is not None:
            out.status, out.error_type = "error", self.error[0] or "error"
            if self.error[1]:
                out.body_note = f"provider error: {self.error[1][:_ERROR_NOTE_LIMIT]}"
        return out


def parse_response(facts: RequestFacts, response: ResponseView) -> CallFacts:
    if response.status >= 400:
        return _error_facts(response, response.body)
    if facts.is_stream and response.body:
        # A stream the addon buffered instead of tapping: replay it through the tap.
        tap = StreamTap(facts)
        tap.feed(response.body)
        return tap.finish(ResponseView(response.status, response.headers, b""))
    data = _loads(response.body)
    if not isinstance(data, dict):
        note = "response body is not JSON" if data is None else "response is not an object"
        return CallFacts(response_model=facts.request_model, body_note=note)
    if facts.operation == "embeddings":
        # embedContent returns vectors and no usage: nothing worth storing as content.
        return CallFacts(response_model=facts.request_model)
    collector = _Collector(facts)
    collector.add(data)
    out = collector.result()
    if collector.usage is None and out.status == "ok":
        out.body_note = "response has no usageMetadata"
    return out


class _ArraySplitter:
    """Cuts a streamed JSON array ``[{...},{...}]`` into its elements as they complete.

    Tracks brace depth and string/escape state only, so a chunk boundary may fall
    anywhere (inside a string, after a backslash); only the element in progress is held,
    and an element past MAX_CHUNK_BYTES is skipped (counted in ``oversized``).
    """

    _STRUCT = re.compile(rb'[{}\[\]"]')
    _IN_STRING = re.compile(rb'["\\]')

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._skipping = False
        self.oversized = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0 if self._depth else -1  # where the element in progress begins in chunk
        i, n = 0, len(chunk)
        if self._escape and n:
            self._escape, i = False, 1
        while i < n:
            if self._in_string:
                m = self._IN_STRING.search(chunk, i)
                if m is None:
                    break
                if m.group() == b"\\":
                    self._escape = m.end() == n  # the escaped byte is in the next chunk
                    i = m.end() + 1
                else:
                    self._in_string, i = False, m.end()
                continue
            m = self._STRUCT.search(chunk, i)
            if m is None:
                break
            c, i = m.group(), m.end()
            if self._depth == 0:
                if c == b"{":  # a top-level element starts; "[", "]" and "," are framing
                    self._depth, start = 1, m.start()
                continue
            if c == b'"':
                self._in_string = True
            elif c in (b"{", b"["):
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._hold(chunk[start:i])
                    if not self._skipping:
                        out.append(bytes(self._buf))
                    self._buf.clear()
                    self._skipping, start = False, -1
        if self._depth and start >= 0:
            self._hold(chunk[start:])
        return out

    def _hold(self, data: bytes) -> None:
        if self._skipping:
            return
        self._buf += data
        if len(self._buf) > MAX_CHUNK_BYTES:
            self._buf.clear()
            self._skipping = True
            self.oversized += 1


class StreamTap:
    """Follows a streamGenerateContent response, SSE or JSON array, chunk by chunk."""

    def __init__(self, facts: RequestFacts) -> None:
        self._facts = facts
        self._collector = _Collector(facts)
        self._head = bytearray()  # the first bytes, for a plain-JSON (error) body
        self._mode = ""  # "sse" | "array" | "object", from the first non-blank byte
        self._sse = SseDecoder()
        self._array = _ArraySplitter()
        self._bad = 0

    def feed(self, chunk: bytes) -> None:
        try:
            if len(self._head) < CONTENT_LIMIT:
                self._head += chunk[: CONTENT_LIMIT - len(self._head)]
            if not self._mode:
                first = bytes(self._head.lstrip()[:1])
                if not first:
                    return
                # Only blank bytes can come before the first one, so nothing needs replaying.
                self._mode = {b"[": "array", b"{": "object"}.get(first, "sse")
            if self._mode == "sse":
                for event in self._sse.feed(chunk):
                    self._add(event.data)
            elif self._mode == "array":
                for element in self._array.feed(chunk):
                    self._add(element)
        except Exception:  # a parser must never break the proxied stream
            self._bad += 1

    def _add(self, raw: str | bytes) -> None:
        data = _loads(raw)
        if isinstance(data, dict):
            self._collector.add(data)
        else:
            self._bad += 1

    def finish(self, response: ResponseView) -> CallFacts:
        try:
            return self._finish(response)
        except Exception as exc:  # never raise into the addon
            return CallFacts(status="error", error_type="parse_error", body_note=repr(exc)[:200])

    def _finish(self, response: ResponseView) -> CallFacts:
        if self._mode == "sse":
            for event in self._sse.flush():
                self._add(event.data)
        if response.status >= 400:
            return _error_facts(response, bytes(self._head))
        if self._mode == "object":
            # A single JSON object: the server answered without streaming.
            whole = ResponseView(response.status, response.headers, bytes(self._head))
            return parse_response(replace(self._facts, is_stream=False), whole)
        collector = self._collector
        out = collector.result()
        notes = [out.body_note] if out.body_note else []
        if out.status == "ok" and not (collector.finish_reason or collector.block_reason):
            out.status, out.error_type = "error", "interrupted"
            notes.append("stream ended without a finishReason")
        if collector.usage is None:
            notes.append("stream ended without usage")
        bad = self._bad + self._sse.dropped_events + self._array.oversized
        if bad:
            notes.append(f"{bad} unreadable or oversized stream chunk(s)")
        out.body_note = "; ".join(notes)
        return out

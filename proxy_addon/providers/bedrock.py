"""Amazon Bedrock Converse API: ``POST /model/{modelId}/converse`` and ``/converse-stream``.

The model id is the URL-encoded path segment (a foundation model id, an
inference profile such as ``us.anthropic.claude-3-5-sonnet-20241022-v2:0``, or
an ARN whose ``/`` arrives as ``%2F``); it is both the request and the response
model, since Converse responses do not name the model. InvokeModel
(``/invoke``) carries provider-native bodies and is not parsed here.

Token accounting: ``usage.inputTokens`` excludes the cache counts, so our
input_tokens = ``inputTokens + cacheReadInputTokens + cacheWriteInputTokens``.
botocore's service model (bedrock-runtime 2023-09-30) only says inputTokens is
"the number of tokens sent in the request to the model" and the cache fields
are "input tokens read from / written to the cache"; the Bedrock prompt-caching
guide is the source for "inputTokens is only the non-cached part", and it is
how LiteLLM and other adapters read it. Bedrock does not split reasoning out of
outputTokens, so reasoning_tokens stays None.

ConverseStream uses AWS binary event-stream framing (``proxy_addon.eventstream``)
with events named by the ``:event-type`` header: messageStart,
contentBlockStart (a toolUse's id and name), contentBlockDelta (text, toolUse
input fragments, reasoning), contentBlockStop, messageStop{stopReason} and
metadata{usage, metrics}. ``:message-type`` ``exception`` (``:exception-type``)
or ``error`` (``:error-code``) is a provider error inside a 200 response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from proxy_addon.eventstream import EventStreamDecoder, EventStreamError, HeaderValue
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

FORMAT = "bedrock"
_ERROR_NOTE_LIMIT = 1024

# Greedy model group: a decoded ARN may itself contain "/" (…:inference-profile/us.…).
_PATH = re.compile(r"/model/(.+)/(converse|converse-stream)/?$")


# ---- small helpers (kept local: each wire-format module stands alone) ----


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ---- request side ----


def matches_shape(request: RequestView) -> bool:
    return bool(_PATH.search(request.path))


def parse_request(request: RequestView) -> RequestFacts | None:
    match = _PATH.search(request.path)
    if request.method.upper() != "POST" or match is None:
        return None
    model_id = unquote(match.group(1))
    facts = RequestFacts(FORMAT, "chat", model_id, match.group(2) == "converse-stream")
    body = _loads(request.body)
    if not isinstance(body, dict):
        facts.extra["request_note"] = "request body is not a JSON object"
        return facts
    prompt: list[Any] = []
    if _list(body.get("system")):
        prompt.append({"role": "system", "content": body["system"]})
    prompt.extend(_list(body.get("messages")))
    facts.input_content = _dumps(prompt)
    return facts


# ---- response side ----


def _apply_usage(facts: CallFacts, usage: dict[str, Any]) -> None:
    uncached = _int(usage.get("inputTokens"))
    read = _int(usage.get("cacheReadInputTokens"))
    write = _int(usage.get("cacheWriteInputTokens"))
    if uncached is not None:
        facts.input_tokens = uncached + (read or 0) + (write or 0)
    facts.cache_read_tokens = read
    facts.cache_write_tokens = write
    facts.output_tokens = _int(usage.get("outputTokens"))


def _error_name(raw: str) -> str:
    # x-amzn-errortype is "ThrottlingException:http://internal.amazon.com/coral/..."
    # and __type may be namespaced "com.amazon.coral.service#ThrottlingException".
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name[:1].upper() + name[1:]  # stream member names are lowerCamel


def _error_facts(response: ResponseView, body: bytes) -> CallFacts:
    data = _dict(_loads(body))
    raw_type = response.headers.get("x-amzn-errortype", "") or _str(data.get("__type"))
    facts = CallFacts(status="error", error_type=_error_name(raw_type) or f"http_{response.status}")
    facts.provider_request_id = response.headers.get("x-amzn-requestid", "")
    message = _str(data.get("message")) or _str(data.get("Message"))
    if message:
        facts.body_note = f"provider error: {message[:_ERROR_NOTE_LIMIT]}"
    elif not data and body:
        facts.body_note = "error body is not JSON"
    return facts


def _tool_call(tool_use: dict[str, Any], arguments: str) -> ToolCallFacts:
    return ToolCallFacts(_str(tool_use.get("toolUseId")), _str(tool_use.get("name")), arguments)


def parse_response(facts: RequestFacts, response: ResponseView) -> CallFacts:
    if response.status >= 400:
        return _error_facts(response, response.body)
    if "eventstream" in response.headers.get("content-type", "") and response.body:
        # A stream the addon buffered instead of tapping: replay it through the tap.
        tap = StreamTap(facts)
        tap.feed(response.body)
        return tap.finish(replace(response, body=b""))
    out = CallFacts(response_model=facts.request_model)
    out.provider_request_id = response.headers.get("x-amzn-requestid", "")
    data = _loads(response.body)
    if not isinstance(data, dict):
        out.body_note = "response body is not JSON" if data is None else "response is not an object"
        return out
    out.finish_reason = _str(data.get("stopReason"))
    if isinstance(data.get("usage"), dict):
        _apply_usage(out, data["usage"])
    else:
        out.body_note = "response has no usage"
    content = _dict(_dict(data.get("output")).get("message")).get("content")
    for block in _list(content):
        tool_use = _dict(_dict(block).get("toolUse"))
        if tool_use:
            out.tool_calls.append(_tool_call(tool_use, _dumps(tool_use.get("input", {}))))
    if isinstance(content, list):
        out.output_content = _dumps(content)
    return out


@dataclass
class _Block:
    """One content block being streamed; text is kept up to the content limit only."""

    tool_use: dict[str, Any] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    tool_input: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, parts: list[str], value: Any) -> None:
        if isinstance(value, str) and self.size <= CONTENT_LIMIT:
            parts.append(value)
            self.size += len(value)


class StreamTap:
    """Follows a ConverseStream event stream chunk by chunk."""

    def __init__(self, facts: RequestFacts) -> None:
        self._facts = facts
        self._decoder = EventStreamDecoder()
        self._head = bytearray()  # the first bytes, for a plain-JSON body
        self._events = 0
        self._broken = ""  # why decoding stopped (the framing cannot be resynced)
        self._bad = 0
        self._saw_stop = False
        self._stop_reason = ""
        self._usage: dict[str, Any] | None = None
        self._error_type = ""
        self._error_message = ""
        self._blocks: dict[int, _Block] = {}

    def feed(self, chunk: bytes) -> None:
        if len(self._head) < CONTENT_LIMIT:
            self._head += chunk[: CONTENT_LIMIT - len(self._head)]
        if self._broken:
            return
        try:
            for headers, payload in self._decoder.feed(chunk):
                self._on_message(headers, payload)
        except EventStreamError as exc:
            self._broken = str(exc)
        except Exception:  # a parser must never break the proxied stream
            self._bad += 1

    def _on_message(self, headers: dict[str, HeaderValue], payload: bytes) -> None:
        self._events += 1
        message_type = headers.get(":message-type", "event")
        if message_type != "event":
            # exception: the type names a union member (throttlingException); error: a code.
            kind = headers.get(":exception-type") or headers.get(":error-code") or message_type
            self._error_type = _error_name(str(kind)) or "error"
            body = _dict(_loads(payload))
            self._error_message = _str(body.get("message")) or str(
                headers.get(":error-message", "")
            )
            return
        data = _loads(payload)
        if not isinstance(data, dict):
            self._bad += 1
            return
        event = headers.get(":event-type")
        index = _int(data.get("contentBlockIndex")) or 0
        if event == "contentBlockStart":
            block = self._blocks.setdefault(index, _Block())
            block.tool_use = _dict(_dict(data.get("start")).get("toolUse"))
        elif event == "contentBlockDelta":
            block = self._blocks.setdefault(index, _Block())
            delta = _dict(data.get("delta"))
            block.add(block.text, delta.get("text"))
            block.add(block.tool_input, _dict(delta.get("toolUse")).get("input"))
            block.add(block.reasoning, _dict(delta.get("reasoningContent")).get("text"))
        elif event == "messageStop":
            self._saw_stop = True
            self._stop_reason = _str(data.get("stopReason"))
        elif event == "metadata" and isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        # messageStart, contentBlockStop and unknown events carry nothing we record.

    def finish(self, response: ResponseView) -> CallFacts:
        try:
            return self._finish(response)
        except Exception as exc:  # never raise into the addon
            return CallFacts(status="error", error_type="parse_error", body_note=repr(exc)[:200])

    def _finish(self, response: ResponseView) -> CallFacts:
        head = bytes(self._head)
        if response.status >= 400:
            return _error_facts(response, head)
        if not self._events and head.lstrip()[:1] == b"{":
            # Plain JSON instead of an event stream: a whole Converse response.
            headers = {k: v for k, v in response.headers.items() if k != "content-type"}
            plain = replace(response, headers=headers, body=head)
            return parse_response(replace(self._facts, is_stream=False), plain)
        out = CallFacts(response_model=self._facts.request_model)
        out.provider_request_id = response.headers.get("x-amzn-requestid", "")
        out.finish_reason = self._stop_reason
        if self._usage is not None:
            _apply_usage(out, self._usage)
        content: list[dict[str, Any]] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.reasoning:
                content.append(
                    {"reasoningContent": {"reasoningText": {"text": "".join(block.reasoning)}}}
                )
            if block.tool_use:
                args = _truncate("".join(block.tool_input) or "{}")
                out.tool_calls.append(_tool_call(block.tool_use, args))
                parsed = _loads(args)
                content.append(
                    {"toolUse": {**block.tool_use, "input": parsed if parsed is not None else args}}
                )
            elif block.text:
                content.append({"text": "".join(block.text)})
        if content:
            out.output_content = _dumps(content)
        notes = []
        if self._error_type:
            out.status, out.error_type = "error", self._error_type
            if self._error_message:
                notes.append(f"provider error: {self._error_message[:_ERROR_NOTE_LIMIT]}")
        elif self._broken:
            # The client's SDK fails on the same bytes (bad CRC or length), so the call failed.
            out.status, out.error_type = "error", "malformed_stream"
            notes.append(f"event stream unreadable: {self._broken}")
        elif not self._saw_stop:
            out.status, out.error_type = "error", "interrupted"
            notes.append("stream ended before messageStop")
        if self._usage is None:
            notes.append("stream ended without usage")
        if self._decoder.buffered and not self._broken:
            notes.append(f"{self._decoder.buffered} bytes of an incomplete event at the end")
        if self._bad:
            notes.append(f"{self._bad} unreadable stream event(s)")
        out.body_note = "; ".join(notes)
        return out

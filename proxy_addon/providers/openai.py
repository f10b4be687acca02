"""OpenAI wire format: Chat Completions, Responses, Embeddings and legacy Completions.

One module serves OpenAI, Azure OpenAI and every OpenAI-compatible server (Mistral, Groq,
Together, DeepSeek, OpenRouter, vLLM, Ollama, LiteLLM proxy): they share the JSON shapes,
so requests are recognized by path suffix on any host and under any prefix (``/v1``,
``/openai/v1``, ``/api/v1``, Azure's ``/openai/deployments/{deployment}``).

Usage follows the token rule of WIRE-FORMATS.md (input = whole prompt, cached included;
reasoning is part of output). We map it here instead of calling
``genai_prices.extract_usage``: that call also looks the model up and raises LookupError
for any model it has no price for (every Ollama or vLLM model), and its extractors do not
read reasoning tokens. The tests check that our mapping agrees with its extractors.

Content (prompt and answer) is kept as JSON text capped at 64 KiB with a visible marker;
a stream tap keeps only the capped answer, tool calls, ids, finish reasons and usage.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from proxy_addon.providers.base import (
    CallFacts,
    RequestFacts,
    RequestView,
    ResponseView,
    ToolCallFacts,
)
from proxy_addon.sse import SseDecoder, SseEvent

FORMAT = "openai"
# SSE lines after which a client may stop reading (the SDK does at [DONE]):
# the proxy journals the call as such a line passes, not at the stream's end.
STREAM_END_LINES = (
    b"data: [DONE]",
    b"event: response.completed",
    b"event: response.incomplete",
    b"event: response.failed",
)
MAX_CONTENT_BYTES = 64 * 1024
MAX_TOOL_CALLS = 256  # per stream; more is a broken or hostile server
MAX_CHOICES = 128  # per stream (the request's `n`)
NO_USAGE_NOTE = "stream carried no usage (stream_options.include_usage not set)"

# Anything may precede the endpoint; a trailing slash is tolerated.
_ENDPOINT = re.compile(r"(?:^|/)(chat/completions|responses|embeddings|completions)/?$")
_OPERATIONS = {
    "chat/completions": "chat",
    "responses": "responses",
    "embeddings": "embeddings",
    "completions": "completion",
}
_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")
_SSE_STARTS = (b"data:", b"event:", b"id:", b":")  # a JSON body starts with { or [


# --- never-raising readers of untrusted JSON --------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    """A token count, or None when absent or not a count (a bool is not a count)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return int(value) if float(value).is_integer() else None
    return None


def _load(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def clip_text(text: str, limit: int = MAX_CONTENT_BYTES) -> str:
    """Cut text to ``limit`` UTF-8 bytes, saying how much was cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", "ignore")  # never end on half a character
    return f"{kept}…[truncated {len(raw) - limit} of {len(raw)} bytes]"


def clip_json(value: Any) -> str:
    """JSON text of a decoded value, capped like clip_text."""
    return clip_text(orjson.dumps(value, default=str).decode("utf-8"))


def _join_distinct(values: Iterable[Any]) -> str:
    return ",".join(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def _error_type(error: Any, fallback: str) -> str:
    # `code` first: OpenAI's 429 says type "tokens" or "requests" but code
    # "rate_limit_exceeded"; its 401 says type "invalid_request_error", code "invalid_api_key".
    err = _dict(error)
    return _str(err.get("code")) or _str(err.get("type")) or fallback


# --- requests --------------------------------------------------------------------------


def _operation(path: str) -> str | None:
    match = _ENDPOINT.search(path)
    return _OPERATIONS[match.group(1)] if match else None


def matches_shape(request: RequestView) -> bool:
    """True for an OpenAI-format endpoint path, whatever the host or prefix."""
    return _operation(request.path) is not None


def parse_request(request: RequestView) -> RequestFacts | None:
    operation = _operation(request.path)
    if operation is None or request.method.upper() != "POST":
        return None  # GET /v1/models, GET /v1/chat/completions (stored list), ...
    match = _DEPLOYMENT.search(request.path)
    deployment = match.group(1) if match else ""
    extra = {"deployment": deployment} if deployment else {}
    body = _load(request.body)
    if not isinstance(body, dict):
        extra["request_note"] = "request body is not a JSON object"
        text = clip_text(request.body[: MAX_CONTENT_BYTES + 4].decode("utf-8", "replace"))
        return RequestFacts(FORMAT, operation, deployment, False, text, extra)
    # Azure names the deployment in the path; the body usually has no model then.
    model = _str(body.get("model")) or deployment
    is_stream = body.get("stream") is True
    if is_stream and operation in ("chat", "completion"):
        include = _dict(body.get("stream_options")).get("include_usage") is True
        extra["include_usage"] = "true" if include else "false"
    key = {"chat": "messages", "completion": "prompt"}.get(operation, "input")
    content = body.get(key)
    if operation == "responses" and body.get("instructions") is not None:
        content = {"instructions": body["instructions"], "input": content}
    input_content = "" if content is None else clip_json(content)
    return RequestFacts(FORMAT, operation, model, is_stream, input_content, extra)


# --- whole responses -------------------------------------------------------------------


def _request_id(headers: dict[str, str]) -> str:
    return headers.get("x-request-id", "")


def _apply_usage(usage: dict[str, Any], operation: str, cf: CallFacts) -> None:
    """Map a ``usage`` object onto the token rule (see the table in WIRE-FORMATS.md)."""
    i, o = ("input", "output") if operation == "responses" else ("prompt", "completion")
    details = _dict(usage.get(f"{i}_tokens_details"))
    cf.input_tokens = _int(usage.get(f"{i}_tokens"))
    cf.cache_read_tokens = _int(details.get("cached_tokens"))
    if cf.cache_read_tokens is None:  # DeepSeek's own name for the same count
        cf.cache_read_tokens = _int(usage.get("prompt_cache_hit_tokens"))
    # Newer OpenAI (and OpenRouter for Anthropic models) report cache writes here.
    cf.cache_write_tokens = _int(details.get("cache_write_tokens"))
    if operation == "embeddings":
        cf.output_tokens = 0 if cf.input_tokens is not None else None
    else:
        cf.output_tokens = _int(usage.get(f"{o}_tokens"))
        cf.reasoning_tokens = _int(_dict(usage.get(f"{o}_tokens_details")).get("reasoning_tokens"))
    cost = usage.get("cost")  # OpenRouter: USD as a JSON number
    if isinstance(cost, int | float | str) and not isinstance(cost, bool):
        with contextlib.suppress(InvalidOperation):
            if (amount := Decimal(str(cost))).is_finite():
                cf.provider_cost_usd = str(amount)


def _tool_call(call_id: Any, name: Any, arguments: Any) -> ToolCallFacts:
    # Arguments are JSON text on the wire; a few compatible servers send an object instead.
    args = clip_text(arguments) if isinstance(arguments, str) else clip_json(arguments)
    return ToolCallFacts(_str(call_id), _str(name), "" if arguments is None else args)


def _message_tool_calls(message: dict[str, Any]) -> list[ToolCallFacts]:
    calls = []
    for tc in map(_dict, _list(message.get("tool_calls"))):
        fn = _dict(tc.get("function")) or _dict(tc.get("custom"))  # custom tools: {name, input}
        calls.append(_tool_call(tc.get("id"), fn.get("name"), fn.get("arguments", fn.get("input"))))
    if legacy := _dict(message.get("function_call")):  # deprecated `functions`: no call id
        calls.append(_tool_call("", legacy.get("name"), legacy.get("arguments")))
    return calls


def _fill_responses(body: dict[str, Any], cf: CallFacts) -> None:
    status = _str(body.get("status"))
    cf.finish_reason = _str(_dict(body.get("incomplete_details")).get("reason")) or status
    error = _dict(body.get("error"))
    if status == "failed" or error:
        cf.status, cf.error_type = "error", _error_type(error, "failed")
    output = _list(body.get("output"))
    for item in map(_dict, output):
        if item.get("type") in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input"))
            cf.tool_calls.append(_tool_call(item.get("call_id"), item.get("name"), args))
    cf.output_content = clip_json(output) if output else ""


def _fill_from_body(operation: str, body: dict[str, Any], cf: CallFacts) -> None:
    """Read a decoded 2xx body (or the final response of a stream) into ``cf``."""
    cf.response_model = _str(body.get("model"))
    cf.provider_request_id = _str(body.get("id")) or cf.provider_request_id
    if operation == "responses":
        _fill_responses(body, cf)
    elif operation == "embeddings":
        data = _list(body.get("data"))
        dims = len(_list(_dict(data[0]).get("embedding"))) if data else 0
        # The vectors are not worth storing; say what came back.
        cf.output_content = f"{len(data)} embedding(s)" + (f" of {dims} dimensions" if dims else "")
    else:
        choices = [_dict(c) for c in _list(body.get("choices"))]
        cf.finish_reason = _join_distinct(c.get("finish_reason") for c in choices)
        if operation == "chat":
            messages = [_dict(c.get("message")) for c in choices]
            for message in messages:
                cf.tool_calls.extend(_message_tool_calls(message))
            cf.output_content = clip_json(messages) if messages else ""
        else:
            cf.output_content = clip_json([c.get("text") for c in choices]) if choices else ""
    if isinstance(usage := body.get("usage"), dict):
        _apply_usage(usage, operation, cf)
    elif cf.status == "ok":
        cf.body_note = "response carried no usage"


def _fill_error(cf: CallFacts, body: Any, fallback: str) -> CallFacts:
    cf.status = "error"
    error = _dict(body).get("error")
    cf.error_type = _error_type(error, fallback)
    # The provider's message is the only "answer" a failed call has.
    cf.output_content = clip_text(_str(_dict(error).get("message")) or _str(error))
    if not isinstance(body, dict):
        cf.body_note = "error body is not JSON"
    return cf


def parse_response(facts: RequestFacts, response: ResponseView) -> CallFacts:
    if response.status < 400 and response.body[:64].lstrip().startswith(_SSE_STARTS):
        # A stream the addon buffered instead of tapping: replay it through the tap.
        tap = StreamTap(facts)
        tap.feed(response.body)
        return tap.finish(ResponseView(response.status, response.headers, b""))
    return _parse_body(facts, response)


def _parse_body(facts: RequestFacts, response: ResponseView) -> CallFacts:
    cf = CallFacts(provider_request_id=_request_id(response.headers))
    body = _load(response.body)
    if response.status >= 400:
        return _fill_error(cf, body, f"http_{response.status}")
    if not isinstance(body, dict):
        cf.body_note = "response body is not JSON or is truncated"
        if not response.body.strip():
            cf.body_note = "response body is empty"
        return cf
    if _dict(body.get("error")) and "choices" not in body and "output" not in body:
        return _fill_error(cf, body, "provider_error")  # some gateways answer 200 {"error": ...}
    _fill_from_body(facts.operation, body, cf)
    return cf


# --- streams ---------------------------------------------------------------------------


class _Budget:
    """Bytes of text a stream may still keep; shared by all text fields of one answer."""

    def __init__(self) -> None:
        self.left, self.clipped = MAX_CONTENT_BYTES, False


class _Text:
    """Text joined from deltas, cut at its budget with a marker."""

    def __init__(self, budget: _Budget | None = None) -> None:
        self.budget = budget or _Budget()
        self.parts: list[str] = []  # a list: repeated str += would be quadratic

    def add(self, piece: str) -> None:
        if not piece or self.budget.clipped:
            return
        raw = piece.encode("utf-8", "replace")
        if len(raw) > self.budget.left:
            piece = raw[: self.budget.left].decode("utf-8", "ignore") + "…[truncated]"
            self.budget.left, self.budget.clipped = 0, True
        else:
            self.budget.left -= len(raw)
        self.parts.append(piece)

    def set(self, text: str) -> None:
        """Replace what the deltas built with the final text (own budget only)."""
        self.budget, self.parts = _Budget(), []
        self.add(text)

    def __str__(self) -> str:
        return "".join(self.parts)


@dataclass
class _ToolDraft:
    id: str = ""
    name: str = ""
    args: _Text = field(default_factory=_Text)  # each call's arguments get their own 64 KiB

    def facts(self) -> ToolCallFacts:
        return ToolCallFacts(self.id, self.name, str(self.args))


class _ChatStream:
    """``chat.completion.chunk`` (and legacy ``text_completion``) events."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self.id = self.model = ""
        self.done = False  # saw data: [DONE]
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.finish: dict[int, str] = {}
        self.role: dict[int, str] = {}
        # choice → delta field (content, refusal, reasoning_content, ...) → text so far
        self.fields: dict[int, dict[str, _Text]] = {}
        self.tools: dict[int, dict[int, _ToolDraft]] = {}  # choice → tool index → call
        self.budget = _Budget()

    def on_event(self, event: SseEvent) -> None:
        if event.data.strip() == "[DONE]":
            self.done = True
            return
        chunk = _dict(_load(event.data))
        self.id = self.id or _str(chunk.get("id"))  # Azure's content-filter chunk has id ""
        self.model = _str(chunk.get("model")) or self.model
        usage = chunk.get("usage")
        usage = usage if isinstance(usage, dict) else _dict(chunk.get("x_groq")).get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if _dict(chunk.get("error")):
            self.error = chunk["error"]  # OpenRouter reports mid-stream failures this way
        for choice in map(_dict, _list(chunk.get("choices"))):
            if (index := _int(choice.get("index")) or 0) >= MAX_CHOICES:
                continue
            if _str(choice.get("finish_reason")):
                self.finish[index] = choice["finish_reason"]
            self._add(index, "text", choice.get("text"))  # legacy completions
            for key, value in _dict(choice.get("delta")).items():
                if key == "role" and isinstance(value, str):
                    self.role[index] = value
                elif key == "tool_calls":
                    for tc in map(_dict, _list(value)):
                        self._tool_delta(index, tc, _dict(tc.get("function")))
                elif key == "function_call":  # deprecated `functions` streaming
                    self._tool_delta(index, {"index": 0}, _dict(value))
                else:
                    self._add(index, key, value)

    def _add(self, index: int, key: str, piece: Any) -> None:
        if isinstance(piece, str) and piece and not self.budget.clipped:
            fields = self.fields.setdefault(index, {})
            fields.setdefault(key, _Text(self.budget)).add(piece)

    def _tool_delta(self, choice: int, tc: dict[str, Any], fn: dict[str, Any]) -> None:
        calls = self.tools.setdefault(choice, {})
        index, call_id = _int(tc.get("index")), _str(tc.get("id"))
        if index is None:  # some servers omit it: match by id; a new id is a new call
            same = [k for k, d in calls.items() if call_id and d.id == call_id]
            last = max(calls, default=-1)
            index = same[0] if same else (last + 1 if call_id or not calls else last)
        if index not in calls and sum(map(len, self.tools.values())) >= MAX_TOOL_CALLS:
            return
        draft = calls.setdefault(index, _ToolDraft())
        draft.id = draft.id or call_id
        draft.name = draft.name or _str(fn.get("name"))
        draft.args.add(_str(fn.get("arguments")))

    def result(self) -> CallFacts:
        cf = CallFacts(response_model=self.model, provider_request_id=self.id)
        indexes = sorted(set(self.fields) | set(self.tools) | set(self.finish) | set(self.role))
        cf.finish_reason = _join_distinct(self.finish.get(i) for i in indexes)
        outputs: list[Any] = []  # the same shape a non-streamed body gives
        for i in indexes:
            fields = {k: str(v) for k, v in self.fields.get(i, {}).items()}
            drafts = [self.tools[i][k] for k in sorted(self.tools.get(i, {}))]
            cf.tool_calls.extend(d.facts() for d in drafts)
            if self.facts.operation == "completion":
                outputs.append(fields.get("text", ""))
                continue
            message: dict[str, Any] = {"role": self.role.get(i, "assistant"), **fields}
            if drafts:
                message["tool_calls"] = [
                    {
                        "id": d.id,
                        "type": "function",
                        "function": {"name": d.name, "arguments": str(d.args)},
                    }
                    for d in drafts
                ]
            outputs.append(message)
        cf.output_content = clip_json(outputs) if outputs else ""
        if self.error is not None:
            cf.status, cf.error_type = "error", _error_type(self.error, "stream_error")
        elif not self.done and not self.finish:
            cf.status, cf.error_type = "error", "interrupted"
            return cf  # never report usage for a stream cut short
        if self.usage is not None:
            _apply_usage(self.usage, self.facts.operation, cf)
        elif self.facts.extra.get("include_usage") != "true":
            cf.body_note = NO_USAGE_NOTE
        elif self.done:
            cf.body_note = "stream carried no usage although stream_options.include_usage was set"
        else:
            cf.body_note = "stream ended before its usage chunk"
        return cf


class _ResponsesStream:
    """Responses API events: the terminal event carries the whole response with usage."""

    def __init__(self) -> None:
        self.id = self.model = ""
        self.final: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.text = _Text()  # the partial answer, for a stream that never completes
        self.calls: dict[int, _ToolDraft] = {}  # output_index → function call

    def on_event(self, event: SseEvent) -> None:
        data = _dict(_load(event.data))
        kind = _str(data.get("type")) or event.event
        item = _dict(data.get("item"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = _dict(data.get("response"))
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = _dict(data.get("response"))
            self.id = self.id or _str(response.get("id"))
            self.model = _str(response.get("model")) or self.model
        elif kind == "response.output_text.delta":
            self.text.add(_str(data.get("delta")))
        elif kind == "error":
            self.error = data
        elif kind.startswith("response.output_item.") and item.get("type") == "function_call":
            if draft := self._draft(data):
                draft.id = draft.id or _str(item.get("call_id"))
                draft.name = draft.name or _str(item.get("name"))
                if kind.endswith(".done") and isinstance(item.get("arguments"), str):
                    draft.args.set(item["arguments"])
        elif kind == "response.function_call_arguments.delta" and (draft := self._draft(data)):
            draft.args.add(_str(data.get("delta")))
        elif kind == "response.function_call_arguments.done" and (draft := self._draft(data)):
            draft.name = draft.name or _str(data.get("name"))
            if isinstance(data.get("arguments"), str):
                draft.args.set(data["arguments"])

    def _draft(self, data: dict[str, Any]) -> _ToolDraft | None:
        index = _int(data.get("output_index"))
        if index is None or (index not in self.calls and len(self.calls) >= MAX_TOOL_CALLS):
            return None
        return self.calls.setdefault(index, _ToolDraft())

    def result(self) -> CallFacts:
        cf = CallFacts()
        if self.final is not None:
            _fill_from_body("responses", self.final, cf)
        else:  # cut short: keep what arrived, shaped like `output` items, and no usage
            cf.response_model, cf.provider_request_id = self.model, self.id
            cf.status, cf.error_type = "error", "interrupted"
            drafts = [self.calls[k] for k in sorted(self.calls)]
            cf.tool_calls = [d.facts() for d in drafts]
            items: list[dict[str, Any]] = [
                {"type": "function_call", "call_id": d.id, "name": d.name, "arguments": str(d.args)}
                for d in drafts
            ]
            if self.text.parts:
                items.insert(
                    0,
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": str(self.text)}],
                    },
                )
            cf.output_content = clip_json(items) if items else ""
        if self.error is not None:  # {"type": "error", "code", "message"} or nested "error"
            error = _dict(self.error.get("error")) or self.error
            cf.status, cf.error_type = "error", _str(error.get("code")) or "stream_error"
        return cf


class StreamTap:
    """Watches one streamed response: ``feed`` each chunk, then ``finish``."""

    def __init__(self, facts: RequestFacts) -> None:
        self.facts = facts
        self._decoder = SseDecoder()
        self._stream = _ResponsesStream() if facts.operation == "responses" else _ChatStream(facts)
        # The start of the raw body, kept until the first SSE event: an error status, or a
        # server that ignored stream=true, answers with one JSON body instead of events.
        self._head = bytearray()
        self._saw_event = False

    def feed(self, chunk: bytes) -> None:
        if not self._saw_event and len(self._head) <= MAX_CONTENT_BYTES:
            self._head += chunk[: MAX_CONTENT_BYTES + 1 - len(self._head)]
        self._handle(self._decoder.feed(chunk))

    def _handle(self, events: list[SseEvent]) -> None:
        for event in events:
            if not self._saw_event:
                self._saw_event, self._head = True, bytearray()
            self._stream.on_event(event)

    def finish(self, response: ResponseView) -> CallFacts:
        self._handle(self._decoder.flush())
        if not self._saw_event:
            body = ResponseView(response.status, response.headers, bytes(self._head))
            return _parse_body(self.facts, body)
        cf = self._stream.result()
        cf.provider_request_id = cf.provider_request_id or _request_id(response.headers)
        if response.status >= 400 and cf.status == "ok":
            cf.status, cf.error_type = "error", f"http_{response.status}"
        if self._decoder.dropped_events:
            note = f"{self._decoder.dropped_events} SSE event(s) over 16 MiB dropped"
            cf.body_note = f"{cf.body_note}; {note}" if cf.body_note else note
        return cf

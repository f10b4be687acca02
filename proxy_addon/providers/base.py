"""What every wire-format module gives the addon: plain data in, plain data out.

A wire-format module (``openai.py``, ``anthropic.py``, ...) exposes:

- ``FORMAT``: its name;
- ``matches_shape(request: RequestView) -> bool``: recognizes its requests on
  any host (self-hosted and local endpoints) by path and headers;
- ``parse_request(request: RequestView) -> RequestFacts | None``: what was
  asked (None: not a model call, e.g. ``GET /v1/models``);
- ``parse_response(facts: RequestFacts, response: ResponseView) -> CallFacts``:
  a whole (non-streamed) response;
- ``StreamTap(facts: RequestFacts)``: fed the streamed body chunk by chunk as
  it flows (``feed(chunk: bytes)``), then ``finish(response: ResponseView) ->
  CallFacts``. It never buffers the whole stream, only what it needs.

Parsers never raise on bad input: a body that is not what the format says
becomes a CallFacts with what could be read and ``body_note`` saying why.
Token counts follow the one rule of WIRE-FORMATS.md: input_tokens is the whole
prompt (cached included), cache_read/cache_write are parts of it,
reasoning_tokens is part of output_tokens; None means "not reported".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestView:
    method: str
    scheme: str
    host: str  # lowercase, no port
    port: int
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lowercase names; multi-valued headers joined by ", "
    body: bytes


@dataclass(frozen=True)
class ResponseView:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes  # b"" for a streamed response (the tap saw it)


@dataclass
class ToolCallFacts:
    tool_call_id: str
    tool_name: str
    arguments: str  # JSON text as the model produced it


@dataclass
class RequestFacts:
    format: str  # the wire-format module's FORMAT
    operation: str  # chat | responses | embeddings | completion | generate_content
    request_model: str
    is_stream: bool
    input_content: str = ""  # prompt as JSON text: messages / input / contents
    # Format-specific context a parser needs later (e.g. Azure deployment name).
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class CallFacts:
    response_model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str = ""
    tool_calls: list[ToolCallFacts] = field(default_factory=list)
    provider_request_id: str = ""
    output_content: str = ""  # the model's answer as JSON text or plain text
    status: str = "ok"  # ok | error
    error_type: str = ""  # provider error type/code, e.g. rate_limit_error, or "interrupted"
    ttft_ms: float | None = None  # set by the addon for streams
    provider_cost_usd: str | None = None  # a cost the provider reported (OpenRouter usage.cost)
    body_note: str = ""  # e.g. "response body is not JSON", "stream ended without usage"

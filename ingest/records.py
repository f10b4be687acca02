"""Plain data passed between pipeline stages.

receive (``ingest.otlp``) produces ``SpanRecord``s; normalize (``ingest.normalize``)
turns them into ``LlmCallRow`` / ``ToolCallRow`` dicts; price and redact fill in
fields of those dicts; the writer turns lists of them into Arrow tables.
Every stage is a plain function over these dicts, so each is tested alone.
"""

from __future__ import annotations

from typing import Any, TypedDict

# An OTLP AnyValue decoded to Python: str, bool, int, float, bytes,
# list of AttrValue (array_value) or dict[str, AttrValue] (kvlist_value).
AttrValue = Any


class EventRecord(TypedDict):
    name: str
    time_ns: int
    attributes: dict[str, AttrValue]


class SpanRecord(TypedDict):
    trace_id: str  # 32 lowercase hex chars
    span_id: str  # 16 lowercase hex chars
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # unspecified | internal | server | client | producer | consumer
    start_ns: int  # unix epoch nanoseconds
    end_ns: int
    status: str  # unset | ok | error
    status_message: str
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]
    events: list[EventRecord]
    scope_name: str


class DecodedBatch(TypedDict):
    spans: list[SpanRecord]
    rejected: int  # spans dropped as invalid (reported as OTLP partial_success)
    errors: list[str]  # one short sentence per kind of rejection


class TokenUsage(TypedDict, total=False):
    """Token counts by the one accounting rule of WIRE-FORMATS.md.

    input_tokens is the whole prompt (cached included); cache_read_tokens and
    cache_write_tokens are parts of it; reasoning_tokens is part of output_tokens.
    None means the provider did not report it (never invent usage).
    """

    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None

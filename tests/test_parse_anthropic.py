"""Anthropic Messages wire format: requests, whole responses, SSE streams, errors.

Bodies are shaped like the real API's (ids, usage objects, event order as in
Anthropic's streaming docs), including the newer message_delta usage that
repeats input and cache counts.
"""

from __future__ import annotations

import json
from typing import Any

from proxy_addon.providers import anthropic
from proxy_addon.providers.base import CallFacts, RequestFacts, RequestView, ResponseView


def request(
    path: str = "/v1/messages",
    body: Any = None,
    headers: dict[str, str] | None = None,
    host: str = "api.anthropic.com",
    method: str = "POST",
) -> RequestView:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return RequestView(method, "https", host, 443, path, {}, headers or {}, raw)


def facts(stream: bool = True, model: str = "claude-sonnet-4-5") -> RequestFacts:
    return RequestFacts("anthropic", "chat", model, stream)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode()
        for e in events
    )


def run_tap(body: bytes, status: int = 200, step: int = 0) -> CallFacts:
    tap = anthropic.StreamTap(facts())
    if step:
        for i in range(0, len(body), step):
            tap.feed(body[i : i + step])
    else:
        tap.feed(body)
    return tap.finish(ResponseView(status, {"request-id": "req_011"}, b""))


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 100,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 1,
        },
    },
}
ARG_FRAGMENTS = ['{"locat', 'ion": "San Fr', 'ancisco, CA", "unit": "°', 'C"}']
TOOL_STREAM = [
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check ☀"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    *[
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": f},
        }
        for f in ARG_FRAGMENTS
    ],
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]


def test_shape_matching_on_odd_hosts_and_prefixes() -> None:
    assert anthropic.matches_shape(request("/v1/messages", host="localhost"))
    assert anthropic.matches_shape(request("/api/providers/anthropic/v1/messages", host="gw.corp"))
    assert anthropic.matches_shape(
        request("/whatever", headers={"anthropic-version": "2023-06-01"})
    )
    vertex = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-5@1:rawPredict"
    assert anthropic.matches_shape(request(vertex, host="us-east5-aiplatform.googleapis.com"))
    assert not anthropic.matches_shape(request("/v1/chat/completions", host="localhost"))
    assert not anthropic.matches_shape(request("/v1/messages-archive", host="localhost"))
    # Shape-matched, but not model calls.
    for path in ("/v1/messages/count_tokens", "/v1/messages/batches", "/v1/models"):
        assert anthropic.parse_request(request(path)) is None
    assert anthropic.parse_request(request(method="GET")) is None


def test_parse_request_model_stream_and_prompt() -> None:
    body = {
        "model": "claude-opus-4-1",
        "max_tokens": 1024,
        "stream": True,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    got = anthropic.parse_request(request("/proxy/v1/messages", body))
    assert got is not None
    assert (got.format, got.operation, got.request_model, got.is_stream) == (
        "anthropic",
        "chat",
        "claude-opus-4-1",
        True,
    )
    prompt = json.loads(got.input_content)
    assert prompt[0]["role"] == "system" and prompt[0]["content"][0]["text"] == "Be brief."
    assert prompt[1] == {"role": "user", "content": "Hi"}
    vertex = "/v1/projects/p/locations/l/publishers/anthropic/models/claude-3-5@1:streamRawPredict"
    got = anthropic.parse_request(request(vertex, {"anthropic_version": "vertex-2023-10-16"}))
    assert got is not None and got.request_model == "claude-3-5@1" and got.is_stream


def test_garbage_request_body_is_still_a_call() -> None:
    got = anthropic.parse_request(request(body=b"\xff\xfe not json"))
    assert got is not None and got.request_model == "" and "request_note" in got.extra


def test_whole_response_cache_accounting_and_tool_call() -> None:
    body = {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "text", "text": "I'll look that up."},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"location": "San Francisco, CA", "unit": "celsius"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 57,
            "output_tokens_details": {"thinking_tokens": 12},
        },
    }
    resp = ResponseView(200, {"request-id": "req_011"}, json.dumps(body).encode())
    got = anthropic.parse_response(facts(stream=False), resp)
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1300, 1000, 200)
    assert got.output_tokens == 57 and got.reasoning_tokens == 12
    assert got.provider_request_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert got.response_model == "claude-sonnet-4-5-20250929"
    assert got.finish_reason == "tool_use" and got.status == "ok" and got.body_note == ""
    [call] = got.tool_calls
    assert call.tool_call_id == "toolu_01A09q90qw90lq917835lq9" and call.tool_name == "get_weather"
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert json.loads(got.output_content)[0]["text"] == "I'll look that up."


def test_cache_write_from_ttl_split_and_missing_cache_fields() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70},
    }
    body = json.dumps({"id": "msg_1", "content": [], "usage": usage}).encode()
    got = anthropic.parse_response(facts(False), ResponseView(200, {}, body))
    assert (got.input_tokens, got.cache_write_tokens, got.cache_read_tokens) == (110, 100, None)
    body = json.dumps(
        {"id": "msg_2", "content": [], "usage": {"input_tokens": 7, "output_tokens": 2}}
    )
    got = anthropic.parse_response(facts(False), ResponseView(200, {}, body.encode()))
    assert (got.input_tokens, got.output_tokens, got.cache_write_tokens) == (7, 2, None)


def test_error_bodies() -> None:
    rate = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down"},
        "request_id": "req_body",
    }
    got = anthropic.parse_response(
        facts(), ResponseView(429, {"request-id": "req_hdr"}, json.dumps(rate).encode())
    )
    assert (got.status, got.error_type, got.provider_request_id) == (
        "error",
        "rate_limit_error",
        "req_hdr",
    )
    assert got.input_tokens is None and got.output_tokens is None and "Slow down" in got.body_note
    over = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    got = anthropic.parse_response(facts(), ResponseView(529, {}, json.dumps(over).encode()))
    assert got.error_type == "overloaded_error"
    got = anthropic.parse_response(facts(), ResponseView(502, {}, b"<html>Bad gateway</html>"))
    assert (got.status, got.error_type, got.body_note) == (
        "error",
        "http_502",
        "error body is not JSON",
    )


def test_garbage_success_bodies_never_raise() -> None:
    for body in (b"", b"\x00\x01garbage", b"[1, 2]", b'{"content": "nope", "usage": 5}', b"null"):
        got = anthropic.parse_response(facts(False), ResponseView(200, {}, body))
        assert got.status == "ok" and got.input_tokens is None and got.body_note


def test_stream_fed_one_byte_at_a_time_with_tool_call() -> None:
    got = run_tap(sse(*TOOL_STREAM), step=1)
    assert got.status == "ok" and got.body_note == ""
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1300, 1000, 200)
    assert got.output_tokens == 89  # the last cumulative count, not a sum
    assert got.provider_request_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert got.response_model == "claude-sonnet-4-5-20250929" and got.finish_reason == "tool_use"
    [call] = got.tool_calls
    assert (call.tool_call_id, call.tool_name) == ("toolu_01T1x", "get_weather")
    assert call.arguments == "".join(ARG_FRAGMENTS)
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "unit": "°C"}
    content = json.loads(got.output_content)
    assert content[0] == {"type": "text", "text": "Let me check ☀"}
    assert content[1]["input"]["unit"] == "°C"
    # Any chunking gives the same answer.
    assert run_tap(sse(*TOOL_STREAM), step=7) == got


def test_message_delta_input_and_cache_counts_win() -> None:
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {
            "input_tokens": 120,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": None,
            "output_tokens": 15,
        },
    }
    got = run_tap(sse(MESSAGE_START, final, {"type": "message_stop"}))
    # input and cache_read from message_delta; the null cache write keeps message_start's 200.
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1320, 1000, 200)
    assert got.output_tokens == 15 and got.finish_reason == "end_turn"


def test_interrupted_stream_keeps_only_seen_usage() -> None:
    cut = sse(*TOOL_STREAM[:8]) + b'event: content_block_delta\ndata: {"type": "content_bl'
    got = run_tap(cut, step=5)
    assert (got.status, got.error_type) == ("error", "interrupted")
    assert got.input_tokens == 1300 and got.output_tokens == 1  # what message_start said
    assert got.finish_reason == "" and "message_stop" in got.body_note
    assert got.tool_calls[0].tool_name == "get_weather"  # started, arguments incomplete
    # Cut before message_start: nothing is known.
    got = run_tap(b'event: message_start\ndata: {"type": "mess')
    assert (got.status, got.error_type) == ("error", "interrupted")
    assert got.input_tokens is None and got.output_tokens is None


def test_error_event_in_stream_and_error_body_to_tap() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    got = run_tap(sse(MESSAGE_START, error))
    assert (got.status, got.error_type) == ("error", "overloaded_error")
    assert got.input_tokens == 1300 and "Overloaded" in got.body_note
    body = json.dumps({"type": "error", "error": {"type": "api_error", "message": "x"}}).encode()
    got = run_tap(body, status=500)
    assert (got.status, got.error_type, got.input_tokens) == ("error", "api_error", None)


def test_buffered_stream_and_non_streamed_answer_to_tap() -> None:
    # The addon buffered an SSE body and called parse_response.
    resp = ResponseView(200, {"content-type": "text/event-stream"}, sse(*TOOL_STREAM))
    assert anthropic.parse_response(facts(), resp) == run_tap(sse(*TOOL_STREAM))
    # The tap saw plain JSON: the server ignored stream=true.
    body = {
        "id": "msg_9",
        "model": "m",
        "content": [],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 6},
    }
    got = run_tap(json.dumps(body).encode(), step=3)
    assert (got.status, got.input_tokens, got.output_tokens) == ("ok", 5, 6)
    # Even when the headers claim SSE (no replay loop between tap and parse_response).
    tap = anthropic.StreamTap(facts())
    tap.feed(json.dumps(body).encode())
    got = tap.finish(ResponseView(200, {"content-type": "text/event-stream"}, b""))
    assert (got.status, got.provider_request_id, got.output_tokens) == ("ok", "msg_9", 6)


def test_garbage_stream_never_raises() -> None:
    got = run_tap(b"\x00\xff" * 1000 + b"\n\ndata: {not json}\n\n", step=13)
    assert got.status == "error" and got.error_type == "interrupted"
    assert got.input_tokens is None and "unreadable" in got.body_note


def test_content_is_truncated_to_64_kib() -> None:
    big = "é" * 70_000  # 140 KB of UTF-8
    body = {"model": "m", "messages": [{"role": "user", "content": big}]}
    req = anthropic.parse_request(request(body=body))
    assert req is not None
    assert len(req.input_content.encode()) <= 64 * 1024 and req.input_content.endswith("KiB]")
    deltas = [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "ab" * 5000},
        }
    ] * 10
    events = [MESSAGE_START, TOOL_STREAM[1], *deltas, {"type": "message_stop"}]
    got = run_tap(sse(*events), step=4096)
    assert len(got.output_content.encode()) <= 64 * 1024 and "truncated" in got.output_content

"""Bedrock Converse wire format and the AWS event-stream decoder.

botocore is not installed in the project venv (and is not added for this), so
the decoder is checked against the known-good vectors from botocore's own test
suite (tests/unit/test_eventstream.py, the AWS event-stream spec vectors),
against round trips through ``encode_event``, and split at every byte.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest

from proxy_addon.eventstream import EventStreamDecoder, EventStreamError, encode_event
from proxy_addon.providers import bedrock
from proxy_addon.providers.base import CallFacts, RequestFacts, RequestView, ResponseView

# (encoded message, headers, payload) from botocore's tests/unit/test_eventstream.py.
VECTORS: list[tuple[bytes, dict[str, Any], bytes]] = [
    (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b""),
    (b"\x00\x00\x00\x17\x00\x00\x00\x07)\x86\x01X\x04byte\x02\xff\xc2\xf8i\xdc", {"byte": -1}, b""),
    (
        b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
        {},
        b"{'foo':'bar'}",
    ),
    (
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
        b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
        {"content-type": "application/json"},
        b"{'foo':'bar'}",
    ),
    (
        b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
        b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
        b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
        b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
        b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
        b"\x63\x35\x36\x71",
        {
            "0": True,
            "1": False,
            "2": 2,
            "3": 3,
            "4": 4,
            "5": 5,
            "6": b"bytes",
            "7": "utf8",
            "8": 8,
            "9": b"0123456789abcdef",
        },
        b"",
    ),
    (
        b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
        b"\x0d:message-type\x07\x00\x05error\x0b:error-code\x07\x00\x04code"
        b"\x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d",
        {":message-type": "error", ":error-code": "code", ":error-message": "message"},
        b"",
    ),
]
CORRUPT = [
    b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",  # length
    b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96",  # payload CRC
    b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent+type\x07\x00\x10"
    b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",  # header bytes
    b"\x00\x00\x00\x24\x00\x00\x00\x14\x4b\xb9\x82\xd0\x04test\x04asdf\x04test\x04asdf"
    b"\xf3\xf4\x75\x63",  # duplicate header
]

MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"


def event(kind: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads payloads with a random "p" field; parsers must ignore it.
    body = json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"}).encode()
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_event(headers, body)


def delta(index: int, value: dict[str, Any]) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": value})


ARG_FRAGMENTS = ['{"ci', 'ty": "Zürich", "da', 'ys": 3}']
METADATA = {
    "usage": {
        "inputTokens": 100,
        "outputTokens": 48,
        "totalTokens": 1348,
        "cacheReadInputTokens": 1000,
        "cacheWriteInputTokens": 200,
    },
    "metrics": {"latencyMs": 1234},
}
STREAM = b"".join(
    [
        event("messageStart", {"role": "assistant"}),
        delta(0, {"text": "Let me look "}),
        delta(0, {"text": "that up ✓"}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event(
            "contentBlockStart",
            {
                "contentBlockIndex": 1,
                "start": {
                    "toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "forecast"}
                },
            },
        ),
        *[delta(1, {"toolUse": {"input": f}}) for f in ARG_FRAGMENTS],
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("messageStop", {"stopReason": "tool_use"}),
        event("metadata", METADATA),
    ]
)


def request(
    path: str, body: Any = None, method: str = "POST", host: str = "localhost"
) -> RequestView:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return RequestView(method, "https", host, 443, path, {}, {}, raw)


def facts(stream: bool = True) -> RequestFacts:
    return RequestFacts("bedrock", "chat", MODEL, stream)


def run_tap(body: bytes, status: int = 200, step: int = 0) -> CallFacts:
    tap = bedrock.StreamTap(facts())
    step = step or len(body) or 1
    for i in range(0, len(body), step):
        tap.feed(body[i : i + step])
    return tap.finish(ResponseView(status, {"x-amzn-requestid": "8f3c-rid"}, b""))


@pytest.mark.parametrize(("encoded", "headers", "payload"), VECTORS)
def test_decoder_known_good_vectors_split_at_every_byte(
    encoded: bytes, headers: dict[str, Any], payload: bytes
) -> None:
    assert EventStreamDecoder().feed(encoded) == [(headers, payload)]
    for cut in range(1, len(encoded)):
        decoder = EventStreamDecoder()
        assert decoder.feed(encoded[:cut]) == []
        assert decoder.feed(encoded[cut:]) == [(headers, payload)]
        assert decoder.buffered == 0


def test_decoder_all_vectors_in_one_stream_one_byte_at_a_time() -> None:
    stream = b"".join(v[0] for v in VECTORS)
    decoder = EventStreamDecoder()
    got = [m for i in range(len(stream)) for m in decoder.feed(stream[i : i + 1])]
    assert got == [(v[1], v[2]) for v in VECTORS]


@pytest.mark.parametrize("encoded", CORRUPT)
def test_decoder_rejects_corrupt_messages_and_stays_failed(encoded: bytes) -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(encoded)
    with pytest.raises(EventStreamError):
        decoder.feed(VECTORS[0][0])  # no resync after a broken frame


def test_encode_round_trip_and_layout() -> None:
    headers = {":event-type": "contentBlockDelta", "x-ünïcode": "välue ✓"}
    payload = json.dumps({"delta": {"text": "hi"}}).encode()
    raw = encode_event(headers, payload)
    total, header_len, prelude_crc = struct.unpack(">III", raw[:12])
    assert total == len(raw) and prelude_crc == zlib.crc32(raw[:8])
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[:-4])
    assert raw[12 + header_len : -4] == payload
    assert EventStreamDecoder().feed(raw * 3) == [(headers, payload)] * 3
    assert encode_event({}, b"") == VECTORS[0][0]  # the spec's empty message, byte for byte
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(struct.pack(">II", 16, 0) + b"\0\0\0\0")


def test_shape_matching_and_model_ids() -> None:
    encoded = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"
    got = bedrock.parse_request(request(encoded, host="bedrock-runtime.us-west-2.amazonaws.com"))
    assert got is not None and (got.request_model, got.is_stream) == (MODEL, True)
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    for path in (
        f"/model/{arn.replace(':', '%3A').replace('/', '%2F')}/converse",
        f"/v1/acct/gw/aws-bedrock/bedrock-runtime/us-east-1/model/{arn}/converse",
    ):
        assert bedrock.matches_shape(request(path, host="gateway.example"))
        got = bedrock.parse_request(request(path))
        assert got is not None and got.request_model == arn and not got.is_stream
    for path in ("/model/amazon.nova-pro-v1:0/invoke", "/v1/messages", "/model//converse"):
        assert not bedrock.matches_shape(request(path))
    assert bedrock.parse_request(request(encoded, method="GET")) is None


def test_parse_request_prompt() -> None:
    body = {
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": "Forecast?"}]}],
        "inferenceConfig": {"maxTokens": 512},
    }
    got = bedrock.parse_request(request(f"/model/{MODEL}/converse", body))
    assert got is not None
    prompt = json.loads(got.input_content)
    assert prompt[0]["role"] == "system" and prompt[0]["content"][0] == {"text": "You are terse."}
    assert prompt[1]["content"] == [{"text": "Forecast?"}]
    got = bedrock.parse_request(request(f"/model/{MODEL}/converse", b"\x00garbage"))
    assert got is not None and "request_note" in got.extra


def test_whole_response_cache_accounting_and_tool_call() -> None:
    body = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "forecast",
                            "input": {"city": "Bern"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 100,
            "outputTokens": 30,
            "totalTokens": 1330,
            "cacheReadInputTokens": 1000,
            "cacheWriteInputTokens": 200,
        },
        "metrics": {"latencyMs": 812},
    }
    resp = ResponseView(200, {"x-amzn-requestid": "a1b2-rid"}, json.dumps(body).encode())
    got = bedrock.parse_response(facts(False), resp)
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1300, 1000, 200)
    assert (got.output_tokens, got.reasoning_tokens) == (30, None)
    assert (got.finish_reason, got.provider_request_id, got.response_model) == (
        "tool_use",
        "a1b2-rid",
        MODEL,
    )
    [call] = got.tool_calls
    assert (call.tool_call_id, call.tool_name, json.loads(call.arguments)) == (
        "tooluse_1",
        "forecast",
        {"city": "Bern"},
    )
    assert json.loads(got.output_content)[0] == {"text": "Checking."}
    plain = {**body, "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}}
    got = bedrock.parse_response(facts(False), ResponseView(200, {}, json.dumps(plain).encode()))
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (12, None, None)


def test_error_bodies() -> None:
    headers = {
        "x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": "rid-429",
    }
    body = b'{"message":"Too many requests, please wait before trying again."}'
    got = bedrock.parse_response(facts(False), ResponseView(429, headers, body))
    assert (got.status, got.error_type, got.provider_request_id) == (
        "error",
        "ThrottlingException",
        "rid-429",
    )
    assert got.input_tokens is None and "Too many requests" in got.body_note
    typed = b'{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}'
    got = bedrock.parse_response(facts(False), ResponseView(400, {}, typed))
    assert got.error_type == "ValidationException"
    got = bedrock.parse_response(facts(False), ResponseView(502, {}, b"<html>"))
    assert (got.error_type, got.body_note) == ("http_502", "error body is not JSON")


def test_stream_one_byte_at_a_time_with_tool_call() -> None:
    got = run_tap(STREAM, step=1)
    assert got.status == "ok" and got.body_note == ""
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1300, 1000, 200)
    assert got.output_tokens == 48 and got.finish_reason == "tool_use"
    assert (got.response_model, got.provider_request_id) == (MODEL, "8f3c-rid")
    [call] = got.tool_calls
    assert (call.tool_call_id, call.tool_name) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "forecast")
    assert call.arguments == "".join(ARG_FRAGMENTS)
    content = json.loads(got.output_content)
    assert content[0] == {"text": "Let me look that up ✓"}
    assert content[1]["toolUse"]["input"] == {"city": "Zürich", "days": 3}
    assert run_tap(STREAM, step=97) == got
    # A buffered event-stream body through parse_response gives the same facts.
    resp = ResponseView(
        200,
        {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "8f3c-rid"},
        STREAM,
    )
    assert bedrock.parse_response(facts(), resp) == got


def test_exception_event_in_stream() -> None:
    exc = encode_event(
        {
            ":message-type": "exception",
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
        },
        b'{"message":"Too many tokens"}',
    )
    got = run_tap(event("messageStart", {"role": "assistant"}) + delta(0, {"text": "Hi"}) + exc)
    assert (got.status, got.error_type, got.input_tokens) == ("error", "ThrottlingException", None)
    assert "Too many tokens" in got.body_note and json.loads(got.output_content) == [{"text": "Hi"}]
    err = encode_event(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
    )
    got = run_tap(err)
    assert (got.error_type, got.body_note) == (
        "InternalFailure",
        "provider error: boom; stream ended without usage",
    )


def test_interrupted_and_corrupt_streams() -> None:
    end_of_deltas = STREAM.index(event("contentBlockStop", {"contentBlockIndex": 1}))
    got = run_tap(STREAM[: end_of_deltas + 10], step=1)  # cut inside a message
    assert (got.status, got.error_type, got.input_tokens) == ("error", "interrupted", None)
    assert "messageStop" in got.body_note and "incomplete event" in got.body_note
    assert got.tool_calls[0].arguments == "".join(ARG_FRAGMENTS)
    no_usage = STREAM[: STREAM.index(event("metadata", METADATA))]
    got = run_tap(no_usage)
    assert (got.status, got.finish_reason, got.output_tokens) == ("ok", "tool_use", None)
    assert got.body_note == "stream ended without usage"
    flipped = bytearray(STREAM)
    flipped[40] ^= 0xFF
    got = run_tap(bytes(flipped), step=5)
    assert (got.status, got.error_type) == ("error", "malformed_stream")
    assert "CRC" in got.body_note


def test_garbage_never_raises() -> None:
    for body in (b"", b"\xff\xfe", b"[]", b'{"output": 1, "usage": "x"}'):
        got = bedrock.parse_response(facts(False), ResponseView(200, {}, body))
        assert got.status == "ok" and got.input_tokens is None and got.body_note
    got = run_tap(b"\x00" * 3 + b"garbage" * 50, step=3)
    assert got.status == "error" and got.input_tokens is None
    # Plain JSON where a stream was expected is read as a whole response.
    plain = {
        "output": {"message": {"content": [{"text": "ok"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 5, "outputTokens": 1, "totalTokens": 6},
    }
    tap = bedrock.StreamTap(facts())
    tap.feed(json.dumps(plain).encode())
    headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "r9"}
    got = tap.finish(ResponseView(200, headers, b""))
    assert (got.status, got.input_tokens, got.finish_reason) == ("ok", 5, "end_turn")
    assert got.provider_request_id == "r9"

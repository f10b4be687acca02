"""Gemini / Vertex AI generateContent wire format: requests, responses, both stream framings.

Bodies follow the REST reference (GenerateContentResponse with candidates,
usageMetadata, responseId, modelVersion); the JSON-array stream is what
``streamGenerateContent`` without ``alt=sse`` sends (elements separated by
``,\\r\\n``).
"""

from __future__ import annotations

import json
from typing import Any

from proxy_addon.providers import gemini
from proxy_addon.providers.base import CallFacts, RequestFacts, RequestView, ResponseView

GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
VERTEX_PATH = (
    "/v1/projects/my-proj/locations/us-central1/publishers/google/models/"
    "gemini-2.0-flash-001:generateContent"
)


def request(
    path: str = GEMINI_PATH,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    host: str = "generativelanguage.googleapis.com",
    method: str = "POST",
) -> RequestView:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return RequestView(method, "https", host, 443, path, query or {}, headers or {}, raw)


def facts(stream: bool = True, operation: str = "chat") -> RequestFacts:
    return RequestFacts("gemini", operation, "gemini-2.5-flash", stream)


def chunk(
    text: str | None = None,
    call: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append({"text": text})
    if call is not None:
        parts.append({"functionCall": call})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mLkiaK2pBp2Nz7IPmsavqQ4",
    }
    if usage:
        out["usageMetadata"] = usage
    return out


USAGE = {
    "promptTokenCount": 1500,
    "cachedContentTokenCount": 1024,
    "candidatesTokenCount": 40,
    "thoughtsTokenCount": 60,
    "totalTokenCount": 1600,
}
STREAM = [
    chunk("The weather", usage={"promptTokenCount": 1500, "totalTokenCount": 1500}),
    chunk(' in "Paris" {is}', usage={"promptTokenCount": 1500, "candidatesTokenCount": 9}),
    chunk(call={"name": "get_weather", "args": {"city": "Paris", "note": 'a "}]\\ b'}}),
    chunk(call={"name": "get_time", "args": {"tz": "Europe/Paris"}}, finish="STOP", usage=USAGE),
]


def as_sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n".encode() for c in chunks)


def as_array(chunks: list[dict[str, Any]]) -> bytes:
    return ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in chunks) + "]").encode()


def run_tap(body: bytes, status: int = 200, step: int = 0) -> CallFacts:
    tap = gemini.StreamTap(facts())
    step = step or len(body) or 1
    for i in range(0, len(body), step):
        tap.feed(body[i : i + step])
    return tap.finish(ResponseView(status, {}, b""))


def test_shape_matching_and_which_paths_are_calls() -> None:
    assert gemini.matches_shape(request(GEMINI_PATH, host="localhost"))
    assert gemini.matches_shape(request(VERTEX_PATH, host="europe-west4-aiplatform.googleapis.com"))
    assert gemini.matches_shape(request("/v1beta/tunedModels/my-tune-123:generateContent"))
    assert gemini.matches_shape(request("/anything", headers={"x-goog-api-key": "k"}, host="gw"))
    assert gemini.matches_shape(request("/anything", query={"key": "k"}, host="gw"))
    assert not gemini.matches_shape(request("/v1/chat/completions", host="localhost"))
    assert gemini.parse_request(request("/v1beta/models/gemini-2.5-flash:countTokens")) is None
    assert gemini.parse_request(request("/v1beta/models", method="GET")) is None
    claude_on_vertex = "/v1/projects/p/locations/l/publishers/anthropic/models/claude:rawPredict"
    assert gemini.parse_request(request(claude_on_vertex)) is None


def test_parse_request_model_from_path_and_prompt() -> None:
    body = {
        "system_instruction": {"parts": [{"text": "Answer in French."}]},
        "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}},
    }
    got = gemini.parse_request(
        request("/gw/google/v1beta/models/gemini-2.5-flash:generateContent", body)
    )
    assert got is not None
    assert (got.format, got.operation, got.request_model, got.is_stream) == (
        "gemini",
        "chat",
        "gemini-2.5-flash",
        False,
    )
    prompt = json.loads(got.input_content)
    assert prompt[0] == {"parts": [{"text": "Answer in French."}], "role": "system"}
    assert prompt[1]["parts"][0]["text"] == "Weather?"
    got = gemini.parse_request(request(VERTEX_PATH.replace(":generate", ":streamGenerate"), body))
    assert got is not None and got.request_model == "gemini-2.0-flash-001" and got.is_stream
    got = gemini.parse_request(request(body=b"garbage"))
    assert got is not None and got.is_stream and "request_note" in got.extra


def test_whole_response_usage_and_synthesized_tool_ids() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Checking both."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"id": "call-given", "name": "get_time", "args": {}}},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Nice"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {**USAGE, "toolUsePromptTokenCount": 5},
        "modelVersion": "models/gemini-2.5-flash-preview-05-20",
        "responseId": "resp-abc",
    }
    got = gemini.parse_response(facts(False), ResponseView(200, {}, json.dumps(body).encode()))
    assert got.status == "ok" and got.body_note == ""
    assert got.input_tokens == 1505  # promptTokenCount already includes the cached 1024
    assert (got.cache_read_tokens, got.cache_write_tokens) == (1024, None)
    assert (got.output_tokens, got.reasoning_tokens) == (100, 60)
    assert (got.provider_request_id, got.finish_reason) == ("resp-abc", "STOP")
    assert got.response_model == "gemini-2.5-flash-preview-05-20"
    ids = [c.tool_call_id for c in got.tool_calls]
    assert ids == ["resp-abc:0", "call-given", "resp-abc:2"]
    assert json.loads(got.tool_calls[2].arguments) == {"city": "Nice"}
    assert json.loads(got.output_content)[0] == {"text": "Checking both."}
    # Same body, same ids: the synthesized ids are deterministic.
    again = gemini.parse_response(facts(False), ResponseView(200, {}, json.dumps(body).encode()))
    assert [c.tool_call_id for c in again.tool_calls] == ids


def test_usage_with_omitted_zero_counts() -> None:
    body = chunk("hi", finish="STOP", usage={"promptTokenCount": 8, "totalTokenCount": 8})
    got = gemini.parse_response(facts(False), ResponseView(200, {}, json.dumps(body).encode()))
    assert (got.input_tokens, got.output_tokens, got.cache_read_tokens, got.reasoning_tokens) == (
        8,
        0,
        0,
        0,
    )
    got = gemini.parse_response(
        facts(False), ResponseView(200, {}, json.dumps(chunk("hi")).encode())
    )
    assert got.input_tokens is None and got.output_tokens is None and "usage" in got.body_note


def test_sse_stream_one_byte_at_a_time() -> None:
    got = run_tap(as_sse(STREAM), step=1)
    assert got.status == "ok" and got.body_note == ""
    assert (got.input_tokens, got.cache_read_tokens, got.output_tokens) == (1500, 1024, 100)
    assert got.finish_reason == "STOP" and got.provider_request_id == "mLkiaK2pBp2Nz7IPmsavqQ4"
    assert [(c.tool_call_id, c.tool_name) for c in got.tool_calls] == [
        ("mLkiaK2pBp2Nz7IPmsavqQ4:0", "get_weather"),
        ("mLkiaK2pBp2Nz7IPmsavqQ4:1", "get_time"),
    ]
    assert json.loads(got.tool_calls[0].arguments)["note"] == 'a "}]\\ b'
    parts = json.loads(got.output_content)
    assert parts[0] == {"text": 'The weather in "Paris" {is}'}
    assert parts[1]["functionCall"]["name"] == "get_weather"


def test_json_array_stream_split_at_every_byte_matches_sse() -> None:
    body = as_array(STREAM)
    expected = run_tap(as_sse(STREAM))
    assert run_tap(body, step=1) == expected
    for step in (2, 3, 5, 64):
        assert run_tap(body, step=step) == expected
    # The buffered (non-tapped) path gives the same facts too.
    assert gemini.parse_response(facts(), ResponseView(200, {}, body)) == expected


def test_interrupted_streams() -> None:
    got = run_tap(as_sse(STREAM[:2]), step=3)
    assert (got.status, got.error_type) == ("error", "interrupted")
    # usage from the last chunk that had it, nothing invented
    assert (got.input_tokens, got.output_tokens) == (1500, 9)
    assert "finishReason" in got.body_note
    cut = as_array(STREAM)[:-40]  # inside the final element
    got = run_tap(cut, step=1)
    assert (got.status, got.error_type, got.input_tokens) == ("error", "interrupted", 1500)
    assert len(got.tool_calls) == 1
    got = run_tap(b"")
    assert got.error_type == "interrupted" and got.input_tokens is None


def test_error_bodies_and_mid_stream_error() -> None:
    error = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    got = gemini.parse_response(facts(False), ResponseView(429, {}, json.dumps(error).encode()))
    assert (got.status, got.error_type, got.input_tokens) == ("error", "RESOURCE_EXHAUSTED", None)
    assert "exhausted" in got.body_note
    # Errors of a streaming call without alt=sse come as a one-element array.
    got = gemini.parse_response(facts(), ResponseView(400, {}, json.dumps([error]).encode()))
    assert got.error_type == "RESOURCE_EXHAUSTED"
    got = gemini.parse_response(facts(), ResponseView(503, {}, b"upstream connect error"))
    assert (got.error_type, got.body_note) == ("http_503", "error body is not JSON")
    unavailable = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    got = run_tap(as_sse([STREAM[0], unavailable]))
    assert (got.status, got.error_type, got.input_tokens) == ("error", "UNAVAILABLE", 1500)


def test_blocked_prompt_is_finished_not_interrupted() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }
    got = run_tap(as_sse([blocked]))
    assert (got.status, got.finish_reason, got.input_tokens, got.output_tokens) == (
        "ok",
        "SAFETY",
        12,
        0,
    )


def test_garbage_never_raises() -> None:
    for body in (b"", b"\xff\x00garbage", b"[1,2,3]", b'{"candidates": "x", "usageMetadata": 3}'):
        got = gemini.parse_response(facts(False), ResponseView(200, {}, body))
        assert got.status == "ok" and got.input_tokens is None and got.body_note
    got = run_tap(b"data: {nope}\n\ndata: [1]\n\n")
    assert got.error_type == "interrupted" and "2 unreadable" in got.body_note
    got = run_tap(b'[{"a": "\\', step=1)
    assert got.error_type == "interrupted"


def test_non_streamed_answer_to_tap_and_embeddings() -> None:
    body = json.dumps(chunk("Bonjour", finish="STOP", usage=USAGE)).encode()
    got = run_tap(body, step=2)
    assert (got.status, got.input_tokens, got.output_content) == (
        "ok",
        1500,
        '[{"text":"Bonjour"}]',
    )
    embed = gemini.parse_request(
        request(
            "/v1beta/models/gemini-embedding-001:embedContent",
            {"content": {"parts": [{"text": "hello"}]}},
        )
    )
    assert embed is not None and (embed.operation, embed.is_stream) == ("embeddings", False)
    assert json.loads(embed.input_content) == [{"parts": [{"text": "hello"}]}]
    resp = ResponseView(200, {}, b'{"embedding": {"values": [0.1, 0.2]}}')
    got = gemini.parse_response(embed, resp)
    assert (got.status, got.input_tokens, got.output_content) == ("ok", None, "")

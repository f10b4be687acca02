"""The OpenAI wire-format parser and the SSE decoder, on bodies shaped like the real API.

Every fixture body is validated against the `openai` SDK's own pydantic types
(test_fixtures_are_real_shaped), so a field-name typo here fails loudly instead of
testing the parser against a shape no server sends.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import data as genai_data
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy_addon.providers import openai as oai
from proxy_addon.providers.base import CallFacts, RequestFacts, RequestView, ResponseView
from proxy_addon.sse import SseDecoder, SseEvent

# --- helpers ---------------------------------------------------------------------------


def req(
    path: str,
    body: Any = None,
    method: str = "POST",
    query: dict[str, str] | None = None,
    host: str = "api.openai.com",
) -> RequestView:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return RequestView(
        method, "https", host, 443, path, query or {}, {"content-type": "application/json"}, raw
    )


def resp(status: int, body: Any, headers: dict[str, str] | None = None) -> ResponseView:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ResponseView(status, {"x-request-id": "req_hdr123", **(headers or {})}, raw)


def facts_for(path: str, body: dict[str, Any]) -> RequestFacts:
    facts = oai.parse_request(req(path, body))
    assert facts is not None
    return facts


def sse(*chunks: Any, done: bool = True) -> bytes:
    """Chat-style SSE: `data: <json>` events, then `data: [DONE]`."""
    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def responses_sse(*events: dict[str, Any]) -> bytes:
    """Responses-style SSE: each event also named on an `event:` line, as OpenAI sends it."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def run_tap(
    facts: RequestFacts,
    body: bytes,
    chunk_size: int = 4096,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> CallFacts:
    tap = oai.StreamTap(facts)
    for i in range(0, len(body), chunk_size):
        tap.feed(body[i : i + chunk_size])
    return tap.finish(ResponseView(status, headers or {"x-request-id": "req_hdr123"}, b""))


CHAT_PATH = "/v1/chat/completions"
CHAT_REQUEST = {
    "model": "o4-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What's the weather in Paris?"},
    ],
}

# --- real-shaped bodies ----------------------------------------------------------------

CHAT_BODY = {
    "id": "chatcmpl-BXnq4dXqNJMPhTXvwJvwsHpyBpKzM",
    "object": "chat.completion",
    "created": 1747324752,
    "model": "o4-mini-2025-04-16",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Sunny, 21 °C.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 256,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
}

TOOL_BODY = {
    "id": "chatcmpl-tool1",
    "object": "chat.completion",
    "created": 1747324800,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_Xq1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_Xq2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"Europe/Paris"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 51,
        "total_tokens": 133,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_b42a6f2b5c",
}


def chunk(
    delta: dict[str, Any] | None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    cid: str = "chatcmpl-stream1",
) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1747325000,
        "model": "gpt-4.1-mini-2025-04-14",
        "service_tier": "default",
        "system_fingerprint": "fp_6f2eabb9a5",
        "choices": choices,
        "usage": usage,
    }


STREAM_USAGE = {
    "prompt_tokens": 95,
    "completion_tokens": 24,
    "total_tokens": 119,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

TOOL_STREAM = [
    chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_A1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
            "refusal": None,
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Zürich"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_B2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz":'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}),
    chunk({}, finish="tool_calls"),
    chunk(None, usage=STREAM_USAGE),
]

TEXT_STREAM = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": ", wörld"}),
    chunk({"content": "!"}),
    chunk({}, finish="stop"),
]

RESPONSE_FC_ITEM = {
    "type": "function_call",
    "id": "fc_67ca09c6bedc8190",
    "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
    "name": "get_weather",
    "arguments": '{"location":"Paris, France"}',
    "status": "completed",
}


def response_obj(
    status: str = "completed",
    output: list[Any] | None = None,
    usage: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": "resp_67ca09c5efe0819096d0511c92b8c890",
        "object": "response",
        "created_at": 1741294021,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4.1-2025-04-14",
        "output": output or [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
        **extra,
    }


RESPONSES_USAGE = {
    "input_tokens": 291,
    "input_tokens_details": {"cached_tokens": 128, "cache_write_tokens": 0},
    "output_tokens": 523,
    "output_tokens_details": {"reasoning_tokens": 448},
    "total_tokens": 814,
}

RESPONSES_BODY = response_obj(
    output=[
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Checking the weather.", "annotations": []}
            ],
        },
        RESPONSE_FC_ITEM,
    ],
    usage=RESPONSES_USAGE,
)

RESPONSES_STREAM = [
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": response_obj(status="in_progress"),
    },
    {
        "type": "response.in_progress",
        "sequence_number": 1,
        "response": response_obj(status="in_progress"),
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {**RESPONSE_FC_ITEM, "arguments": "", "status": "in_progress"},
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 3,
        "item_id": "fc_67ca09c6bedc8190",
        "output_index": 0,
        "delta": '{"location":',
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 4,
        "item_id": "fc_67ca09c6bedc8190",
        "output_index": 0,
        "delta": '"Paris, France"}',
    },
    {
        "type": "response.function_call_arguments.done",
        "sequence_number": 5,
        "item_id": "fc_67ca09c6bedc8190",
        "output_index": 0,
        "name": "get_weather",
        "arguments": '{"location":"Paris, France"}',
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 6,
        "output_index": 0,
        "item": RESPONSE_FC_ITEM,
    },
    {
        "type": "response.completed",
        "sequence_number": 7,
        "response": response_obj(output=[RESPONSE_FC_ITEM], usage=RESPONSES_USAGE),
    },
]

EMBEDDINGS_BODY = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.5]},
        {"object": "embedding", "index": 1, "embedding": [0.1, 0.2, -0.3]},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

COMPLETION_BODY = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "text": "\n\nThis is indeed a test",
            "index": 0,
            "logprobs": None,
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}


def test_fixtures_are_real_shaped() -> None:
    for body in (CHAT_BODY, TOOL_BODY):
        ChatCompletion.model_validate(body)
    for c in [*TOOL_STREAM, *TEXT_STREAM]:
        ChatCompletionChunk.model_validate(c)
    Response.model_validate(RESPONSES_BODY)
    events = TypeAdapter(ResponseStreamEvent)
    for e in RESPONSES_STREAM:
        assert events.validate_python(e).type == e["type"]
    CreateEmbeddingResponse.model_validate(EMBEDDINGS_BODY)
    Completion.model_validate(COMPLETION_BODY)


# --- requests and shape ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/v1/chat/completions", "chat"),
        ("/chat/completions", "chat"),
        ("/openai/v1/chat/completions", "chat"),
        ("/api/v1/chat/completions", "chat"),  # OpenRouter
        ("/v1beta/openai/chat/completions/", "chat"),  # Gemini's compatible endpoint
        ("/openai/deployments/gpt4o-prod/chat/completions", "chat"),
        ("/v1/responses", "responses"),
        ("/openai/responses", "responses"),
        ("/v1/embeddings", "embeddings"),
        ("/openai/deployments/emb/embeddings", "embeddings"),
        ("/v1/completions", "completion"),
        ("/openai/deployments/instruct/completions", "completion"),
    ],
)
def test_shape_matches_any_prefix(path: str, operation: str) -> None:
    request = req(path, {"model": "m"})
    assert oai.matches_shape(request)
    facts = oai.parse_request(request)
    assert facts is not None and facts.operation == operation and facts.format == "openai"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/messages",
        "/v1/chat/completions/chatcmpl-123",
        "/v1/responses/resp_123",
        "/v1/responses/input_tokens",
        "/v1/files",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1/chat/completionsX",
    ],
)
def test_shape_rejects_other_endpoints(path: str) -> None:
    assert not oai.matches_shape(req(path, {}))
    assert oai.parse_request(req(path, {})) is None


def test_only_post_is_a_model_call() -> None:
    assert oai.parse_request(req("/v1/models", method="GET")) is None
    # Listing stored chat completions is a GET on the same path: not a model call.
    assert oai.parse_request(req(CHAT_PATH, method="GET")) is None


def test_request_facts() -> None:
    body = {**CHAT_REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    facts = facts_for(CHAT_PATH, body)
    assert (facts.request_model, facts.is_stream) == ("o4-mini", True)
    assert facts.extra["include_usage"] == "true"
    assert json.loads(facts.input_content) == CHAT_REQUEST["messages"]

    responses = facts_for(
        "/v1/responses", {"model": "gpt-4.1", "instructions": "Be terse.", "input": "hi"}
    )
    assert json.loads(responses.input_content) == {"instructions": "Be terse.", "input": "hi"}
    assert not responses.is_stream and "include_usage" not in responses.extra

    legacy = facts_for("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say"})
    assert json.loads(legacy.input_content) == "Say"

    garbage = oai.parse_request(req(CHAT_PATH, b"\x00not json{"))
    assert garbage is not None and garbage.extra["request_note"]


def test_input_content_is_capped_at_64_kib() -> None:
    big = "x" * 200_000
    facts = facts_for(
        CHAT_PATH, {"model": "gpt-4o", "messages": [{"role": "user", "content": big}]}
    )
    assert "…[truncated" in facts.input_content
    kept, _, _ = facts.input_content.partition("…[truncated")
    assert len(kept.encode()) == oai.MAX_CONTENT_BYTES


def test_clip_text_never_splits_a_character() -> None:
    clipped = oai.clip_text("é" * 10, limit=5)  # 2 bytes each: 5 bytes is 2.5 characters
    assert clipped.startswith("éé…[truncated 15 of 20 bytes]")


# --- non-streamed responses ------------------------------------------------------------


def test_chat_cached_and_reasoning_tokens() -> None:
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(200, CHAT_BODY))
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens, cf.reasoning_tokens) == (
        2006,
        1920,
        300,
        256,
    )  # whole prompt; cached and reasoning are parts
    assert cf.cache_write_tokens is None
    assert cf.response_model == "o4-mini-2025-04-16"
    assert cf.provider_request_id == "chatcmpl-BXnq4dXqNJMPhTXvwJvwsHpyBpKzM"
    assert (cf.finish_reason, cf.status, cf.body_note) == ("stop", "ok", "")
    assert json.loads(cf.output_content)[0]["content"] == "Sunny, 21 °C."


@pytest.mark.parametrize(
    ("flavor", "operation", "body"),
    [
        ("chat", "chat", CHAT_BODY),
        ("chat", "chat", TOOL_BODY),
        ("chat", "completion", COMPLETION_BODY),
        ("responses", "responses", RESPONSES_BODY),
        ("embeddings", "embeddings", EMBEDDINGS_BODY),
    ],
)
def test_usage_mapping_agrees_with_genai_prices(
    flavor: str, operation: str, body: dict[str, Any]
) -> None:
    # The provider-level extractor: the same mapping extract_usage() uses, without the
    # model lookup that raises for unpriced models.
    provider = next(p for p in genai_data.providers if p.id == "openai")
    _, usage = provider.extract_usage(body, api_flavor=flavor)
    cf = CallFacts()
    oai._fill_from_body(operation, body, cf)
    assert cf.input_tokens == usage.input_tokens
    assert (cf.cache_read_tokens or 0) == (usage.cache_read_tokens or 0)
    assert (cf.output_tokens or 0) == (usage.output_tokens or 0)


def test_chat_tool_calls_non_stream() -> None:
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(200, TOOL_BODY))
    assert cf.finish_reason == "tool_calls"
    assert [(t.tool_call_id, t.tool_name, json.loads(t.arguments)) for t in cf.tool_calls] == [
        ("call_Xq1", "get_weather", {"city": "Paris"}),
        ("call_Xq2", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert json.loads(cf.output_content)[0]["tool_calls"][1]["id"] == "call_Xq2"


def test_legacy_function_call_and_multiple_choices() -> None:
    body = copy.deepcopy(TOOL_BODY)
    legacy = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "lookup", "arguments": '{"q":1}'},
    }
    body["choices"] = [
        {"index": 0, "message": legacy, "logprobs": None, "finish_reason": "function_call"},
        {
            "index": 1,
            "message": {"role": "assistant", "content": "no"},
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 2,
            "message": {"role": "assistant", "content": "no"},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ]
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(200, body))
    assert cf.finish_reason == "function_call,stop"
    assert [(t.tool_call_id, t.tool_name, t.arguments) for t in cf.tool_calls] == [
        ("", "lookup", '{"q":1}')
    ]  # the deprecated format has no call id


def test_responses_non_stream() -> None:
    facts = facts_for("/v1/responses", {"model": "gpt-4.1", "input": "weather?"})
    cf = oai.parse_response(facts, resp(200, RESPONSES_BODY))
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens, cf.reasoning_tokens) == (
        291,
        128,
        523,
        448,
    )
    assert cf.cache_write_tokens == 0  # reported, and part of input_tokens like cached_tokens
    assert cf.provider_request_id == "resp_67ca09c5efe0819096d0511c92b8c890"
    assert (cf.response_model, cf.finish_reason, cf.status) == (
        "gpt-4.1-2025-04-14",
        "completed",
        "ok",
    )
    assert [(t.tool_call_id, t.tool_name) for t in cf.tool_calls] == [
        ("call_unLAR8MvFNptuiZK6K6HCy5k", "get_weather")
    ]
    assert [i["type"] for i in json.loads(cf.output_content)] == [
        "reasoning",
        "message",
        "function_call",
    ]


def test_responses_incomplete_and_failed() -> None:
    facts = facts_for("/v1/responses", {"model": "gpt-4.1", "input": "long essay"})
    incomplete = response_obj(
        status="incomplete",
        usage=RESPONSES_USAGE,
        incomplete_details={"reason": "max_output_tokens"},
    )
    cf = oai.parse_response(facts, resp(200, incomplete))
    assert (cf.finish_reason, cf.status, cf.output_tokens) == ("max_output_tokens", "ok", 523)
    failed = response_obj(status="failed", error={"code": "server_error", "message": "boom"})
    cf = oai.parse_response(facts, resp(200, failed))
    assert (cf.status, cf.error_type, cf.input_tokens) == ("error", "server_error", None)


def test_embeddings() -> None:
    facts = facts_for(
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["The food was delicious", "and the wine"]},
    )
    assert json.loads(facts.input_content) == ["The food was delicious", "and the wine"]
    cf = oai.parse_response(facts, resp(200, EMBEDDINGS_BODY))
    assert (cf.input_tokens, cf.output_tokens, cf.cache_read_tokens) == (8, 0, None)
    assert cf.response_model == "text-embedding-3-small"
    assert cf.provider_request_id == "req_hdr123"  # no id in the body: the header's
    assert cf.output_content == "2 embedding(s) of 3 dimensions"  # never the vectors


def test_legacy_completions() -> None:
    facts = facts_for("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say"})
    cf = oai.parse_response(facts, resp(200, COMPLETION_BODY))
    assert (cf.input_tokens, cf.output_tokens, cf.finish_reason) == (5, 7, "length")
    assert json.loads(cf.output_content) == ["\n\nThis is indeed a test"]


def test_azure_deployment_path() -> None:
    request = req(
        "/openai/deployments/gpt4o-prod/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}]},
        query={"api-version": "2024-10-21"},
        host="contoso.openai.azure.com",
    )
    facts = oai.parse_request(request)
    assert facts is not None
    assert (facts.request_model, facts.extra["deployment"]) == ("gpt4o-prod", "gpt4o-prod")
    body = {
        **copy.deepcopy(CHAT_BODY),
        "model": "gpt-4o-2024-11-20",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    cf = oai.parse_response(facts, resp(200, body, {"apim-request-id": "a-1"}))
    assert cf.response_model == "gpt-4o-2024-11-20"  # the model, from the body
    # Azure's v1 API puts the deployment in `model`; the body wins over the path.
    v1 = facts_for("/openai/v1/chat/completions", {"model": "gpt4o-prod", "messages": []})
    assert v1.request_model == "gpt4o-prod" and "deployment" not in v1.extra


def test_openrouter_cost() -> None:
    body = {
        "id": "gen-1747341532-NWbuS8xXxIr7SA0WB8vT",
        "provider": "OpenAI",
        "model": "openai/gpt-4o-mini",
        "object": "chat.completion",
        "created": 1747341532,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi!",
                    "refusal": None,
                    "reasoning": None,
                },
            }
        ],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 10,
            "total_tokens": 24,
            "cost": 0.0000081,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    facts = facts_for("/api/v1/chat/completions", {"model": "openai/gpt-4o-mini", "messages": []})
    cf = oai.parse_response(facts, resp(200, body))
    assert cf.provider_cost_usd is not None
    assert Decimal(cf.provider_cost_usd) == Decimal("0.0000081")
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens) == (14, 0, 10)


def test_deepseek_cache_hit_tokens() -> None:
    body = {
        **copy.deepcopy(CHAT_BODY),
        "model": "deepseek-chat",
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 9,
            "total_tokens": 129,
            "prompt_cache_hit_tokens": 64,
            "prompt_cache_miss_tokens": 56,
        },
    }
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(200, body))
    assert (cf.input_tokens, cf.cache_read_tokens, cf.reasoning_tokens) == (120, 64, None)


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (
            429,
            {
                "error": {
                    "type": "rate_limit_exceeded",
                    "message": "Slow down",
                    "param": None,
                    "code": None,
                }
            },
            "rate_limit_exceeded",
        ),
        # What OpenAI really sends for a 429: the useful name is in `code`.
        (
            429,
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o on tokens per min (TPM)",
                    "type": "tokens",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            "rate_limit_exceeded",
        ),
        (
            400,
            {
                "error": {
                    "message": "Bad",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                }
            },
            "invalid_request_error",
        ),
        (404, {"error": 'model "llama9" not found'}, "http_404"),  # Ollama's native shape
        (502, b"<html><body>502 Bad Gateway</body></html>", "http_502"),
    ],
)
def test_error_bodies(status: int, body: Any, error_type: str) -> None:
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(status, body))
    assert (cf.status, cf.error_type) == ("error", error_type)
    assert (cf.input_tokens, cf.output_tokens) == (None, None)
    assert cf.provider_request_id == "req_hdr123"
    if isinstance(body, bytes):
        assert cf.body_note == "error body is not JSON"


def test_error_message_is_kept() -> None:
    body = {
        "error": {
            "message": "Rate limit reached",
            "type": "tokens",
            "code": "rate_limit_exceeded",
            "param": None,
        }
    }
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(429, body))
    assert cf.output_content == "Rate limit reached"


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json at all", b'{"id": "chatcmpl-1", "cho', b"[1, 2, 3]", b"\xff\xfe\x00garbage"],
)
def test_garbage_body_never_raises(raw: bytes) -> None:
    cf = oai.parse_response(facts_for(CHAT_PATH, CHAT_REQUEST), resp(200, raw))
    assert cf.body_note and cf.input_tokens is None and cf.status == "ok"


def test_wrong_types_anywhere_never_raise() -> None:
    """Replace each value of each fixture, one at a time, with values of the wrong type."""
    cases = [
        ("chat", CHAT_BODY),
        ("chat", TOOL_BODY),
        ("responses", RESPONSES_BODY),
        ("embeddings", EMBEDDINGS_BODY),
        ("completion", COMPLETION_BODY),
    ]

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        keys = node.keys() if isinstance(node, dict) else range(len(node))
        out = []
        for k in keys:
            out.append((*prefix, k))
            if isinstance(node[k], dict | list):
                out.extend(paths(node[k], (*prefix, k)))
        return out

    def mutations(body: Any) -> Any:
        for path in paths(body):
            for bad in (None, "x", 7, -1, True, [], {}, [None], 1.5):
                mutated = copy.deepcopy(body)
                node = mutated
                for k in path[:-1]:
                    node = node[k]
                node[path[-1]] = bad
                yield mutated

    for operation, body in cases:
        for mutated in mutations(body):
            cf = CallFacts()
            oai._fill_from_body(operation, mutated, cf)
    # Each event of a stream, mutated, among the intact others.
    streams = [("chat", TOOL_STREAM), ("responses", RESPONSES_STREAM)]
    for operation, events in streams:
        for n, event in enumerate(events):
            for mutated in mutations(event):
                tap = oai.StreamTap(RequestFacts("openai", operation, "m", True))
                for e in [*events[:n], mutated, *events[n + 1 :]]:
                    tap.feed(b"data: " + json.dumps(e).encode() + b"\n\n")
                assert isinstance(tap.finish(ResponseView(200, {}, b"")), CallFacts)


# --- streams ---------------------------------------------------------------------------

STREAM_REQUEST = {**CHAT_REQUEST, "stream": True, "stream_options": {"include_usage": True}}


def test_streamed_tool_calls_one_byte_at_a_time() -> None:
    body = sse(*TOOL_STREAM).replace(b"\n", b"\r\n")  # CRLF, split inside every CR LF pair
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), body, chunk_size=1)
    assert [(t.tool_call_id, t.tool_name, json.loads(t.arguments)) for t in cf.tool_calls] == [
        ("call_A1", "get_weather", {"city": "Zürich"}),  # "ü" split across feeds
        ("call_B2", "get_time", {"tz": "CET"}),
    ]
    assert (cf.finish_reason, cf.status, cf.provider_request_id) == (
        "tool_calls",
        "ok",
        "chatcmpl-stream1",
    )
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens) == (95, 64, 24)
    message = json.loads(cf.output_content)[0]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Zürich"}'


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 13, 64, 1000, 1 << 20])
def test_stream_result_does_not_depend_on_chunking(chunk_size: int) -> None:
    facts = facts_for(CHAT_PATH, STREAM_REQUEST)
    body = sse(*TOOL_STREAM)
    assert run_tap(facts, body, chunk_size) == run_tap(facts, body, len(body))


def test_include_usage_stream() -> None:
    usage_chunk = chunk(None, usage=STREAM_USAGE)  # the last chunk: choices []
    assert usage_chunk["choices"] == []
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), sse(*TEXT_STREAM, usage_chunk), 5)
    assert json.loads(cf.output_content) == [{"role": "assistant", "content": "Hello, wörld!"}]
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens, cf.reasoning_tokens) == (
        95,
        64,
        24,
        0,
    )
    assert (cf.finish_reason, cf.response_model, cf.body_note) == (
        "stop",
        "gpt-4.1-mini-2025-04-14",
        "",
    )


def test_stream_without_usage() -> None:
    facts = facts_for(CHAT_PATH, {**CHAT_REQUEST, "stream": True})
    assert facts.extra["include_usage"] == "false"
    cf = run_tap(facts, sse(*TEXT_STREAM))
    assert cf.status == "ok" and cf.finish_reason == "stop"
    assert (cf.input_tokens, cf.output_tokens, cf.cache_read_tokens) == (None, None, None)
    assert cf.body_note == "stream carried no usage (stream_options.include_usage not set)"


def test_interrupted_stream() -> None:
    # The connection drops mid-answer, even mid-event: no finish_reason, no [DONE].
    body = sse(*TEXT_STREAM[:3], done=False) + b'data: {"id":"chatcmpl-stream1","obj'
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), body, 10)
    assert (cf.status, cf.error_type) == ("error", "interrupted")
    assert (cf.input_tokens, cf.output_tokens) == (None, None)  # never invented
    assert json.loads(cf.output_content)[0]["content"] == "Hello, wörld"  # what did arrive


def test_stream_cut_after_finish_before_usage() -> None:
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), sse(*TEXT_STREAM, done=False))
    assert cf.status == "ok" and cf.input_tokens is None
    assert cf.body_note == "stream ended before its usage chunk"


def test_stream_answer_is_capped() -> None:
    pieces = [chunk({"content": "y" * 1000}) for _ in range(100)]
    tap = oai.StreamTap(facts_for(CHAT_PATH, STREAM_REQUEST))
    tap.feed(sse(*pieces, chunk({}, "length")))
    kept = tap._stream.fields[0]["content"]  # type: ignore[union-attr]
    assert str(kept).endswith("…[truncated]")  # the tap stopped keeping text at 64 KiB
    assert len(str(kept)) == oai.MAX_CONTENT_BYTES + len("…[truncated]")
    cf = tap.finish(ResponseView(200, {}, b""))
    # The JSON around it pushes output_content over the cap, so it is cut like any content.
    assert cf.output_content.startswith('[{"role":"assistant","content":"yyy')
    kept_json, marker, _ = cf.output_content.partition("…[truncated ")
    assert marker and len(kept_json.encode()) == oai.MAX_CONTENT_BYTES


def test_stream_error_status_with_json_body() -> None:
    # A streamed request refused up front: the body is one JSON error, not SSE.
    body = json.dumps(
        {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    ).encode()
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), body, 3, status=429)
    assert (cf.status, cf.error_type, cf.input_tokens) == ("error", "rate_limit_exceeded", None)


def test_server_ignoring_stream_flag_is_parsed_as_a_body() -> None:
    cf = run_tap(facts_for(CHAT_PATH, STREAM_REQUEST), json.dumps(CHAT_BODY).encode(), 100)
    assert (cf.input_tokens, cf.output_tokens, cf.finish_reason) == (2006, 300, "stop")


def test_buffered_stream_is_replayed_through_the_tap() -> None:
    # The addon buffers a stream it did not recognize as one (e.g. no event-stream type).
    facts = facts_for(CHAT_PATH, STREAM_REQUEST)
    body = sse(*TOOL_STREAM)
    assert oai.parse_response(facts, resp(200, body)) == run_tap(facts, body)
    cf = oai.parse_response(facts, resp(200, b'data: {"cut'))  # never loops back
    assert cf.body_note == "response body is not JSON or is truncated"


def test_openrouter_mid_stream_error_and_keepalive_comments() -> None:
    error_chunk = {
        **chunk({"content": ""}, finish="error"),
        "error": {"code": 502, "message": "Provider disconnected"},
    }
    body = b": OPENROUTER PROCESSING\n\n" + sse(TEXT_STREAM[1], error_chunk)
    cf = run_tap(facts_for("/api/v1/chat/completions", STREAM_REQUEST), body)
    assert (cf.status, cf.error_type, cf.finish_reason) == ("error", "stream_error", "error")


def test_azure_stream_with_content_filter_chunk() -> None:
    filter_chunk = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    facts = oai.parse_request(
        req(
            "/openai/deployments/prod/chat/completions",
            {"messages": [], "stream": True},
            query={"api-version": "2024-10-21"},
        )
    )
    assert facts is not None
    cf = run_tap(facts, sse(filter_chunk, *TEXT_STREAM))
    assert (cf.provider_request_id, cf.response_model) == (
        "chatcmpl-stream1",
        "gpt-4.1-mini-2025-04-14",
    )


def test_groq_usage_in_x_groq() -> None:
    last = {
        **chunk({}, finish="stop"),
        "x_groq": {
            "id": "req_01",
            "usage": {"prompt_tokens": 18, "completion_tokens": 6, "total_tokens": 24},
        },
    }
    facts = facts_for("/openai/v1/chat/completions", {**CHAT_REQUEST, "stream": True})
    cf = run_tap(facts, sse(*TEXT_STREAM[:-1], last))
    assert (cf.input_tokens, cf.output_tokens, cf.body_note) == (18, 6, "")


def test_legacy_completions_stream() -> None:
    def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-7iA7i",
            "object": "text_completion",
            "created": 1690759702,
            "model": "gpt-3.5-turbo-instruct",
            "system_fingerprint": None,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }

    usage = {
        **text_chunk(""),
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    facts = facts_for(
        "/v1/completions",
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "Say",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    cf = run_tap(facts, sse(text_chunk("This"), text_chunk(" is", "length"), usage), 9)
    assert json.loads(cf.output_content) == ["This is"]
    assert (cf.input_tokens, cf.output_tokens, cf.finish_reason) == (5, 2, "length")


def test_responses_stream_with_function_call() -> None:
    facts = facts_for("/v1/responses", {"model": "gpt-4.1", "input": "weather?", "stream": True})
    cf = run_tap(facts, responses_sse(*RESPONSES_STREAM), chunk_size=1)
    assert (cf.input_tokens, cf.cache_read_tokens, cf.output_tokens, cf.reasoning_tokens) == (
        291,
        128,
        523,
        448,
    )
    assert (cf.status, cf.finish_reason) == ("ok", "completed")
    assert cf.provider_request_id == "resp_67ca09c5efe0819096d0511c92b8c890"
    assert [(t.tool_call_id, t.tool_name, t.arguments) for t in cf.tool_calls] == [
        ("call_unLAR8MvFNptuiZK6K6HCy5k", "get_weather", '{"location":"Paris, France"}')
    ]


def test_responses_stream_interrupted() -> None:
    facts = facts_for("/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True})
    text = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "delta": "Par",
        "logprobs": [],
    }
    cf = run_tap(facts, responses_sse(*RESPONSES_STREAM[:5], text))
    assert (cf.status, cf.error_type, cf.input_tokens) == ("error", "interrupted", None)
    assert cf.response_model == "gpt-4.1-2025-04-14"
    assert [(t.tool_name, t.arguments) for t in cf.tool_calls] == [
        ("get_weather", '{"location":"Paris, France"}')
    ]
    items = json.loads(cf.output_content)
    assert items[0]["content"][0]["text"] == "Par"


def test_responses_stream_error_and_failed() -> None:
    facts = facts_for("/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True})
    error = {
        "type": "error",
        "code": "ERR_SOMETHING",
        "message": "Something went wrong",
        "param": None,
        "sequence_number": 1,
    }
    cf = run_tap(facts, responses_sse(RESPONSES_STREAM[0], error))
    assert (cf.status, cf.error_type) == ("error", "ERR_SOMETHING")
    failed = {
        "type": "response.failed",
        "sequence_number": 2,
        "response": response_obj(
            status="failed", error={"code": "server_error", "message": "The model failed"}
        ),
    }
    cf = run_tap(facts, responses_sse(RESPONSES_STREAM[0], failed))
    assert (cf.status, cf.error_type, cf.input_tokens) == ("error", "server_error", None)


# --- the SSE decoder -------------------------------------------------------------------


def decode(body: bytes, chunk_size: int = 1, **kwargs: Any) -> tuple[list[SseEvent], SseDecoder]:
    decoder = SseDecoder(**kwargs)
    events: list[SseEvent] = []
    for i in range(0, len(body), chunk_size):
        events += decoder.feed(body[i : i + chunk_size])
    return events + decoder.flush(), decoder


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 100])
def test_sse_line_endings_fields_and_comments(eol: bytes, chunk_size: int) -> None:
    body = eol.join(
        [
            b"\xef\xbb\xbf: keep-alive comment",
            b"",
            b"event: response.created",
            b"id: 7",
            b'data: {"a":',
            b"data:1}",
            b"retry: 10",
            b"",
            b"data",
            b"",
            b"event: ignored-no-data",
            b"",
            b"data:  two spaces",
            b"",
            b"",
        ]
    )
    events, decoder = decode(body, chunk_size)
    assert events == [
        SseEvent("response.created", '{"a":\n1}', "7"),
        SseEvent("message", "", "7"),
        SseEvent("message", " two spaces", "7"),
    ]
    assert decoder.dropped_events == 0


def test_sse_oversized_event_is_dropped_and_counted() -> None:
    huge = b"data: " + b"x" * 5000 + b"\n\n"
    many_lines = b"data: 123456789\n" * 100 + b"\n"
    body = b"data: first\n\n" + huge + many_lines + b"data: last\n\n"
    for size in (1, 37, len(body)):
        events, decoder = decode(body, size, max_event_bytes=1000)
        assert [e.data for e in events] == ["first", "last"]
        assert decoder.dropped_events == 2


def test_sse_flush_keeps_complete_lines_only() -> None:
    events, _ = decode(b'data: {"usage": 1}\n', 3)  # server closed without the blank line
    assert [e.data for e in events] == ['{"usage": 1}']
    events, _ = decode(b'data: {"usage": 1}\n\ndata: {"cut', 3)
    assert [e.data for e in events] == ['{"usage": 1}']


def test_sse_buffer_stays_bounded_on_a_line_without_end() -> None:
    decoder = SseDecoder(max_event_bytes=1000)
    for _ in range(100):
        decoder.feed(b"y" * 500)
    assert len(decoder._buf) <= 1000 and decoder.dropped_events == 1

"""The simulated provider speaks each wire format well enough for the real SDKs.

The point of the simulator is that other tests can trust it as a stand-in for the
real APIs, so these tests drive it with the real ``openai``/``anthropic`` SDKs
(which validate shapes and implement retries) and with raw HTTP for Gemini and
Bedrock, and check the usage it reports against what it recorded.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from demo.simulator import (
    Outage,
    RunningSimulator,
    SimulatorConfig,
    make_test_certificate,
    start_simulator,
)

ROOT = Path(__file__).resolve().parent.parent

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSimulator]:
    with start_simulator(config=SimulatorConfig(azure_deployments={"prod-chat": "gpt-4o"})) as sim:
        yield sim


@pytest.fixture
def sim(server: RunningSimulator) -> RunningSimulator:
    server.clear_requests()
    return server


@pytest.fixture
def oai(sim: RunningSimulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=2)


@pytest.fixture
def claude(sim: RunningSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-test", max_retries=2)


def sse_data(body: str) -> list[str]:
    """The data fields of an SSE body (either line ending)."""
    events = body.replace("\r\n", "\n").split("\n\n")
    return [line[6:] for event in events for line in event.split("\n") if line.startswith("data: ")]


def decode_event_stream(data: bytes) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """A minimal AWS event-stream decoder, independent of proxy_addon's, checking CRCs."""
    out = []
    pos = 0
    while pos < len(data):
        total, headers_len, prelude_crc = struct.unpack_from(">III", data, pos)
        assert zlib.crc32(data[pos : pos + 8]) == prelude_crc
        message = data[pos : pos + total]
        assert zlib.crc32(message[:-4]) == struct.unpack(">I", message[-4:])[0]
        headers: dict[str, str] = {}
        hpos = 12
        while hpos < 12 + headers_len:
            name_len = message[hpos]
            name = message[hpos + 1 : hpos + 1 + name_len].decode()
            hpos += 1 + name_len
            assert message[hpos] == 7  # string
            (value_len,) = struct.unpack_from(">H", message, hpos + 1)
            headers[name] = message[hpos + 3 : hpos + 3 + value_len].decode()
            hpos += 3 + value_len
        out.append((headers, json.loads(message[12 + headers_len : -4])))
        pos += total
    return out


# ---------------------------------------------------------------- OpenAI


def test_openai_chat_non_stream_usage_and_headers(sim: RunningSimulator, oai: openai.OpenAI):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        extra_headers={"x-sim-cached-tokens": "4"},
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].finish_reason == "stop"
    assert "capital of France" in completion.choices[0].message.content
    usage = completion.usage
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (record,) = sim.requests
    assert record.path == "/v1/chat/completions" and record.status == 200
    assert record.json()["model"] == "gpt-4o-mini"
    assert record.usage == {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": 4,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }

    # Forced counts make the numbers known in advance; o-models report reasoning.
    forced = oai.chat.completions.create(
        model="o3-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "x-sim-prompt-tokens": "2000",
            "x-sim-output-tokens": "25",
            "x-sim-reasoning-tokens": "40",
        },
    )
    assert forced.usage.prompt_tokens == 2000
    assert forced.usage.prompt_tokens_details.cached_tokens == 896  # implicit: half, down to 128s
    assert forced.usage.completion_tokens == 65
    assert forced.usage.completion_tokens_details.reasoning_tokens == 40
    assert len(forced.choices[0].message.content) == 100  # 25 tokens * 4 characters


def test_openai_chat_stream_with_tools_and_usage(sim: RunningSimulator, oai: openai.OpenAI):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert all(tc.id is None and tc.function.name is None for tc in calls[1:])
    assert len(calls) >= 3  # the arguments arrive in several fragments
    arguments = json.loads("".join(tc.function.arguments for tc in calls))
    assert arguments == {"city": "simulated city", "days": 1}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert sim.requests[-1].usage["output_tokens"] == last.usage.completion_tokens

    # After the tool result the model answers in text.
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(arguments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21C"},
    ]
    with oai.chat.completions.stream(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]) as s:
        final = s.get_final_completion()
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content.startswith("The tool returned a result.")
    # Without include_usage the stream carries no usage, and the record says so.
    assert final.usage is None
    assert sim.requests[-1].usage is None and sim.requests[-1].planned_usage is not None


def test_openai_responses_non_stream_tool_round_trip(sim: RunningSimulator, oai: openai.OpenAI):
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "strict": False,
    }
    first = oai.responses.create(model="gpt-4.1", input="Find the docs", tools=[tool])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"q": "simulated q"}
    second = oai.responses.create(
        model="gpt-4.1",
        input=[
            {"role": "user", "content": "Find the docs"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "lookup",
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "found 3 pages"},
        ],
        tools=[tool],
    )
    assert second.status == "completed"
    assert "found 3 pages" in second.output_text
    assert second.usage.input_tokens == sim.requests[-1].usage["input_tokens"]
    assert second.usage.input_tokens_details.cached_tokens == 0


def test_openai_responses_stream(sim: RunningSimulator, oai: openai.OpenAI):
    with oai.responses.stream(
        model="o4-mini", input="Say hello", extra_headers={"x-sim-cached-tokens": "3"}
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
    ):
        assert expected in types
    assert final.output_text.startswith("Simulated answer from o4-mini.")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    usage = final.usage
    assert usage.input_tokens_details.cached_tokens == 3
    assert usage.output_tokens_details.reasoning_tokens > 0
    assert sim.requests[-1].usage == {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": 3,
        "cache_write_tokens": 0,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
    }

    # A function call streams its arguments as deltas, then a done event.
    events = list(
        oai.responses.create(
            model="gpt-4.1",
            input="call it",
            tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}],
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.name == "f" and done.arguments == "{}"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_embeddings_base64_default_and_float(sim: RunningSimulator, oai: openai.OpenAI):
    result = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    # The SDK asks for base64 and decodes it; the simulator must have sent base64.
    assert sim.requests[-1].json()["encoding_format"] == "base64"
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    assert math.isclose(sum(v * v for v in result.data[0].embedding), 1.0, rel_tol=1e-3)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 1 + 2
    floats = httpx.post(
        f"{sim.url}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "alpha", "dimensions": 8},
    ).json()
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 8 and all(isinstance(v, float) for v in vector)
    assert sim.requests[-1].usage["input_tokens"] == floats["usage"]["prompt_tokens"]


def test_openai_legacy_completions_and_azure(sim: RunningSimulator):
    legacy = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test").completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=5
    )
    assert legacy.object == "text_completion"
    assert legacy.choices[0].finish_reason == "length" and legacy.usage.completion_tokens == 5

    azure = openai.AzureOpenAI(
        azure_endpoint=sim.url, api_key="azure-key", api_version="2024-10-21"
    )
    completion = azure.chat.completions.create(
        model="prod-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.model == "gpt-4o"  # the deployment's model, not its name
    record = sim.requests[-1]
    assert record.path == "/openai/deployments/prod-chat/chat/completions"
    assert record.query["api-version"] == "2024-10-21" and record.provider == "azure"
    # Azure streams open with a chunk that has no choices and no model.
    chunks = list(
        azure.chat.completions.create(
            model="prod-chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks[0].choices == [] and chunks[0].model == ""
    assert chunks[1].model == "gpt-4o"


# ---------------------------------------------------------------- Anthropic


def test_anthropic_messages_non_stream_cache_counts(
    sim: RunningSimulator, claude: anthropic.Anthropic
):
    raw = claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
        extra_headers={"x-sim-cache-read": "1000", "x-sim-cache-write": "50"},
    )
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1000, 50)
    # Anthropic's input_tokens excludes the cache; the record keeps the whole prompt.
    record = sim.requests[-1]
    assert record.json()["system"] == "Be brief."
    assert record.usage["input_tokens"] == usage.input_tokens + 1000 + 50
    assert record.usage["output_tokens"] == usage.output_tokens


def test_anthropic_stream_tool_use_round_trip(sim: RunningSimulator, claude: anthropic.Anthropic):
    tools = [
        {
            "name": "search",
            "description": "Search the web",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        }
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Look up Tokentrail"}]
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=500, messages=messages, tools=tools
    ) as stream:
        event_types = [event.type for event in stream]
        final = stream.get_final_message()
    assert event_types[0] == "message_start" and "message_stop" in event_types
    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use" and tool_use.input == {"query": "simulated query"}
    assert final.usage.output_tokens == sim.requests[-1].usage["output_tokens"]

    raw_events = [
        json.loads(d)
        for d in sse_data(
            httpx.post(
                f"{sim.url}/v1/messages",
                json={
                    "model": "claude-haiku-4-5",
                    "max_tokens": 500,
                    "messages": messages,
                    "tools": tools,
                    "stream": True,
                },
                headers={"x-sim-cache-read": "7"},
            ).text
        )
    ]
    assert raw_events[1] == {"type": "ping"}
    assert raw_events[0]["message"]["usage"]["cache_read_input_tokens"] == 7
    fragments = [
        e["delta"]["partial_json"]
        for e in raw_events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert len(fragments) >= 3 and json.loads("".join(fragments)) == {"query": "simulated query"}
    delta = next(e for e in raw_events if e["type"] == "message_delta")
    assert delta["usage"]["cache_read_input_tokens"] == 7  # cumulative, as the API sends

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool_use.id, "content": "Tokentrail is..."}
            ],
        },
    ]
    answer = claude.messages.create(
        model="claude-haiku-4-5", max_tokens=500, messages=messages, tools=tools
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


# ---------------------------------------------------------------- Gemini and Bedrock


def test_gemini_stream_sse_and_function_call(sim: RunningSimulator):
    url = f"{sim.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    response = httpx.post(
        url,
        json={"contents": [{"role": "user", "parts": [{"text": "Tell me a story"}]}]},
        headers={"x-goog-api-key": "key", "x-sim-cached-tokens": "2"},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(d) for d in sse_data(response.text)]
    assert len(chunks) > 2 and len({c["responseId"] for c in chunks}) == 1
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text.startswith("Simulated answer from gemini-2.5-flash.")
    meta = chunks[-1]["usageMetadata"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert meta["cachedContentTokenCount"] == 2 and meta["thoughtsTokenCount"] > 0
    assert meta["totalTokenCount"] == (
        meta["promptTokenCount"] + meta["candidatesTokenCount"] + meta["thoughtsTokenCount"]
    )
    assert sim.requests[-1].usage == {
        "input_tokens": meta["promptTokenCount"],
        "output_tokens": meta["candidatesTokenCount"] + meta["thoughtsTokenCount"],
        "cache_read_tokens": 2,
        "cache_write_tokens": 0,
        "reasoning_tokens": meta["thoughtsTokenCount"],
    }

    body = {
        "contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                        },
                    }
                ]
            }
        ],
    }
    result = httpx.post(f"{sim.url}/v1beta/models/gemini-2.0-flash:generateContent", json=body)
    part = result.json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "simulated city"}}}
    assert "thoughtsTokenCount" not in result.json()["usageMetadata"]


def test_bedrock_converse_and_event_stream(sim: RunningSimulator):
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    body = {
        "messages": [{"role": "user", "content": [{"text": "Hi there"}]}],
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "calc",
                        "inputSchema": {
                            "json": {"type": "object", "properties": {"x": {"type": "number"}}}
                        },
                    }
                }
            ]
        },
    }
    plain = httpx.post(f"{sim.url}/model/{model}/converse", json=body)
    assert plain.headers["x-amzn-requestid"]
    result = plain.json()
    assert result["stopReason"] == "tool_use"
    assert result["output"]["message"]["content"][-1]["toolUse"]["input"] == {"x": 1.5}

    streamed = httpx.post(
        f"{sim.url}/model/{model}/converse-stream",
        json=body,
        headers={"x-sim-cache-read": "10", "x-sim-cache-write": "5"},
    )
    assert streamed.headers["content-type"] == "application/vnd.amazon.eventstream"
    events = decode_event_stream(streamed.content)
    names = [headers[":event-type"] for headers, _ in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    assert all(h[":message-type"] == "event" for h, _ in events)
    start = next(p for h, p in events if h[":event-type"] == "contentBlockStart")
    assert start["start"]["toolUse"]["name"] == "calc"
    fragments = [
        p["delta"]["toolUse"]["input"]
        for h, p in events
        if h[":event-type"] == "contentBlockDelta" and "toolUse" in p["delta"]
    ]
    assert len(fragments) >= 2 and json.loads("".join(fragments)) == {"x": 1.5}
    usage = events[-1][1]["usage"]
    assert events[-1][1]["metrics"]["latencyMs"] >= 1
    assert usage["cacheReadInputTokens"] == 10 and usage["cacheWriteInputTokens"] == 5
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] + 15
    assert sim.requests[-1].usage["input_tokens"] == usage["inputTokens"] + 15


# ---------------------------------------------------------------- transport, failures


def test_https_with_generated_certificate(tmp_path: Path):
    certfile, keyfile, ca_file = make_test_certificate(tmp_path)
    with start_simulator(certfile=certfile, keyfile=keyfile) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=ca_file)
        with httpx.Client(verify=context) as client:
            reply = client.post(
                f"{sim.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tls"}]},
            )
            assert reply.status_code == 200 and reply.json()["object"] == "chat.completion"
            # The SDK works over it too, given the same trust.
            sdk = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", http_client=client)
            assert sdk.embeddings.create(model="text-embedding-3-small", input="x").data
        with pytest.raises(httpx.ConnectError):  # an untrusted CA is refused
            httpx.post(f"{sim.url}/v1/chat/completions", json={})


def test_sdk_retries_injected_429(sim: RunningSimulator, oai: openai.OpenAI):
    started = time.monotonic()
    completion = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "retry me"}],
        extra_headers={"x-sim-fail": "429", "x-sim-fail-attempts": "1"},
    )
    assert completion.choices[0].message.content
    assert time.monotonic() - started < 2  # retry-after-ms: 10 was honored
    first, second = sim.requests
    assert (first.status, second.status) == (429, 200)
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    assert first.usage is None and second.usage is not None

    # The Anthropic SDK retries on the same signals.
    sim.clear_requests()
    claude = anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=3)
    message = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-sim-fail": "529", "x-sim-fail-attempts": "2"},
    )
    assert message.content and [r.status for r in sim.requests] == [529, 529, 200]


def test_sdk_gives_up_on_500_and_error_shapes(sim: RunningSimulator):
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "fail"}],
            extra_headers={"x-sim-fail-always": "500"},
        )
    assert info.value.status_code == 500
    assert info.value.body["type"] == "server_error"
    assert len(sim.requests) == 1

    with pytest.raises(anthropic.RateLimitError) as rate:
        anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0).messages.create(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-sim-fail-always": "429"},
        )
    assert rate.value.body["error"]["type"] == "rate_limit_error"
    assert rate.value.response.headers["retry-after-ms"] == "10"

    gemini = httpx.post(
        f"{sim.url}/v1beta/models/gemini-2.0-flash:generateContent",
        json={"contents": [{"parts": [{"text": "x"}]}]},
        headers={"x-sim-fail": "429"},
    )
    assert gemini.status_code == 429
    assert gemini.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    bedrock = httpx.post(
        f"{sim.url}/model/amazon.nova-lite-v1:0/converse",
        json={"messages": [{"role": "user", "content": [{"text": "x"}]}]},
        headers={"x-sim-fail": "429"},
    )
    assert bedrock.headers["x-amzn-errortype"] == "ThrottlingException"
    assert "message" in bedrock.json()

    # Without SDK retry counters, a key lets the simulator count the attempts itself.
    headers = {"x-sim-fail": "503", "x-sim-fail-attempts": "2", "x-sim-fail-key": "job-1"}
    body = {"messages": [{"role": "user", "content": [{"text": "x"}]}]}
    statuses = [
        httpx.post(f"{sim.url}/model/m/converse", json=body, headers=headers).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]


def test_interrupted_streams(sim: RunningSimulator, oai: openai.OpenAI, caplog):
    caplog.set_level(logging.INFO)
    seen: list[Any] = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for chunk in oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a long story please"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-interrupt-after": "3"},
        ):
            seen.append(chunk)
    assert len(seen) == 3 and all(c.usage is None for c in seen)
    record = sim.requests[-1]
    assert record.interrupted and record.events_sent == 3 and record.usage is None
    # The deliberate cut is not logged as a server error.
    assert not [r for r in caplog.records if "without completing" in r.getMessage()]

    # eof mode: a clean but early end of the body (no [DONE], no usage).
    response = httpx.post(
        f"{sim.url}/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-sim-interrupt-after": "4", "x-sim-interrupt-mode": "eof"},
    )
    events = [json.loads(d)["type"] for d in sse_data(response.text)]
    assert events == ["message_start", "ping", "content_block_start", "content_block_delta"]


def test_realism_config_outage_and_seeded_bursts():
    config = SimulatorConfig(outages=[Outage("gemini", 0, 3600)])
    with start_simulator(config=config) as sim:
        gemini = httpx.post(
            f"{sim.url}/v1beta/models/gemini-2.0-flash:generateContent",
            json={"contents": [{"parts": [{"text": "x"}]}]},
        )
        assert gemini.status_code == 503 and gemini.json()["error"]["status"] == "UNAVAILABLE"
        other = httpx.post(f"{sim.url}/v1/embeddings", json={"model": "m", "input": "x"})
        assert other.status_code == 200

    def statuses(seed: int) -> list[int]:
        burst = SimulatorConfig(seed=seed, rate_limit_burst_probability=0.3)
        with start_simulator(config=burst) as sim:
            return [
                httpx.post(
                    f"{sim.url}/v1/embeddings", json={"model": "m", "input": "x"}
                ).status_code
                for _ in range(20)
            ]

    first = statuses(7)
    assert first == statuses(7) and 429 in first and 200 in first


def test_standalone_command_serves(tmp_path: Path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.simulator", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)

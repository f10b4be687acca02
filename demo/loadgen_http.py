"""The load generator's light clients' shared part: the same OpenAI and Anthropic
requests the SDKs send, and the same checks of their answers; plus the httpx
client that uses them (``client="http"``). The raw client (``client="raw"``,
demo/loadgen_raw.py) sends and checks the same things with less CPU.

Why: the SDKs cost about 7 ms of CPU a call (pydantic models, retries,
per-chunk objects), as much as the proxy under test; at hundreds of calls/s on
a 2-core machine the generator would measure itself. These clients send the
same bodies and headers on keep-alive connections, read every SSE event, and
check what the SDK path checks (an id, the usage chunk, ``message_stop``).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

ANTHROPIC_VERSION = "2023-06-01"


class CallFailed(Exception):
    """The answer was not a complete, successful model response."""


def _checked(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise CallFailed(f"HTTP {response.status_code}")


def _events(line: str) -> Any:
    """The JSON of an SSE ``data:`` line, or None for other lines and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return None if data == "[DONE]" else orjson.loads(data)


# ------------------------------------------------ requests and checks (both clients)


def openai_request(
    model: str, prompt: str, headers: dict[str, str], stream: bool
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one chat completion, as the openai SDK sends it."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    head = {
        "authorization": "Bearer sk-loadgen-openai",
        "content-type": "application/json",
        **headers,
    }
    return "/v1/chat/completions", orjson.dumps(body), head


def anthropic_request(
    model: str, prompt: str, headers: dict[str, str], stream: bool
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one Messages call, as the anthropic SDK sends it."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        body["stream"] = True
    head = {
        "x-api-key": "sk-ant-loadgen",
        "anthropic-version": ANTHROPIC_VERSION,
        "content-type": "application/json",
        **headers,
    }
    return "/v1/messages", orjson.dumps(body), head


def openai_answer(completion: Any) -> tuple[str, int]:
    """(id, characters) of a whole chat completion; it must carry usage."""
    if not completion.get("usage"):
        raise CallFailed("no usage in the completion")
    return completion["id"], len(completion["choices"][0]["message"].get("content") or "")


def anthropic_answer(message: Any) -> tuple[str, int]:
    """(id, characters) of a whole Messages answer."""
    return message["id"], sum(len(b.get("text", "")) for b in message["content"])


class OpenAIStream:
    """Reads a chat completion's chunks: the id, the text, and the usage chunk."""

    def __init__(self) -> None:
        self.response_id = ""
        self.received = 0
        self.usage: Any = None

    def event(self, chunk: Any) -> None:
        self.response_id = self.response_id or chunk.get("id", "")
        if chunk.get("choices"):
            self.received += len(chunk["choices"][0].get("delta", {}).get("content") or "")
        self.usage = chunk.get("usage") or self.usage

    def result(self) -> tuple[str, int]:
        if self.usage is None:
            raise CallFailed("stream ended without its usage chunk")
        return self.response_id, self.received


class AnthropicStream:
    """Reads a Messages stream's events: the id, the text, and ``message_stop``."""

    def __init__(self) -> None:
        self.response_id = ""
        self.received = 0
        self.stopped = False

    def event(self, event: Any) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.response_id = event["message"]["id"]
        elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            self.received += len(event["delta"]["text"])
        elif kind == "message_stop":
            self.stopped = True

    def result(self) -> tuple[str, int]:
        if not self.stopped:
            raise CallFailed("stream ended without message_stop")
        return self.response_id, self.received


# ------------------------------------------------ the httpx client


async def _send(
    http: httpx.AsyncClient,
    base_url: str,
    request: tuple[str, bytes, dict[str, str]],
    stream: OpenAIStream | AnthropicStream | None,
) -> httpx.Response:
    path, body, headers = request
    built = http.build_request("POST", base_url + path, content=body, headers=headers)
    response = await http.send(built, stream=stream is not None)
    if stream is None:
        _checked(response)
        return response
    try:
        _checked(response)
        async for line in response.aiter_lines():
            event = _events(line)
            if event is not None:
                stream.event(event)
    finally:
        await response.aclose()
    return response


async def openai_chat(
    http: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt: str,
    headers: dict[str, str],
    stream: bool,
) -> tuple[str, int]:
    """(response id, characters received) of one chat completion."""
    request = openai_request(model, prompt, headers, stream)
    if not stream:
        return openai_answer((await _send(http, base_url, request, None)).json())
    reader = OpenAIStream()
    await _send(http, base_url, request, reader)
    return reader.result()


async def anthropic_messages(
    http: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt: str,
    headers: dict[str, str],
    stream: bool,
) -> tuple[str, int]:
    """(message id, characters received) of one Messages call."""
    request = anthropic_request(model, prompt, headers, stream)
    if not stream:
        return anthropic_answer((await _send(http, base_url, request, None)).json())
    reader = AnthropicStream()
    await _send(http, base_url, request, reader)
    return reader.result()

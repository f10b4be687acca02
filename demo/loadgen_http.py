"""The load generator's light client: the same OpenAI and Anthropic requests the
SDKs send, written and read with plain httpx.

Why: the SDKs cost about 7 ms of CPU a call (pydantic models, retries,
per-chunk objects), as much as the proxy under test; at hundreds of calls/s on
a 2-core machine the generator would measure itself. This client sends the
same bodies and headers on keep-alive connections, reads every SSE event, and
checks what the SDK path checks (an id, the usage chunk, ``message_stop``).
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


async def openai_chat(
    http: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt: str,
    headers: dict[str, str],
    stream: bool,
) -> tuple[str, int]:
    """(response id, characters received) of one chat completion."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    request = http.build_request(
        "POST",
        f"{base_url}/v1/chat/completions",
        content=orjson.dumps(body),
        headers={
            "authorization": "Bearer sk-loadgen-openai",
            "content-type": "application/json",
            **headers,
        },
    )
    response = await http.send(request, stream=stream)
    if not stream:
        _checked(response)
        completion = response.json()
        if not completion.get("usage"):
            raise CallFailed("no usage in the completion")
        return completion["id"], len(completion["choices"][0]["message"].get("content") or "")
    try:
        _checked(response)
        response_id, received, usage = "", 0, None
        async for line in response.aiter_lines():
            chunk = _events(line)
            if chunk is None:
                continue
            response_id = response_id or chunk.get("id", "")
            if chunk.get("choices"):
                received += len(chunk["choices"][0].get("delta", {}).get("content") or "")
            usage = chunk.get("usage") or usage
    finally:
        await response.aclose()
    if usage is None:
        raise CallFailed("stream ended without its usage chunk")
    return response_id, received


async def anthropic_messages(
    http: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt: str,
    headers: dict[str, str],
    stream: bool,
) -> tuple[str, int]:
    """(message id, characters received) of one Messages call."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        body["stream"] = True
    request = http.build_request(
        "POST",
        f"{base_url}/v1/messages",
        content=orjson.dumps(body),
        headers={
            "x-api-key": "sk-ant-loadgen",
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            **headers,
        },
    )
    response = await http.send(request, stream=stream)
    if not stream:
        _checked(response)
        message = response.json()
        return message["id"], sum(len(b.get("text", "")) for b in message["content"])
    try:
        _checked(response)
        response_id, received, stopped = "", 0, False
        async for line in response.aiter_lines():
            event = _events(line)
            if event is None:
                continue
            kind = event.get("type")
            if kind == "message_start":
                response_id = event["message"]["id"]
            elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                received += len(event["delta"]["text"])
            elif kind == "message_stop":
                stopped = True
    finally:
        await response.aclose()
    if not stopped:
        raise CallFailed("stream ended without message_stop")
    return response_id, received

"""The load generator's SDK client (``client="sdk"``): real ``openai`` and
``anthropic`` SDK calls, plain and streamed, checked as an application would
use them (an id, the usage chunk, ``message_stop``)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from demo.loadgen_http import CallFailed


async def openai_call(
    client: openai.AsyncOpenAI, model: str, prompt: str, headers: dict[str, str], stream: bool
) -> tuple[str, int]:
    """(response id, characters received) of one chat completion."""
    messages: Any = [{"role": "user", "content": prompt}]
    completions = client.chat.completions
    if not stream:
        completion = await completions.create(model=model, messages=messages, extra_headers=headers)
        if completion.usage is None:
            raise CallFailed("no usage in the completion")
        return completion.id, len(completion.choices[0].message.content or "")
    response_id, received, usage = "", 0, None
    chunks = await completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    async with chunks:
        async for chunk in chunks:
            response_id = response_id or chunk.id
            if chunk.choices:
                received += len(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
    if usage is None:
        raise CallFailed("stream ended without its usage chunk")
    return response_id, received


async def anthropic_call(
    client: anthropic.AsyncAnthropic,
    model: str,
    prompt: str,
    headers: dict[str, str],
    stream: bool,
) -> tuple[str, int]:
    """(message id, characters received) of one Messages call."""
    messages: Any = [{"role": "user", "content": prompt}]
    api = client.messages
    if not stream:
        message = await api.create(
            model=model, max_tokens=1024, messages=messages, extra_headers=headers
        )
        return message.id, sum(len(getattr(b, "text", "")) for b in message.content)
    response_id, received, stopped = "", 0, False
    events = await api.create(
        model=model, max_tokens=1024, messages=messages, stream=True, extra_headers=headers
    )
    async with events:
        async for event in events:
            if event.type == "message_start":
                response_id = event.message.id
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                received += len(event.delta.text)
            elif event.type == "message_stop":
                stopped = True
    if not stopped:
        raise CallFailed("stream ended without message_stop")
    return response_id, received

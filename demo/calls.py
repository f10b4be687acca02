"""One model call per provider, the way applications make them: the real ``openai``
and ``anthropic`` SDKs (with their retries), and raw httpx for Gemini.

A ``Prompt`` is provider-neutral (OpenAI-style turns); each function turns it
into its provider's request, sends it through the given HTTP client (the
capture proxy) and returns a ``Reply``. Any failure left after the SDK's own
retries raises ``CallFailed`` so the application can fall back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

try:
    import anthropic
    import openai
except ImportError as exc:  # pragma: no cover - only without the dev dependencies
    raise SystemExit(
        "the demo traffic needs the openai and anthropic SDKs: run it with `uv run` "
        f"(they are in the dev dependency group): {exc}"
    ) from exc


class CallFailed(Exception):
    """The provider did not answer usefully, after the client's own retries."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class Prompt:
    system: str
    turns: list[dict[str, Any]]  # OpenAI chat messages: user, assistant (tool_calls), tool
    tools: list[Tool] = field(default_factory=list)
    max_tokens: int = 512
    stream: bool = False
    # Simulator knobs (x-sim-* headers pass through the proxy to the simulated provider).
    output_tokens: int | None = None
    cache_read: int = 0
    cache_write: int = 0


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON


@dataclass
class Reply:
    provider: str
    model: str
    text: str
    tool_calls: list[ToolCall]


def sim_headers(prompt: Prompt) -> dict[str, str]:
    headers: dict[str, str] = {}
    if prompt.output_tokens and not prompt.tools:
        headers["x-sim-output-tokens"] = str(prompt.output_tokens)
    if prompt.cache_read:
        headers["x-sim-cache-read"] = str(prompt.cache_read)
    if prompt.cache_write:
        headers["x-sim-cache-write"] = str(prompt.cache_write)
    return headers


# -- OpenAI ------------------------------------------------------------------------
def openai_chat(
    client: openai.OpenAI, model: str, prompt: Prompt, headers: dict[str, str]
) -> Reply:
    messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
        dict(turn) for turn in prompt.turns
    ]
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": prompt.max_tokens,
        "extra_headers": {**headers, **sim_headers(prompt)},
    }
    if prompt.tools:
        kwargs["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in prompt.tools
        ]
    try:
        if prompt.stream and not prompt.tools:
            pieces = []
            stream = client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
            return Reply("openai", model, "".join(pieces), [])
        response = client.chat.completions.create(**kwargs)
    except openai.OpenAIError as exc:
        raise CallFailed(f"openai {model}: {exc}") from exc
    message = response.choices[0].message
    calls = [
        ToolCall(c.id, c.function.name, c.function.arguments)
        for c in message.tool_calls or []
        if c.type == "function"
    ]
    return Reply("openai", model, message.content or "", calls)


def openai_embed(
    client: openai.OpenAI, model: str, texts: list[str], headers: dict[str, str]
) -> int:
    try:
        response = client.embeddings.create(model=model, input=texts, extra_headers=headers)
    except openai.OpenAIError as exc:
        raise CallFailed(f"openai {model}: {exc}") from exc
    return len(response.data)


# -- Anthropic ---------------------------------------------------------------------
def _anthropic_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for turn in turns:
        if turn["role"] == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": turn["tool_call_id"],
                "content": turn["content"],
            }
            out.append({"role": "user", "content": [block]})
        elif turn["role"] == "assistant" and turn.get("tool_calls"):
            blocks = [
                {
                    "type": "tool_use",
                    "id": c["id"],
                    "name": c["function"]["name"],
                    "input": json.loads(c["function"]["arguments"] or "{}"),
                }
                for c in turn["tool_calls"]
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": turn["role"], "content": turn["content"]})
    return out


def anthropic_messages(
    client: anthropic.Anthropic, model: str, prompt: Prompt, headers: dict[str, str]
) -> Reply:
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": prompt.max_tokens,
        "messages": _anthropic_turns(prompt.turns),
        "extra_headers": {**headers, **sim_headers(prompt)},
    }
    if prompt.system:
        kwargs["system"] = prompt.system
    if prompt.tools:
        kwargs["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in prompt.tools
        ]
    try:
        if prompt.stream:
            with client.messages.stream(**kwargs) as stream:
                message = stream.get_final_message()
        else:
            message = client.messages.create(**kwargs)
    except anthropic.AnthropicError as exc:
        raise CallFailed(f"anthropic {model}: {exc}") from exc
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [
        ToolCall(b.id, b.name, json.dumps(b.input)) for b in message.content if b.type == "tool_use"
    ]
    return Reply("anthropic", model, text, calls)


# -- Gemini (no SDK: raw HTTP, retried by hand like many apps do) -------------------------
GEMINI_RETRIES = 2


def gemini_generate(
    http: httpx.Client, base_url: str, model: str, prompt: Prompt, headers: dict[str, str]
) -> Reply:
    contents = [
        {
            "role": "model" if t["role"] == "assistant" else "user",
            "parts": [{"text": str(t.get("content") or "")}],
        }
        for t in prompt.turns
    ]
    body: dict[str, Any] = {
        "contents": contents,
        "generationConfig": {"maxOutputTokens": prompt.max_tokens},
    }
    if prompt.system:
        body["systemInstruction"] = {"parts": [{"text": prompt.system}]}
    action = "streamGenerateContent?alt=sse" if prompt.stream else "generateContent"
    url = f"{base_url}/v1beta/models/{model}:{action}"
    sent = {"x-goog-api-key": "AIza-demo-key", **headers, **sim_headers(prompt)}
    for attempt in range(GEMINI_RETRIES + 1):
        try:
            response = http.post(url, json=body, headers=sent)
        except httpx.HTTPError as exc:
            failure = f"gemini {model}: {exc}"
        else:
            if response.status_code < 400:
                return Reply("google", model, _gemini_text(response.text, prompt.stream), [])
            failure = f"gemini {model}: HTTP {response.status_code}"
            if response.status_code not in (429, 500, 502, 503, 504):
                break
        if attempt < GEMINI_RETRIES:
            time.sleep(0.3 * 2**attempt)
    raise CallFailed(failure)


def _gemini_text(body: str, streamed: bool) -> str:
    payloads = (
        [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
        if streamed
        else [json.loads(body)]
    )
    return "".join(
        part.get("text", "")
        for payload in payloads
        for candidate in payload.get("candidates", [])
        for part in candidate.get("content", {}).get("parts", [])
    )

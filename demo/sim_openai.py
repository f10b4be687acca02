"""OpenAI wire formats: chat completions, legacy completions, embeddings, Azure routes.

The Responses API lives in ``sim_openai_responses``. Shapes follow the types in the
``openai`` SDK (``openai.types.chat.ChatCompletion``, ``ChatCompletionChunk``,
``Completion``, ``CreateEmbeddingResponse``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from demo.sim_common import (
    SimContext,
    SimError,
    SimStreamResponse,
    Usage,
    count_prompt,
    count_tokens,
    gather_text,
    rand_id,
    sample_arguments,
    split_fragments,
    split_words,
    sse,
    truncate_tokens,
)

SYSTEM_FINGERPRINT = "fp_sim000001"
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}

_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "timeout"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


def is_reasoning_model(model: str) -> bool:
    """o1/o3/o4-mini... and gpt-5 report reasoning tokens."""
    return model.startswith("o") or model.startswith("gpt-5")


def error_response(ctx: SimContext, status: int, message: str) -> Response:
    if status >= 500:
        err_type, code = "server_error", ("service_unavailable" if status == 503 else None)
    else:
        err_type, code = _ERROR_TYPES.get(status, ("invalid_request_error", None))
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=response_headers(ctx, None))


def response_headers(ctx: SimContext, usage: Usage | None) -> dict[str, str]:
    elapsed_ms = int((time.time() - ctx.record.received_at) * 1000)
    headers = {
        "x-request-id": ctx.request_id,
        "openai-processing-ms": str(elapsed_ms),
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "10000000",
        "x-ratelimit-remaining-tokens": str(10_000_000 - (usage.input_tokens if usage else 0)),
        "x-ratelimit-reset-tokens": "0s",
    }
    if ctx.provider == "azure":
        headers["apim-request-id"] = ctx.request_id
    return headers


def request_model(ctx: SimContext) -> str:
    """Azure names the deployment in the path; the response names the real model."""
    deployment = ctx.path_params.get("deployment")
    if deployment is not None:
        return ctx.state.config.azure_deployments.get(deployment, deployment)
    model = ctx.body.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "you must provide a model parameter")
    if ctx.provider == "azure":  # Azure v1 routes: the body names the deployment
        return ctx.state.config.azure_deployments.get(model, model)
    return model


def usage_json(usage: Usage) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None to answer with text.

    A tool call answers a user turn when tools are offered; after a ``tool`` message
    (or with tool_choice "none") the model answers in text.
    """
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    tools = [t for t in tools if t.get("name")]
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["name"] == wanted), tools[0])
    return tools[0]


def _last_text(messages: list[Any]) -> str:
    return gather_text(messages[-1].get("content")) if messages else ""


def chat_completions(ctx: SimContext) -> Response:
    body = ctx.body
    model = ctx.reported_model(request_model(ctx))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "'messages' must be a non-empty array")
    prompt = count_prompt(messages, tools=body.get("tools"))
    tool = _pick_tool(body)
    created = int(time.time())
    completion_id = rand_id("chatcmpl-", 29)
    if tool is not None:
        call_id = rand_id("call_", 24)
        arguments = json.dumps(sample_arguments(tool.get("parameters")))
        visible = count_tokens(tool["name"] + arguments)
        text, finish = None, "tool_calls"
    else:
        prefix = "The tool returned a result. " if messages[-1].get("role") == "tool" else ""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        text, cut = truncate_tokens(ctx.answer(model, _last_text(messages), prefix=prefix), limit)
        visible, finish = count_tokens(text), ("length" if cut else "stop")
    usage = ctx.plan_usage(
        prompt, visible, reasoning=is_reasoning_model(model), implicit_cache=True
    )
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    headers = response_headers(ctx, usage)
    base = {
        "id": completion_id,
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    if not body.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": [],
        }
        if tool is not None:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        payload = {**base, "object": "chat.completion", "choices": [choice]}
        payload["usage"] = usage_json(usage)
        if ctx.provider == "azure":
            payload["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        ctx.record.usage = usage.as_dict()
        return JSONResponse(payload, headers=headers)

    include_usage = _include_usage(body)

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj: dict[str, Any] = {**base, "object": "chat.completion.chunk", "choices": [choice]}
        if include_usage:  # the real API sends "usage": null on every chunk but the last
            obj["usage"] = None
        return sse(obj)

    chunks: list[bytes] = []
    if ctx.provider == "azure":
        # Azure's first chunk carries only the prompt filter results, with empty choices
        # and an empty model: a real quirk that parsers must survive.
        chunks.append(
            sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                }
            )
        )
    if tool is not None:
        first_call = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": tool["name"], "arguments": ""},
        }
        chunks.append(
            chunk(
                {"role": "assistant", "content": None, "tool_calls": [first_call], "refusal": None}
            )
        )
        for fragment in split_fragments(arguments):
            chunks.append(
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            )
    else:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        chunks.extend(chunk({"content": piece}) for piece in split_words(text or ""))
    chunks.append(chunk({}, finish))
    usage_index = -1
    if include_usage:
        usage_index = len(chunks)
        final = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": usage_json(usage),
        }
        chunks.append(sse(final))
    chunks.append(sse("[DONE]"))
    return SimStreamResponse(
        ctx,
        chunks,
        usage=usage,
        usage_index=usage_index,
        media_type="text/event-stream",
        headers=headers,
    )


def completions(ctx: SimContext) -> Response:
    """Legacy ``/v1/completions`` (gpt-3.5-turbo-instruct style)."""
    body = ctx.body
    model = ctx.reported_model(request_model(ctx))
    prompt_field = body.get("prompt", "")
    prompts = prompt_field if isinstance(prompt_field, list) else [prompt_field]
    if prompts and all(isinstance(p, int) for p in prompts):
        prompts = [prompts]  # a single prompt given as token ids
    prompt = sum(len(p) if isinstance(p, list) else count_tokens(str(p)) for p in prompts)
    last = prompts[-1] if prompts else ""
    snippet = last if isinstance(last, str) else ""
    text, cut = truncate_tokens(ctx.answer(model, snippet), body.get("max_tokens") or 16)
    finish = "length" if cut else "stop"
    usage = ctx.plan_usage(
        max(1, prompt), count_tokens(text), reasoning=False, implicit_cache=False
    )
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    headers = response_headers(ctx, usage)
    base = {
        "id": rand_id("cmpl-", 29),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def choice(piece: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    if not body.get("stream"):
        ctx.record.usage = usage.as_dict()
        payload = {**base, "choices": [choice(text, finish)], "usage": usage_json(usage)}
        return JSONResponse(payload, headers=headers)
    chunks = [sse({**base, "choices": [choice(piece, None)]}) for piece in split_words(text)]
    chunks.append(sse({**base, "choices": [choice("", finish)]}))
    usage_index = -1
    if _include_usage(body):
        usage_index = len(chunks)
        chunks.append(sse({**base, "choices": [], "usage": usage_json(usage)}))
    chunks.append(sse("[DONE]"))
    return SimStreamResponse(
        ctx,
        chunks,
        usage=usage,
        usage_index=usage_index,
        media_type="text/event-stream",
        headers=headers,
    )


def embedding_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on (model, text): same input, same embedding."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings(ctx: SimContext) -> Response:
    body = ctx.body
    model = ctx.reported_model(request_model(ctx))
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        raise SimError(400, "'input' is required")
    if isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(x, int) for x in raw)):
        inputs: list[Any] = [raw]
    else:
        inputs = list(raw)
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS.get(model, 1536)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise SimError(400, f"invalid encoding_format {encoding!r}")
    data = []
    prompt = 0
    for index, item in enumerate(inputs):
        if isinstance(item, list):  # token ids
            prompt += len(item)
            text = " ".join(str(t) for t in item)
        else:
            text = str(item)
            prompt += count_tokens(text)
        vector = embedding_vector(model, text, int(dimensions))
        embedding: Any = vector
        if encoding == "base64":
            # Little-endian float32, as the API sends it and the SDK decodes it.
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = ctx.plan_usage(max(1, prompt), 0, reasoning=False, implicit_cache=False)
    usage = Usage(usage.input_tokens, 0)  # embeddings have neither cache nor output
    ctx.record.model = model
    ctx.record.usage = ctx.record.planned_usage = usage.as_dict()
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }
    return JSONResponse(payload, headers=response_headers(ctx, usage))

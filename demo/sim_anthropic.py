"""Anthropic Messages API (``POST /v1/messages``), non-streamed and SSE.

Shapes follow ``anthropic.types.Message`` and the ``RawMessageStreamEvent`` types.
Anthropic's ``input_tokens`` excludes cache reads and writes, so the wire carries
``Usage.uncached_input`` while the recorded usage keeps the whole prompt.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
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

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_response(ctx: SimContext, status: int, message: str) -> Response:
    err_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {
        "type": "error",
        "error": {"type": err_type, "message": message},
        "request_id": ctx.request_id,
    }
    return JSONResponse(body, status_code=status, headers=response_headers(ctx, None))


def response_headers(ctx: SimContext, usage: Usage | None) -> dict[str, str]:
    reset = datetime.fromtimestamp(time.time() + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "request-id": ctx.request_id,
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "2000000",
        "anthropic-ratelimit-tokens-remaining": str(
            2_000_000 - (usage.input_tokens if usage else 0)
        ),
        "anthropic-ratelimit-tokens-reset": reset,
    }


def usage_json(usage: Usage, output_tokens: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": usage.uncached_input,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice") or {}
    last = messages[-1]
    if not tools or choice.get("type") == "none" or last.get("role") != "user":
        return None
    if _has_tool_result(last):
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), tools[0])
    return tools[0]


def messages(ctx: SimContext) -> Response:
    body = ctx.body
    model = body.get("model")
    msgs = body.get("messages")
    if not isinstance(model, str) or not model:
        raise SimError(400, "model: Field required")
    if not isinstance(msgs, list) or not msgs:
        raise SimError(400, "messages: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise SimError(400, "max_tokens: Field required")
    model = ctx.reported_model(model)
    prompt = count_prompt(msgs, system=body.get("system"), tools=body.get("tools"))
    tool = _pick_tool(body, msgs)
    blocks: list[dict[str, Any]] = []
    if tool is not None:
        # With tool_choice auto Claude usually says what it is about to do first.
        if (body.get("tool_choice") or {}).get("type", "auto") == "auto":
            blocks.append({"type": "text", "text": f"I'll use the {tool['name']} tool."})
        args = sample_arguments(tool.get("input_schema"))
        blocks.append(
            {"type": "tool_use", "id": rand_id("toolu_01", 22), "name": tool["name"], "input": args}
        )
        stop_reason = "tool_use"
    else:
        prefix = "The tool returned a result. " if _has_tool_result(msgs[-1]) else ""
        answer = ctx.answer(model, gather_text(msgs[-1].get("content")), prefix=prefix)
        text, cut = truncate_tokens(answer, body["max_tokens"])
        blocks.append({"type": "text", "text": text})
        stop_reason = "max_tokens" if cut else "end_turn"
    visible = sum(
        count_tokens(b["text"]) if b["type"] == "text" else count_tokens(json.dumps(b["input"]))
        for b in blocks
    )
    usage = ctx.plan_usage(prompt, visible, reasoning=False, implicit_cache=False)
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    headers = response_headers(ctx, usage)
    message = {
        "id": rand_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_json(usage),
    }
    if not body.get("stream"):
        ctx.record.usage = usage.as_dict()
        return JSONResponse(message, headers=headers)

    events: list[bytes] = []

    def emit(event_type: str, **fields: Any) -> None:
        events.append(sse({"type": event_type, **fields}, event_type))

    # message_start reports input and cache counts and a token or so of output so far.
    start = {**message, "content": [], "stop_reason": None, "usage": usage_json(usage, 1)}
    emit("message_start", message=start)
    emit("ping")
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
            for piece in split_words(block["text"]):
                emit(
                    "content_block_delta", index=index, delta={"type": "text_delta", "text": piece}
                )
        else:
            emit("content_block_start", index=index, content_block={**block, "input": {}})
            # The API opens every tool input with an empty fragment.
            for fragment in ["", *split_fragments(json.dumps(block["input"]))]:
                emit(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": fragment},
                )
        emit("content_block_stop", index=index)
    usage_index = len(events)
    final_usage = usage_json(usage)
    delta_usage = {
        k: final_usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    emit(
        "message_delta",
        delta={"stop_reason": stop_reason, "stop_sequence": None},
        usage=delta_usage,
    )
    emit("message_stop")
    return SimStreamResponse(
        ctx,
        events,
        usage=usage,
        usage_index=usage_index,
        media_type="text/event-stream",
        headers=headers,
    )

"""Bedrock Converse: ``POST /model/{modelId}/converse`` and ``/converse-stream``.

The stream uses AWS binary event-stream framing (``application/vnd.amazon.eventstream``),
encoded with ``proxy_addon.eventstream.encode_event``. ``inputTokens`` excludes cache
reads and writes (as Anthropic's ``input_tokens`` does) and ``totalTokens`` counts
everything; cache fields appear only when non-zero.
"""

from __future__ import annotations

import json
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
    truncate_tokens,
)
from proxy_addon.eventstream import encode_event

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# Real events carry a "p" field of random-length filler that hides the payload size.
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def error_response(ctx: SimContext, status: int, message: str) -> Response:
    err_type = _ERROR_TYPES.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )
    headers = {"x-amzn-requestid": ctx.request_id, "x-amzn-errortype": err_type}
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def usage_json(usage: Usage) -> dict[str, int]:
    out = {
        "inputTokens": usage.uncached_input,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }
    if usage.cache_read_tokens:
        out["cacheReadInputTokens"] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        out["cacheWriteInputTokens"] = usage.cache_write_tokens
    return out


def frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One event-stream message as Bedrock sends it."""
    padded = {**payload, "p": _PADDING[: 1 + len(event_type) * 2 % len(_PADDING)]}
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_event(headers, json.dumps(padded, separators=(",", ":")).encode())


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    config = body.get("toolConfig") or {}
    specs = [
        t["toolSpec"] for t in config.get("tools") or [] if isinstance(t.get("toolSpec"), dict)
    ]
    last = messages[-1]
    answered = any("toolResult" in block for block in last.get("content") or [])
    if not specs or last.get("role") != "user" or answered:
        return None
    wanted = ((config.get("toolChoice") or {}).get("tool") or {}).get("name")
    return next((s for s in specs if s.get("name") == wanted), specs[0])


def converse(ctx: SimContext) -> Response:
    body = ctx.body
    model = ctx.reported_model(ctx.path_params["model_id"])
    stream = ctx.path_params.get("stream") == "1"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise SimError(400, "The messages field is required")
    prompt = count_prompt(msgs, system=body.get("system"), tools=body.get("toolConfig"))
    tool = _pick_tool(body, msgs)
    blocks: list[dict[str, Any]] = []
    if tool is not None:
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {"auto": {}}
        if "auto" in choice:
            blocks.append({"text": f"I'll use the {tool['name']} tool."})
        args = sample_arguments((tool.get("inputSchema") or {}).get("json"))
        tool_use = {"toolUseId": rand_id("tooluse_", 22), "name": tool["name"], "input": args}
        blocks.append({"toolUse": tool_use})
        stop_reason = "tool_use"
    else:
        answered = any("toolResult" in b for b in msgs[-1].get("content") or [])
        prefix = "The tool returned a result. " if answered else ""
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        answer = ctx.answer(model, gather_text(msgs[-1].get("content")), prefix=prefix)
        text, cut = truncate_tokens(answer, limit)
        blocks.append({"text": text})
        stop_reason = "max_tokens" if cut else "end_turn"
    visible = sum(
        count_tokens(b["text"]) if "text" in b else count_tokens(json.dumps(b["toolUse"]["input"]))
        for b in blocks
    )
    usage = ctx.plan_usage(prompt, visible, reasoning=False, implicit_cache=False)
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    latency_ms = max(1, int((time.time() - ctx.record.received_at) * 1000))
    headers = {"x-amzn-requestid": ctx.request_id}
    if not stream:
        ctx.record.usage = usage.as_dict()
        payload = {
            "output": {"message": {"role": "assistant", "content": blocks}},
            "stopReason": stop_reason,
            "usage": usage_json(usage),
            "metrics": {"latencyMs": latency_ms},
        }
        return JSONResponse(payload, headers=headers)

    frames = [frame("messageStart", {"role": "assistant"})]
    for index, block in enumerate(blocks):
        if "text" in block:
            # Bedrock sends no contentBlockStart for text blocks, only deltas.
            for piece in split_words(block["text"]):
                frames.append(
                    frame(
                        "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}
                    )
                )
        else:
            tool_use = block["toolUse"]
            start = {"toolUse": {"toolUseId": tool_use["toolUseId"], "name": tool_use["name"]}}
            frames.append(frame("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            for fragment in split_fragments(json.dumps(tool_use["input"])):
                delta = {"toolUse": {"input": fragment}}
                frames.append(
                    frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
        frames.append(frame("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(frame("messageStop", {"stopReason": stop_reason}))
    usage_index = len(frames)
    metadata = {"usage": usage_json(usage), "metrics": {"latencyMs": latency_ms}}
    frames.append(frame("metadata", metadata))
    return SimStreamResponse(
        ctx,
        frames,
        usage=usage,
        usage_index=usage_index,
        media_type="application/vnd.amazon.eventstream",
        headers=headers,
    )

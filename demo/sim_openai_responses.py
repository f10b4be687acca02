"""OpenAI Responses API (``POST /v1/responses``), non-streamed and SSE.

Shapes follow ``openai.types.responses.Response`` and the ``Response*Event`` types;
the event order is the one the SDK's ``client.responses.stream`` accumulator expects
(output_item.added before content_part.added before output_text.delta, ...).
"""

from __future__ import annotations

import json
import secrets
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
from demo.sim_openai import is_reasoning_model, request_model, response_headers


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if isinstance(raw, list) and raw:
        return [item for item in raw if isinstance(item, dict)]
    raise SimError(400, "'input' must be a string or a non-empty array")


def _pick_tool(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Call the first function tool when the last input item is a user message."""
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function" and t.get("name")]
    last = items[-1]
    is_user_turn = last.get("type", "message") == "message" and last.get("role") == "user"
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not is_user_turn:
        return None
    if isinstance(choice, dict) and choice.get("name"):
        return next((t for t in tools if t["name"] == choice["name"]), tools[0])
    return tools[0]


def _hex_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def responses(ctx: SimContext) -> Response:
    body = ctx.body
    model = ctx.reported_model(request_model(ctx))
    items = _input_items(body)
    prompt = count_prompt(items, system=body.get("instructions"), tools=body.get("tools"))
    tool = _pick_tool(body, items)
    reasoning = is_reasoning_model(model)

    output: list[dict[str, Any]] = []
    if reasoning:
        output.append({"id": _hex_id("rs_"), "type": "reasoning", "summary": []})
    status, incomplete = "completed", None
    text = ""
    if tool is not None:
        arguments = json.dumps(sample_arguments(tool.get("parameters")))
        visible = count_tokens(tool["name"] + arguments)
        output.append(
            {
                "id": _hex_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "arguments": arguments,
                "call_id": rand_id("call_", 24),
                "name": tool["name"],
            }
        )
    else:
        last = items[-1]
        after_tool = last.get("type") == "function_call_output"
        snippet = gather_text(last.get("output") if after_tool else last.get("content"))
        prefix = "The tool returned a result. " if after_tool else ""
        text, cut = truncate_tokens(
            ctx.answer(model, snippet, prefix=prefix), body.get("max_output_tokens")
        )
        if cut:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        visible = count_tokens(text)
        output.append(
            {
                "id": _hex_id("msg_"),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        )
    usage = ctx.plan_usage(prompt, visible, reasoning=reasoning, implicit_cache=True)
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    headers = response_headers(ctx, usage)
    created_at = int(time.time())
    response_id = _hex_id("resp_")

    def response_obj(state: str, out: list[dict[str, Any]], use: Usage | None) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": state,
            "background": False,
            "error": None,
            "incomplete_details": incomplete if state == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": out,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": "medium" if reasoning else None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage_json(use) if use is not None else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    if not body.get("stream"):
        ctx.record.usage = usage.as_dict()
        return JSONResponse(response_obj(status, output, usage), headers=headers)

    events: list[bytes] = []

    def emit(event_type: str, **fields: Any) -> None:
        events.append(
            sse({"type": event_type, "sequence_number": len(events), **fields}, event_type)
        )

    emit("response.created", response=response_obj("in_progress", [], None))
    emit("response.in_progress", response=response_obj("in_progress", [], None))
    for index, item in enumerate(output):
        item_id = item["id"]
        if item["type"] == "reasoning":
            emit("response.output_item.added", output_index=index, item=item)
        elif item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for fragment in split_fragments(item["arguments"]):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=index,
                    delta=fragment,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        else:
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            emit("response.content_part.added", **where, part=part)
            for piece in split_words(text):
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, text=text, logprobs=[])
            emit("response.content_part.done", **where, part={**part, "text": text})
        emit("response.output_item.done", output_index=index, item=item)
    usage_index = len(events)
    final_type = "response.incomplete" if status == "incomplete" else "response.completed"
    emit(final_type, response=response_obj(status, output, usage))
    return SimStreamResponse(
        ctx,
        events,
        usage=usage,
        usage_index=usage_index,
        media_type="text/event-stream",
        headers=headers,
    )

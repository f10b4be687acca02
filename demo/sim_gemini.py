"""Gemini API: ``models/{model}:generateContent`` and ``:streamGenerateContent``.

Each SSE event (``?alt=sse``) is a whole GenerateContentResponse, separated by
``\\r\\n\\r\\n`` as Google's servers do. Intermediate chunks carry a partial
``usageMetadata`` (prompt count only) like the real API; the last carries the totals.
Without ``alt=sse`` the stream endpoint returns one JSON array of the same chunks.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse, Response

from demo.sim_common import (
    SimContext,
    SimError,
    SimStreamResponse,
    Usage,
    count_prompt,
    count_tokens,
    dumps,
    gather_text,
    rand_id,
    sample_arguments,
    split_words,
    sse,
    truncate_tokens,
)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# ".../models/{model}:{method}" for the Gemini API (v1, v1beta) and Vertex AI paths.
PATH_RE = re.compile(
    r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)


def error_response(ctx: SimContext, status: int, message: str) -> Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
        }
    }
    return JSONResponse(body, status_code=status)


def is_thinking_model(model: str) -> bool:
    return "thinking" in model or "2.5" in model


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """The REST API accepts both proto JSON spellings."""
    return obj.get(camel, obj.get(snake))


def usage_json(usage: Usage, *, final: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"promptTokenCount": usage.input_tokens}
    if final:
        meta["candidatesTokenCount"] = usage.visible_output
        meta["totalTokenCount"] = usage.total_tokens
    else:
        meta["totalTokenCount"] = usage.input_tokens
    # The real API omits zero counts.
    if usage.cache_read_tokens:
        meta["cachedContentTokenCount"] = usage.cache_read_tokens
    if final and usage.reasoning_tokens:
        meta["thoughtsTokenCount"] = usage.reasoning_tokens
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.input_tokens}]
    if usage.cache_read_tokens:
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.cache_read_tokens}]
    return meta


def _pick_function(body: dict[str, Any], contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    declarations: list[dict[str, Any]] = []
    for tool in body.get("tools") or []:
        declarations.extend(_get(tool, "functionDeclarations", "function_declarations") or [])
    config = (
        _get(
            body.get("toolConfig") or body.get("tool_config") or {},
            "functionCallingConfig",
            "function_calling_config",
        )
        or {}
    )
    last = contents[-1]
    parts = last.get("parts") or []
    answered = any(_get(p, "functionResponse", "function_response") for p in parts)
    if not declarations or config.get("mode") == "NONE" or answered:
        return None
    if last.get("role", "user") != "user":
        return None
    return declarations[0]


def generate_content(ctx: SimContext) -> Response:
    body = ctx.body
    model = ctx.reported_model(ctx.path_params["model"])
    stream = ctx.path_params["method"] == "streamGenerateContent"
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise SimError(400, "* GenerateContentRequest.contents: contents is not specified")
    system = _get(body, "systemInstruction", "system_instruction")
    prompt = count_prompt(contents, system=system, tools=body.get("tools"))
    function = _pick_function(body, contents)
    generation = _get(body, "generationConfig", "generation_config") or {}
    finish = "STOP"
    if function is not None:
        args = sample_arguments(function.get("parameters"))
        parts: list[dict[str, Any]] = [{"functionCall": {"name": function["name"], "args": args}}]
        visible = count_tokens(function["name"] + dumps(args))
        pieces = [parts]
    else:
        last_parts = contents[-1].get("parts") or []
        snippet = gather_text(last_parts)
        limit = _get(generation, "maxOutputTokens", "max_output_tokens")
        text, cut = truncate_tokens(ctx.answer(model, snippet), limit)
        finish = "MAX_TOKENS" if cut else "STOP"
        visible = count_tokens(text)
        parts = [{"text": text}]
        pieces = [[{"text": piece}] for piece in split_words(text)]
    usage = ctx.plan_usage(prompt, visible, reasoning=is_thinking_model(model), implicit_cache=True)
    ctx.record.model, ctx.record.planned_usage = model, usage.as_dict()
    response_id = rand_id("", 22)

    def response(chunk_parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": chunk_parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage_json(usage, final=last),
            "modelVersion": model,
            "responseId": response_id,
        }

    if not stream:
        ctx.record.usage = usage.as_dict()
        return JSONResponse(response(parts, True))
    chunks = [response(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    if ctx.request.query_params.get("alt") != "sse":
        ctx.record.usage = usage.as_dict()
        return JSONResponse(chunks)
    return SimStreamResponse(
        ctx,
        [sse(chunk, sep="\r\n\r\n") for chunk in chunks],
        usage=usage,
        usage_index=len(chunks) - 1,
        media_type="text/event-stream",
        headers={},
    )

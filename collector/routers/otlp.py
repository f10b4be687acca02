"""POST /v1/traces: OTLP/HTTP in protobuf or JSON, gzip or not (ingest role).

200 means durable: the body is in the write-ahead log before we answer.
"""

from __future__ import annotations

import anyio
import orjson
from fastapi import APIRouter, Request, Response

from collector.auth import Caller
from collector.receive import accept_export
from collector.runtime import Runtime
from ingest.otlp import RESEND_HEADER, OtlpDecodeError, UnsupportedMediaType, encode_response
from ingest.writer import QueueFull

router = APIRouter(tags=["ingest"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _answer(
    status: int, message: str, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    # OTLP wants errors as a google.rpc.Status; a message field is what
    # exporters log, and JSON keeps it readable for people with curl.
    if as_json:
        body = orjson.dumps({"code": status, "message": message})
        return Response(body, status, headers=headers, media_type=JSON)
    return Response(message.encode(), status, headers=headers, media_type="text/plain")


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/traces", summary="Receive OTLP/HTTP traces")
async def receive_traces(request: Request, _caller: Caller("ingest")) -> Response:
    runtime: Runtime = request.app.state.runtime
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    encoding = (request.headers.get("content-encoding") or "").strip().lower() or None
    as_json = content_type == JSON
    body = await _read_body(request, runtime.settings.max_request_bytes)
    if body is None:
        return _answer(
            413, f"request body is larger than {runtime.settings.max_request_bytes} bytes", as_json
        )
    try:
        rejected, errors = await anyio.to_thread.run_sync(
            accept_export,
            runtime,
            body,
            content_type,
            encoding,
            request.headers.get(RESEND_HEADER) == "1",
            limiter=runtime.decoder.limiter,
        )
    except UnsupportedMediaType as exc:
        runtime.received.bad_requests += 1
        return _answer(415, str(exc), as_json)
    except OtlpDecodeError as exc:
        runtime.received.bad_requests += 1
        return _answer(400, str(exc), as_json)
    except QueueFull as exc:
        runtime.received.refused_busy += 1
        # The OTLP exporters retry after Retry-After; nothing was accepted.
        return _answer(
            503, f"the store is behind ({exc}); retry later", as_json, {"Retry-After": "5"}
        )
    return Response(
        encode_response(rejected, errors, as_json=as_json),
        200,
        media_type=JSON if as_json else PROTOBUF,
    )

"""GET /healthz: liveness and store status, no key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from collector.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and store status")
def healthz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    try:
        runtime.store.query_arrow("SELECT 1")
        store_ok, store_error = True, ""
    except Exception as exc:  # report, never raise: this is the health check
        store_ok, store_error = False, str(exc)[:300]
    stats = runtime.writer.stats
    body = {
        "status": "ok" if store_ok else "degraded",
        "store": {"backend": runtime.store.backend, "ok": store_ok, "error": store_error},
        "writer": {
            "queued_rows": runtime.writer.queued_rows,
            "accepted_rows": stats.accepted_rows,
            "stored_rows": stats.stored_rows,
            "unpriced_calls": stats.unpriced_calls,
            "store_failures": stats.store_failures,
            "last_error": stats.last_error,
            "wal_bytes": runtime.writer.wal.size_bytes(),
        },
    }
    # Liveness: the collector still accepts data (into its WAL) with the store down.
    return JSONResponse(body)

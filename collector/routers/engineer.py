"""Engineers (and compliance, without content): model calls as stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.params import time_window
from collector.runtime import Runtime
from ingest.rows import LLM_CALLS_SCHEMA

router = APIRouter(prefix="/api/v1", tags=["engineer"])

CONTENT_COLUMNS = ("input_content", "output_content")
CALL_COLUMNS = ", ".join(LLM_CALLS_SCHEMA.names)
METADATA_COLUMNS = ", ".join(n for n in LLM_CALLS_SCHEMA.names if n not in CONTENT_COLUMNS)
MAX_LIMIT = 1000

# Each filter: (parameter, SQL condition). Empty parameter = no filter.
FILTERS = (
    ("team", "team = {team:String}"),
    ("project", "project = {project:String}"),
    ("model", "(response_model = {model:String} OR request_model = {model:String})"),
    ("provider", "provider = {provider:String}"),
    ("status", "status = {status:String}"),
    ("trace_id", "trace_id = {trace_id:String}"),
    ("app", "app = {app:String}"),
    (
        "q",
        "(positionCaseInsensitive(input_content, {q:String}) > 0 "
        "OR positionCaseInsensitive(output_content, {q:String}) > 0)",
    ),
)


@router.get("/calls", summary="Model calls, newest first")
def calls(
    request: Request,
    caller: Caller("engineer", "compliance"),
    start: str | None = Query(
        None, alias="from", description="ISO 8601 or unix seconds; default 7 days before to"
    ),
    end: str | None = Query(None, alias="to", description="ISO 8601 or unix seconds; default now"),
    team: str = "",
    project: str = "",
    model: str = "",
    provider: str = "",
    status: str = "",
    trace_id: str = "",
    app: str = "",
    q: str = Query("", description="text in the (redacted) prompt or response"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    if status and status not in ("ok", "error"):
        raise HTTPException(400, "status must be ok or error")
    with_content = caller.role in ("engineer", "admin")
    if q and not with_content:
        raise HTTPException(403, "searching content (q) needs an engineer key")
    frm, to = time_window(start, end, timedelta(days=7))
    values = {
        "team": team,
        "project": project,
        "model": model,
        "provider": provider,
        "status": status,
        "trace_id": trace_id,
        "app": app,
        "q": q,
    }
    where = ["ts >= {start:DateTime64(6)}", "ts < {end:DateTime64(6)}"]
    where += [condition for name, condition in FILTERS if values[name]]
    columns = CALL_COLUMNS if with_content else METADATA_COLUMNS
    sql = (
        f"SELECT {columns} FROM llm_calls WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, span_id LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
    )
    params = {name: value for name, value in values.items() if value}
    table = runtime.store.query_arrow(
        sql, {**params, "start": frm, "end": to, "limit": limit + 1, "offset": offset}
    )
    rows = json_rows(table.slice(0, limit))
    if with_content:
        runtime.audit.append(
            caller.name,
            caller.role,
            "calls.read",
            "llm_calls",
            {"filters": params, "from": frm.isoformat(), "to": to.isoformat(), "rows": len(rows)},
        )
    return {
        "rows": rows,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if table.num_rows > limit else None,
    }

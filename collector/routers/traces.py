"""Engineers: traces — the list with totals, and one trace as a span tree."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.params import time_window
from collector.runtime import Runtime
from ingest.store import query_rows

router = APIRouter(prefix="/api/v1", tags=["engineer"])

MAX_TRACES = 500

# Totals per trace from its model calls; filters apply to those calls.
# Columns are qualified (c.) because the totals' aliases reuse column names.
TRACE_LIST = """
SELECT
    c.trace_id AS trace_id,
    min(c.ts) AS start,
    max(c.ts + toIntervalMicrosecond(toUInt64(c.duration_ms * 1000))) AS end,
    count() AS calls,
    countIf(c.status = 'error') AS errors,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    any(c.team) AS team,
    any(c.app) AS app,
    groupUniqArray(if(c.response_model != '', c.response_model, c.request_model)) AS models
FROM llm_calls AS c
WHERE c.ts >= {start:DateTime64(6)} AND c.ts < {end:DateTime64(6)}
  AND ({team:String} = '' OR c.team = {team:String})
  AND ({app:String} = '' OR c.app = {app:String})
GROUP BY c.trace_id
HAVING ({has_error:UInt8} = 0 OR errors > 0)
   AND cost_usd >= {min_cost:Decimal(38, 12)}
ORDER BY start DESC
LIMIT {limit:UInt32}
"""


@router.get("/traces", summary="Traces with their totals, newest first")
def list_traces(
    request: Request,
    _caller: Caller("engineer"),
    start: str | None = Query(None, alias="from", description="default 24 hours before to"),
    end: str | None = Query(None, alias="to", description="default now"),
    team: str = "",
    app: str = "",
    has_error: bool = False,
    # Bounded and finite: the column is Decimal(38, 12), which takes no inf.
    min_cost: float = Query(0.0, ge=0, le=1e15, allow_inf_nan=False),
    limit: int = Query(50, ge=1, le=MAX_TRACES),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = time_window(start, end, timedelta(days=1))
    params = {
        "start": frm,
        "end": to,
        "team": team,
        "app": app,
        "has_error": int(has_error),
        "min_cost": f"{min_cost:.12f}",  # plain digits: str() may give 1e-07
        "limit": limit,
    }
    rows = json_rows(runtime.store.query_arrow(TRACE_LIST, params))
    ids = [row["trace_id"] for row in rows]
    if ids:
        tools = {
            r["trace_id"]: r["n"]
            for r in query_rows(
                runtime.store,
                "SELECT trace_id, count() AS n FROM tool_calls "
                "WHERE trace_id IN {ids:Array(String)} GROUP BY trace_id",
                {"ids": ids},
            )
        }
        spans = {
            r["trace_id"]: r
            for r in query_rows(
                runtime.store,
                "SELECT trace_id, count() AS spans, min(ts) AS first, "
                "max(ts + toIntervalMicrosecond(toUInt64(duration_ms * 1000))) AS last "
                "FROM spans WHERE trace_id IN {ids:Array(String)} GROUP BY trace_id",
                {"ids": ids},
            )
        }
        for row in rows:
            row["tool_calls"] = tools.get(row["trace_id"], 0)
            span = spans.get(row["trace_id"])
            row["spans"] = span["spans"] if span else 0
            if span:
                # The whole trace's extent, agent and tool spans included.
                row["duration_ms"] = (span["last"] - span["first"]).total_seconds() * 1000
            else:
                row["duration_ms"] = _ms_between(row["start"], row["end"])
    return {"rows": rows, "limit": limit}


def _ms_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


SPAN_COLUMNS = (
    "ts, span_id, parent_span_id, name, kind, duration_ms, status, status_message, "
    "service_name, attributes"
)


@router.get("/traces/{trace_id}", summary="One trace as a tree of spans with call facts")
def get_trace(request: Request, trace_id: str, caller: Caller("engineer")) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    trace_id = trace_id.lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        raise HTTPException(400, "trace_id must be 32 hex characters")
    store = runtime.store
    params = {"trace": trace_id}
    spans = json_rows(
        store.query_arrow(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = {{trace:String}} ORDER BY ts",
            params,
        )
    )
    calls = json_rows(
        store.query_arrow(
            "SELECT * EXCEPT (attributes, ingested_at) FROM llm_calls "
            "WHERE trace_id = {trace:String} ORDER BY ts",
            params,
        )
    )
    tools = json_rows(
        store.query_arrow(
            "SELECT * EXCEPT (ingested_at) FROM tool_calls WHERE trace_id = {trace:String} "
            "ORDER BY ts",
            params,
        )
    )
    if not spans and not calls:
        raise HTTPException(404, f"no trace {trace_id}")
    runtime.audit.append(
        caller.name, caller.role, "trace.read", trace_id, {"calls": len(calls), "tools": len(tools)}
    )
    return {"trace_id": trace_id, **build_tree(spans, calls, tools)}


def build_tree(
    spans: list[dict[str, Any]], calls: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """Nest spans under their parents; hang each model call and tool call on
    its span. A call whose span was not exported (e.g. only the proxy saw it)
    becomes a node of its own."""
    nodes: dict[str, dict[str, Any]] = {}
    for span in spans:
        nodes[span["span_id"]] = {**span, "llm_call": None, "tool_calls": [], "children": []}
    for call in calls:
        node = nodes.get(call["span_id"])
        if node is None:
            node = nodes[call["span_id"]] = {
                "ts": call["ts"],
                "span_id": call["span_id"],
                "parent_span_id": call["parent_span_id"],
                "name": f"{call['operation']} {call['request_model']}".strip(),
                "kind": "client",
                "duration_ms": call["duration_ms"],
                "status": call["status"],
                "status_message": call["error_type"],
                "service_name": call["app"],
                "attributes": {},
                "llm_call": None,
                "tool_calls": [],
                "children": [],
            }
        node["llm_call"] = call
    # An executed tool exported apart from the model call that asked for it
    # is linked here, by the tool call id the request carried.
    requested_by = {
        t["tool_call_id"]: t["llm_span_id"]
        for t in tools
        if t["status"] == "requested" and t["tool_call_id"]
    }
    for tool in tools:
        if not tool["llm_span_id"]:
            tool["llm_span_id"] = requested_by.get(tool["tool_call_id"], "")
        node = nodes.get(tool["span_id"]) or nodes.get(tool["llm_span_id"])
        if node is not None:
            node["tool_calls"].append(tool)
    roots = []
    for node in sorted(nodes.values(), key=lambda n: n["ts"]):
        parent = nodes.get(node["parent_span_id"])
        (parent["children"] if parent is not None and parent is not node else roots).append(node)
    return {
        "spans": roots,
        "totals": {
            "spans": len(nodes),
            "calls": len(calls),
            "tool_calls": len(tools),
            "errors": sum(1 for c in calls if c["status"] == "error"),
            "cost_usd": sum(c["cost_usd"] or 0 for c in calls),
            "input_tokens": sum(c["input_tokens"] or 0 for c in calls),
            "output_tokens": sum(c["output_tokens"] or 0 for c in calls),
        },
    }

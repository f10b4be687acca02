"""Finance: spend and tokens, grouped and bucketed. Never content."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.params import csv_list, time_window
from collector.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["finance"])

# group_by name → SQL expression over llm_calls. Only these names reach SQL.
GROUPS = {
    "team": "c.team",
    "project": "c.project",
    "user": "c.user_id",
    "app": "c.app",
    "route": "c.route",
    "provider": "c.provider",
    "model": "if(c.response_model != '', c.response_model, c.request_model)",
    "operation": "c.operation",
    "status": "c.status",
}
BUCKETS = {
    "hour": "toDateTime64(toStartOfHour(c.ts), 0, 'UTC')",
    "day": "toDateTime64(toStartOfDay(c.ts), 0, 'UTC')",
}

# Columns are qualified (c.) because each total's alias reuses its column's
# name, and ClickHouse would otherwise read the alias inside the next total.
SPEND_TOTALS = """
    count() AS calls,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(c.cache_write_tokens, 0)) AS cache_write_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.reasoning_tokens, 0)) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.input_tokens IS NOT NULL) AS unpriced_calls,
    countIf(c.status = 'error') AS error_calls
"""


def spend_query(group_by: list[str], granularity: str | None) -> str:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise HTTPException(
            400, f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    if granularity is not None and granularity not in BUCKETS:
        raise HTTPException(400, "granularity must be hour or day")
    keys = ([f"{BUCKETS[granularity]} AS period"] if granularity else []) + [
        f"{GROUPS[g]} AS `{g}`" for g in group_by
    ]
    names = (["period"] if granularity else []) + [f"`{g}`" for g in group_by]
    select = ", ".join(keys + [SPEND_TOTALS])
    group = f"GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if names else ""
    return (
        f"SELECT {select} FROM llm_calls AS c "
        "WHERE c.ts >= {start:DateTime64(6)} AND c.ts < {end:DateTime64(6)} "
        "AND ({team:String} = '' OR c.team = {team:String}) "
        "AND ({project:String} = '' OR c.project = {project:String}) "
        f"{group}"
    )


@router.get("/spend", summary="Cost and tokens by group and period")
def spend(
    request: Request,
    _caller: Caller("finance"),
    start: str | None = Query(
        None, alias="from", description="ISO 8601 or unix seconds; default 30 days before to"
    ),
    end: str | None = Query(None, alias="to", description="ISO 8601 or unix seconds; default now"),
    group_by: str | None = Query(None, description=f"comma-separated: {', '.join(GROUPS)}"),
    granularity: str | None = Query(None, description="hour or day; omit for one total per group"),
    team: str = "",
    project: str = "",
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = time_window(start, end, timedelta(days=30))
    groups = csv_list(group_by)
    sql = spend_query(groups, granularity)
    table = runtime.store.query_arrow(
        sql, {"start": frm, "end": to, "team": team, "project": project}
    )
    return {
        "from": frm.isoformat(),
        "to": to.isoformat(),
        "group_by": groups,
        "granularity": granularity,
        "rows": json_rows(table),
    }

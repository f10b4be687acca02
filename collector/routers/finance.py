"""Finance: spend and tokens, grouped and bucketed. Never content."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from analytics.spend import rollup_spend_query
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


# group_by=attr:<key> groups by any attribute the calls carry: the key as sent
# (an OTel attribute), else the proxy's tokentrail.tag.<key> (Helicone-Property-<Key>,
# Portkey and LiteLLM metadata), else tokentrail.<key>. A tag list (LiteLLM's
# x-litellm-tags, stored as tokentrail.tags) counts a call once under each tag.
ATTR_PREFIX = "attr:"
TAG_LISTS = ("tags", "tokentrail.tags")


def attribute_group(key: str, index: int, params: dict[str, Any]) -> str:
    """SQL for attr:<key>; the key is a bound parameter, never SQL text."""
    if not key or len(key) > 256:
        raise HTTPException(
            400, "attr: needs an attribute key of 1-256 characters, e.g. attr:feature"
        )
    name = f"attr{index}"
    params[name] = key
    p = f"{{{name}:String}}"
    value = (
        f"multiIf(mapContains(c.attributes, {p}), c.attributes[{p}], "
        f"mapContains(c.attributes, concat('tokentrail.tag.', {p})), "
        f"c.attributes[concat('tokentrail.tag.', {p})], "
        f"c.attributes[concat('tokentrail.', {p})])"
    )
    if key in TAG_LISTS:
        tags = f"arrayMap(t -> trimBoth(t), splitByChar(',', {value}))"
        return f"arrayJoin(if({value} = '', [''], {tags}))"
    return value


def group_alias(name: str, index: int) -> str:
    """Column alias in SQL: a known name, or attr_<n> (renamed back in the rows)."""
    return f"attr_{index}" if name.startswith(ATTR_PREFIX) else name


def spend_query(
    group_by: list[str], granularity: str | None, params: dict[str, Any] | None = None
) -> str:
    params = {} if params is None else params
    unknown = [g for g in group_by if g not in GROUPS and not g.startswith(ATTR_PREFIX)]
    if unknown:
        raise HTTPException(
            400,
            f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)} "
            "or attr:<key> for any attribute or tag",
        )
    if granularity is not None and granularity not in BUCKETS:
        raise HTTPException(400, "granularity must be hour or day")
    expressions = [
        attribute_group(g.removeprefix(ATTR_PREFIX), i, params)
        if g.startswith(ATTR_PREFIX)
        else GROUPS[g]
        for i, g in enumerate(group_by)
    ]
    aliases = [group_alias(g, i) for i, g in enumerate(group_by)]
    keys = ([f"{BUCKETS[granularity]} AS period"] if granularity else []) + [
        f"{expr} AS `{alias}`" for expr, alias in zip(expressions, aliases, strict=True)
    ]
    names = (["period"] if granularity else []) + [f"`{a}`" for a in aliases]
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
    group_by: str | None = Query(
        None, description=f"comma-separated: {', '.join(GROUPS)}, attr:<key> (any attribute or tag)"
    ),
    granularity: str | None = Query(None, description="hour or day; omit for one total per group"),
    team: str = "",
    project: str = "",
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = time_window(start, end, timedelta(days=30))
    groups = csv_list(group_by)
    params: dict[str, Any] = {"start": frm, "end": to, "team": team, "project": project}
    # Whole hours from the cost job's rollup when it can answer; the same sums.
    overlap = runtime.jobs.config.late_overlap_s if runtime.jobs else 0.0
    sql = rollup_spend_query(
        runtime.store, groups, granularity, frm, to, params, overlap
    ) or spend_query(groups, granularity, params)
    rows = json_rows(runtime.store.query_arrow(sql, params))
    renames = {group_alias(g, i): g for i, g in enumerate(groups) if g.startswith(ATTR_PREFIX)}
    if renames:
        rows = [{renames.get(k, k): v for k, v in row.items()} for row in rows]
    return {
        "from": frm.isoformat(),
        "to": to.isoformat(),
        "group_by": groups,
        "granularity": granularity,
        "rows": rows,
    }

"""Finance and engineers: the analytics jobs' outputs — cost, cache and failover
metrics — and budgets (finance).

Each metrics endpoint sums the job's table over whole windows in [from, to),
grouped by any of its dimensions and optionally bucketed; rates are computed
from the sums, never averaged. Nothing here returns prompt or response text,
except the near-duplicate examples of ``/metrics/cache`` for engineers (and
admins), a content read that is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.params import csv_list, time_window
from collector.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["metrics"])


@dataclass(frozen=True)
class Rollup:
    """A job table and how it may be grouped, bucketed and summed."""

    table: str
    time_column: str
    dimensions: dict[str, str]  # group_by name → column
    buckets: dict[str, str]  # granularity → bucket expression
    sums: str  # the SELECT list of totals (columns qualified with t.)

    def query(self, group_by: list[str], granularity: str | None, filters: list[str]) -> str:
        unknown = [g for g in group_by if g not in self.dimensions]
        if unknown:
            raise HTTPException(
                400,
                f"cannot group by {', '.join(unknown)}; choose from {', '.join(self.dimensions)}",
            )
        if granularity is not None and granularity not in self.buckets:
            raise HTTPException(400, f"granularity must be one of {', '.join(self.buckets)}")
        keys = ([f"{self.buckets[granularity]} AS period"] if granularity else []) + [
            f"t.{self.dimensions[g]} AS `{g}`" for g in group_by
        ]
        names = (["period"] if granularity else []) + [f"`{g}`" for g in group_by]
        where = [
            f"t.{self.time_column} >= {{start:DateTime64(0)}}",
            f"t.{self.time_column} < {{end:DateTime64(0)}}",
            *filters,
        ]
        group = f"GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if names else ""
        return (
            f"SELECT {', '.join([*keys, self.sums])} FROM {self.table} AS t "
            f"WHERE {' AND '.join(where)} {group} LIMIT {{limit:UInt32}}"
        )


def _buckets(column: str, five_minutes: bool = False) -> dict[str, str]:
    found = {
        "hour": f"toDateTime64(toStartOfHour(t.{column}), 0, 'UTC')",
        "day": f"toDateTime64(toStartOfDay(t.{column}), 0, 'UTC')",
    }
    return {"5m": f"t.{column}", **found} if five_minutes else found


def _rate(numerator: str, denominator: str) -> str:
    return f"if({denominator} > 0, {numerator} / {denominator}, 0)"


COST = Rollup(
    "cost_hourly",
    "hour",
    {
        "team": "team",
        "project": "project",
        "user": "user_id",
        "app": "app",
        "route": "route",
        "provider": "provider",
        "model": "model",
    },
    _buckets("hour"),
    ", ".join(
        [
            *(
                f"sum(t.{c}) AS {c}"
                for c in (
                    "calls",
                    "error_calls",
                    "unpriced_calls",
                    "input_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                    "cost_usd",
                )
            ),
            f"{_rate('toFloat64(sum(t.cost_usd)) * 1000', 'sum(t.calls)')} AS cost_per_1k_calls",
        ]
    ),
)

CACHE = Rollup(
    "cache_hourly",
    "hour",
    {"team": "team", "app": "app", "route": "route", "provider": "provider", "model": "model"},
    _buckets("hour"),
    ", ".join(
        [
            "sum(t.calls) AS calls",
            "sum(t.input_tokens) AS input_tokens",
            "sum(t.cache_read_tokens) AS cache_read_tokens",
            "sum(t.cache_write_tokens) AS cache_write_tokens",
            f"{_rate('sum(t.cache_read_tokens)', 'sum(t.input_tokens)')}"
            " AS provider_cache_hit_rate",
            "sum(t.provider_cache_savings_usd) AS provider_cache_savings_usd",
            "sum(t.gateway_hits) AS gateway_hits",
            "sum(t.gateway_misses) AS gateway_misses",
            f"{_rate('sum(t.gateway_hits)', 'sum(t.gateway_hits) + sum(t.gateway_misses)')}"
            " AS gateway_hit_rate",
            "sum(t.hashed_calls) AS hashed_calls",
            "sum(t.duplicate_calls) AS duplicate_calls",
            f"{_rate('sum(t.duplicate_calls)', 'sum(t.hashed_calls)')} AS duplicate_rate",
            "sum(t.exact_cache_savings_usd) AS exact_cache_savings_usd",
            "sum(t.cost_usd) AS cost_usd",
        ]
    ),
)

FAILOVER = Rollup(
    "failover_5m",
    "window_start",
    {"provider": "provider", "model": "model"},
    _buckets("window_start", five_minutes=True),
    ", ".join(
        [
            *(
                f"sum(t.{c}) AS {c}"
                for c in (
                    "attempts",
                    "ok",
                    "errors",
                    "errors_429",
                    "errors_5xx",
                    "errors_timeout",
                    "errors_other",
                )
            ),
            f"{_rate('sum(t.errors)', 'sum(t.attempts)')} AS error_rate",
            "sum(t.retries) AS retries",
            f"{_rate('sum(t.retries)', 'sum(t.attempts) - sum(t.retries)')} AS retries_per_call",
            "sum(t.chains) AS chains",
            "sum(t.chains_recovered) AS chains_recovered",
            "sum(t.fallback_chains) AS fallback_chains",
            "sum(t.fallback_chains_recovered) AS fallback_chains_recovered",
            f"{_rate('sum(t.fallback_chains_recovered)', 'sum(t.fallback_chains)')}"
            " AS fallback_success_rate",
            "sum(t.failed_input_tokens) AS failed_input_tokens",
            "sum(t.failed_output_tokens) AS failed_output_tokens",
            "sum(t.failed_cost_usd) AS failed_cost_usd",
        ]
    ),
)

NEAR_DUPLICATES_SQL = """
SELECT * FROM near_duplicates
WHERE computed_at = (SELECT max(computed_at) FROM near_duplicates)
  AND ({team:String} = '' OR team = {team:String})
  AND ({app:String} = '' OR app = {app:String})
  AND ({route:String} = '' OR route = {route:String})
ORDER BY savings_usd DESC, calls DESC, group_id
LIMIT {groups:UInt32}
"""
OUTAGES_SQL = """
SELECT provider, model, started_at, ended_at, windows, attempts, errors, peak_error_rate,
    recovered, time_to_recover_s, computed_at
FROM outages
WHERE computed_at = (SELECT max(computed_at) FROM outages)
  AND started_at < {end:DateTime64(0)} AND ended_at > {start:DateTime64(0)}
  AND ({provider:String} = '' OR provider = {provider:String})
  AND ({model:String} = '' OR model = {model:String})
ORDER BY started_at DESC
"""
FALLBACKS_SQL = """
SELECT from_provider, from_model, to_provider, to_model, sum(p.chains) AS chains,
    sum(p.recovered) AS recovered, if(chains > 0, recovered / chains, 0) AS success_rate,
    sum(p.calls) AS calls
FROM fallback_paths_5m AS p
WHERE p.window_start >= {start:DateTime64(0)} AND p.window_start < {end:DateTime64(0)}
  AND ({provider:String} = '' OR p.from_provider = {provider:String})
  AND ({model:String} = '' OR p.from_model = {model:String})
GROUP BY from_provider, from_model, to_provider, to_model
ORDER BY chains DESC
LIMIT 200
"""
CONTENT_FIELDS = ("example", "variants")


def _filters(values: dict[str, str], rollup: Rollup) -> tuple[list[str], dict[str, str]]:
    """Equality filters on dimensions, for the parameters given (empty = none)."""
    conditions, params = [], {}
    for name, value in values.items():
        if value:
            conditions.append(f"t.{rollup.dimensions[name]} = {{f_{name}:String}}")
            params[f"f_{name}"] = value
    return conditions, params


def _aligned(frm: datetime, seconds: int) -> datetime:
    """The start of the window holding ``frm``: a window counts when it starts in range."""
    return frm - timedelta(seconds=int(frm.timestamp()) % seconds, microseconds=frm.microsecond)


def _rollup(
    runtime: Runtime,
    rollup: Rollup,
    frm: datetime,
    to: datetime,
    group_by: list[str],
    granularity: str | None,
    filters: dict[str, str],
    limit: int,
) -> list[dict[str, Any]]:
    conditions, params = _filters(filters, rollup)
    sql = rollup.query(group_by, granularity, conditions)
    table = runtime.store.query_arrow(sql, {**params, "start": frm, "end": to, "limit": limit})
    return json_rows(table)


def _window(
    start: str | None, end: str | None, default: timedelta, seconds: int
) -> tuple[datetime, datetime]:
    frm, to = time_window(start, end, default)
    return _aligned(frm, seconds), to


FROM_DOC = "ISO 8601 or unix seconds; windows that start in [from, to) count"


@router.get("/metrics/cost", summary="cost_hourly: spend and tokens by attribution and period")
def cost_metrics(
    request: Request,
    _caller: Caller("finance", "engineer"),
    start: str | None = Query(None, alias="from", description=FROM_DOC + "; default 30 days"),
    end: str | None = Query(None, alias="to", description="default now"),
    group_by: str = Query("team", description=f"comma-separated: {', '.join(COST.dimensions)}"),
    granularity: str | None = Query(None, description="hour or day; omit for totals"),
    team: str = "",
    project: str = "",
    user: str = "",
    app: str = "",
    route: str = "",
    provider: str = "",
    model: str = "",
    limit: int = Query(10_000, ge=1, le=100_000),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = _window(start, end, timedelta(days=30), 3600)
    groups = csv_list(group_by)
    filters = {"team": team, "project": project, "user": user, "app": app, "route": route}
    filters |= {"provider": provider, "model": model}
    rows = _rollup(runtime, COST, frm, to, groups, granularity, filters, limit)
    return {"from": frm.isoformat(), "to": to.isoformat(), "group_by": groups, "rows": rows}


@router.get("/metrics/cache", summary="Cache hit rates, savings, exact and near duplicates")
def cache_metrics(
    request: Request,
    caller: Caller("finance", "engineer"),
    start: str | None = Query(None, alias="from", description=FROM_DOC + "; default 7 days"),
    end: str | None = Query(None, alias="to", description="default now"),
    group_by: str = Query(
        "team,app,route,model", description=f"comma-separated: {', '.join(CACHE.dimensions)}"
    ),
    granularity: str | None = Query(None, description="hour or day; omit for totals"),
    team: str = "",
    app: str = "",
    route: str = "",
    provider: str = "",
    model: str = "",
    limit: int = Query(10_000, ge=1, le=100_000),
    duplicates: int = Query(50, ge=0, le=500, description="near-duplicate groups to return"),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = _window(start, end, timedelta(days=7), 3600)
    groups = csv_list(group_by)
    filters = {"team": team, "app": app, "route": route, "provider": provider, "model": model}
    rows = _rollup(runtime, CACHE, frm, to, groups, granularity, filters, limit)
    totals = _rollup(runtime, CACHE, frm, to, [], None, filters, 1)
    found = json_rows(
        runtime.store.query_arrow(
            NEAR_DUPLICATES_SQL, {"team": team, "app": app, "route": route, "groups": duplicates}
        )
    )
    with_content = caller.role in ("engineer", "admin")
    if not with_content:
        for group in found:
            for field in CONTENT_FIELDS:
                group.pop(field, None)
    elif found:
        runtime.audit.append(
            caller.name,
            caller.role,
            "metrics.duplicates.read",
            "near_duplicates",
            {"team": team, "app": app, "route": route, "groups": len(found)},
        )
    first = found[0] if found else {}
    return {
        "from": frm.isoformat(),
        "to": to.isoformat(),
        "group_by": groups,
        "rows": rows,
        "totals": totals[0] if totals else {},
        "near_duplicates": {
            "computed_at": first.get("computed_at"),
            "period_start": first.get("period_start"),
            "period_end": first.get("period_end"),
            "min_similarity": first.get("min_similarity"),
            "examples_included": with_content,
            "groups": [
                {k: v for k, v in g.items() if k not in ("computed_at", "period_start")}
                for g in found
            ],
        },
    }


@router.get("/metrics/failover", summary="Errors, retries, fallback chains and outages")
def failover_metrics(
    request: Request,
    _caller: Caller("finance", "engineer"),
    start: str | None = Query(None, alias="from", description=FROM_DOC + "; default 24 hours"),
    end: str | None = Query(None, alias="to", description="default now"),
    group_by: str = Query("provider,model", description="comma-separated: provider, model"),
    granularity: str | None = Query("5m", description="5m, hour or day; empty for totals"),
    provider: str = "",
    model: str = "",
    limit: int = Query(10_000, ge=1, le=100_000),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = _window(start, end, timedelta(days=1), 300)
    groups = csv_list(group_by)
    filters = {"provider": provider, "model": model}
    rows = _rollup(runtime, FAILOVER, frm, to, groups, granularity or None, filters, limit)
    totals = _rollup(runtime, FAILOVER, frm, to, [], None, filters, 1)
    params = {"start": frm, "end": to, "provider": provider, "model": model}
    outages = json_rows(runtime.store.query_arrow(OUTAGES_SQL, params))
    fallbacks = json_rows(runtime.store.query_arrow(FALLBACKS_SQL, params))
    return {
        "from": frm.isoformat(),
        "to": to.isoformat(),
        "group_by": groups,
        "granularity": granularity or None,
        "rows": rows,
        "totals": totals[0] if totals else {},
        "outages": outages,
        "fallbacks": fallbacks,
    }


BUDGETS_SQL = """
SELECT * FROM budget_status
WHERE computed_at = (SELECT max(computed_at) FROM budget_status)
ORDER BY budget
"""
ALERTS_SQL = """
SELECT period_start, budget, kind, threshold_pct, raised_at, amount_usd, spent_usd, forecast_usd,
    message, delivered_at, attempts, last_error
FROM budget_alerts FINAL
WHERE period_start >= {since:DateTime64(0)}
ORDER BY raised_at DESC, budget, kind, threshold_pct
"""


@router.get("/budgets", summary="Budgets: month-to-date spend, forecast, status and alerts")
def budgets(request: Request, _caller: Caller("finance")) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    rows = json_rows(runtime.store.query_arrow(BUDGETS_SQL))
    for row in rows:
        row["daily"] = [
            {"day": str(day), "cost_usd": float(cost)}
            for day, cost in zip(row.pop("days"), row.pop("daily_cost_usd"), strict=True)
        ]
    since = rows[0]["period_start"] if rows else "1970-01-01T00:00:00+00:00"
    alerts = json_rows(
        runtime.store.query_arrow(ALERTS_SQL, {"since": datetime.fromisoformat(since)})
    )
    assert runtime.jobs is not None
    return {
        "computed_at": rows[0]["computed_at"] if rows else None,
        "configured": len(runtime.jobs.config.budgets),
        "rows": rows,
        "alerts": alerts,
    }

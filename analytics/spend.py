"""Spend from the cost_hourly rollup where it is complete, from llm_calls elsewhere.

``GET /api/v1/spend`` sums raw calls by default. When every group it asks for
is a cost_hourly dimension, the whole hours of the range come from the
rollup instead — a few rows per hour and attribution instead of every call —
except the hours that hold calls ingested after the last cost run saw them
("dirty" hours, late data included), which are summed from llm_calls, as are
the partial hours at either end. The answer is the same to the last decimal;
only the work differs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from analytics.frames import BILLED_MODEL_SQL
from ingest.store import Store, query_rows

# group_by name → (cost_hourly column, llm_calls expression)
ROLLUP_GROUPS = {
    "team": ("team", "c.team"),
    "project": ("project", "c.project"),
    "user": ("user_id", "c.user_id"),
    "app": ("app", "c.app"),
    "route": ("route", "c.route"),
    "provider": ("provider", "c.provider"),
    "model": ("model", BILLED_MODEL_SQL),
}
BUCKETS = {
    "hour": ("h.hour", "toDateTime64(toStartOfHour(c.ts), 0, 'UTC')"),
    "day": (
        "toDateTime64(toStartOfDay(h.hour), 0, 'UTC')",
        "toDateTime64(toStartOfDay(c.ts), 0, 'UTC')",
    ),
}
TOTALS = (
    "calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
    "error_calls",
)
RAW_TOTALS = """count() AS calls,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(c.cache_write_tokens, 0)) AS cache_write_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.reasoning_tokens, 0)) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.input_tokens IS NOT NULL) AS unpriced_calls,
    countIf(c.status = 'error') AS error_calls"""
FILTERS = (
    "({team:String} = '' OR {t}.team = {team:String})",
    "({project:String} = '' OR {t}.project = {project:String})",
)


def _hour_ceil(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


def complete_until(store: Store) -> datetime | None:
    """The newest ingested_at the cost job has summed (None before its first run)."""
    rows = query_rows(
        store,
        "SELECT max(high_water) AS hw, count() AS n FROM job_runs "
        "WHERE job = 'cost' AND status = 'ok'",
    )
    return rows[0]["hw"] if rows and rows[0]["n"] else None


def rollup_spend_query(
    store: Store,
    group_by: list[str],
    granularity: str | None,
    start: datetime,
    end: datetime,
    params: dict[str, Any],
    overlap_s: float,
) -> str | None:
    """SQL answering the spend query from cost_hourly plus the raw calls it lacks,
    or None when it cannot (a group the rollup lacks, no cost run yet, no whole hour)."""
    if any(g not in ROLLUP_GROUPS for g in group_by) or granularity not in (None, *BUCKETS):
        return None
    seen = complete_until(store)
    lo, hi = _hour_ceil(start), end.replace(minute=0, second=0, microsecond=0)
    if seen is None or hi <= lo:
        return None
    dirty = query_rows(
        store,
        "SELECT DISTINCT toUInt32(toStartOfHour(ts)) AS h FROM llm_calls "
        "WHERE ingested_at > {seen:DateTime64(3)} AND ts >= {lo:DateTime64(6)} "
        "AND ts < {hi:DateTime64(6)}",
        {"seen": seen - timedelta(seconds=overlap_s), "lo": lo, "hi": hi},
    )
    params.update({"whole_lo": lo, "whole_hi": hi, "dirty": [int(r["h"]) for r in dirty]})
    period = BUCKETS[granularity] if granularity else None
    rollup_keys = ([f"{period[0]} AS period"] if period else []) + [
        f"h.{ROLLUP_GROUPS[g][0]} AS `{g}`" for g in group_by
    ]
    raw_keys = ([f"{period[1]} AS period"] if period else []) + [
        f"{ROLLUP_GROUPS[g][1]} AS `{g}`" for g in group_by
    ]
    names = (["period"] if period else []) + [f"`{g}`" for g in group_by]
    raw_group = f"GROUP BY {', '.join(names)}" if names else ""
    outer_group = f"GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if names else ""
    rollup_filters = " AND ".join(f.replace("{t}", "h") for f in FILTERS)
    raw_filters = " AND ".join(f.replace("{t}", "c") for f in FILTERS)
    return f"""
SELECT {", ".join([*names, *(f"sum(u.{t}) AS {t}" for t in TOTALS)])}
FROM (
    SELECT {", ".join([*rollup_keys, *(f"h.{t} AS {t}" for t in TOTALS)])}
    FROM cost_hourly AS h
    WHERE h.hour >= {{whole_lo:DateTime64(0)}} AND h.hour < {{whole_hi:DateTime64(0)}}
      AND NOT has({{dirty:Array(UInt32)}}, toUInt32(h.hour)) AND {rollup_filters}
    UNION ALL
    SELECT {", ".join([*raw_keys, RAW_TOTALS])}
    FROM llm_calls AS c
    WHERE c.ts >= {{start:DateTime64(6)}} AND c.ts < {{end:DateTime64(6)}}
      AND (c.ts < {{whole_lo:DateTime64(6)}} OR c.ts >= {{whole_hi:DateTime64(6)}}
           OR has({{dirty:Array(UInt32)}}, toUInt32(toStartOfHour(c.ts))))
      AND {raw_filters}
    {raw_group}
) AS u
{outer_group}
"""

"""Cost job: spend and tokens per hour by team, project, user, app, route, provider, model.

``cost_hourly(calls)`` is the whole computation; ``run`` sums each hour in
ClickHouse first (a few thousand rows an hour instead of every call), hands
the sums to it and replaces the hours it recomputed in ``cost_hourly``.
Costs stay Decimal(38, 12) end to end, so a team's spend is the exact sum of
its calls' costs.
"""

from __future__ import annotations

import polars as pl

from analytics.context import JobContext, JobOutcome
from analytics.frames import BILLED_MODEL_SQL, billed_model, count, usd, with_defaults
from analytics.store_io import HOUR, read_frame, write_version
from analytics.tables import COST_HOURLY, to_arrow

NAME = "cost"
KEYS = ("hour", "team", "project", "user_id", "app", "route", "provider", "model")
COUNTS = (
    "calls",
    "error_calls",
    "unpriced_calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)

# Grouping by one hash of the attribution (carrying the strings with any())
# is several times faster in ClickHouse than grouping by the seven strings.
# Columns are qualified (c.) because each total's alias reuses a column name.
READ_SQL = f"""
SELECT
    toDateTime64(toStartOfHour(c.ts), 0, 'UTC') AS hour,
    cityHash64(c.team, c.project, c.user_id, c.app, c.route, c.provider, {BILLED_MODEL_SQL})
        AS attribution,
    any(c.team) AS team, any(c.project) AS project, any(c.user_id) AS user_id,
    any(c.app) AS app, any(c.route) AS route, any(c.provider) AS provider,
    any({BILLED_MODEL_SQL}) AS model,
    count() AS calls,
    countIf(c.status = 'error') AS error_calls,
    countIf(c.cost_usd IS NULL AND c.input_tokens IS NOT NULL) AS unpriced_calls,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.cache_read_tokens, 0)) AS cache_read_tokens,
    sum(ifNull(c.cache_write_tokens, 0)) AS cache_write_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.reasoning_tokens, 0)) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd
FROM llm_calls AS c
WHERE {{where}}
GROUP BY hour, attribution
"""


def call_groups(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Raw llm_calls rows as groups of one; summed rows pass through."""
    if "calls" in calls.collect_schema().names():
        return calls
    calls = with_defaults(
        calls,
        {
            "reasoning_tokens": pl.lit(None, pl.UInt64),
            "cache_write_tokens": pl.lit(None, pl.UInt64),
            "cache_read_tokens": pl.lit(None, pl.UInt64),
            "response_model": pl.lit(""),
        },
    )
    return calls.with_columns(
        hour=pl.col("ts").dt.truncate("1h"),
        model=billed_model(),
        calls=pl.lit(1, pl.UInt64),
        error_calls=(pl.col("status") == "error").cast(pl.UInt64),
        unpriced_calls=(pl.col("cost_usd").is_null() & pl.col("input_tokens").is_not_null()).cast(
            pl.UInt64
        ),
    )


def cost_hourly(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Per hour and attribution: calls, tokens, cost_usd and cost per 1K calls."""
    return (
        call_groups(calls)
        .group_by(KEYS)
        .agg(*(count(pl.col(c)).sum().alias(c) for c in COUNTS), usd("cost_usd").sum())
        .with_columns(
            cost_per_1k_calls=pl.col("cost_usd").cast(pl.Float64) * 1000 / pl.col("calls"),
        )
    )


def run(ctx: JobContext) -> JobOutcome:
    starts = ctx.windows(HOUR)
    outcome = JobOutcome(windows=len(starts))
    for chunk in ctx.chunks(starts, HOUR):
        sums = read_frame(ctx.store, READ_SQL.format(where=chunk.where("c.ts")), chunk.params())
        frame = cost_hourly(sums).with_columns(computed_at=pl.lit(ctx.now)).collect()
        outcome.rows += write_version(
            ctx.store, "cost_hourly_versions", to_arrow(frame, COST_HOURLY)
        )
    return outcome

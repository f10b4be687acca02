"""Failover job: errors by class, retries, fallback chains and outages, per 5 minutes,
provider and model (the model requested).

Chains — which call is the next attempt at a failed request — are found by
``analytics.chains``; they count in the window of their first call, retries
in the window of the retry.

An *outage* is a run of at least ``outage_min_windows`` consecutive windows
whose error rate is over ``outage_error_rate`` with at least
``outage_min_attempts`` attempts; it has recovered when a later window with
traffic is healthy, and its time to recover is its start to its end.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from analytics.chains import KEYS, WINDOW, chain_links, chains, retries
from analytics.context import JobContext, JobOutcome
from analytics.frames import (
    REQUESTED_MODEL_SQL,
    count,
    error_class,
    requested_model,
    usd,
    with_defaults,
)
from analytics.store_io import (
    FIVE_MINUTES,
    WindowSet,
    read_frame,
    replace_snapshot,
    write_version,
)
from analytics.tables import FAILOVER_5M, FALLBACK_PATHS_5M, OUTAGES, USD_POLARS, to_arrow

NAME = "failover"

SUMS_SQL = f"""
SELECT toDateTime64(toStartOfFiveMinutes(c.ts), 0, 'UTC') AS window_start,
    cityHash64(c.provider, {REQUESTED_MODEL_SQL}, c.status, c.error_type) AS kind,
    c.http_status AS http_status,
    any(c.provider) AS provider, any({REQUESTED_MODEL_SQL}) AS model,
    any(c.status) AS status, any(c.error_type) AS error_type,
    count() AS calls,
    sum(ifNull(c.input_tokens, 0)) AS input_tokens,
    sum(ifNull(c.output_tokens, 0)) AS output_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd
FROM llm_calls AS c
WHERE {{where}}
GROUP BY window_start, kind, http_status
"""

# Every call that can be part of a chain: failures, explicit retries and
# fallbacks, calls in a trace with a failure, and calls from a caller in the
# minutes during and after one of its failures (as far as reach seconds). The
# prompt is hashed only for the calls selected.
CHAIN_SQL = f"""
SELECT c.ts AS ts, c.span_id AS span_id, c.trace_id AS trace_id, c.provider AS provider,
    {REQUESTED_MODEL_SQL} AS model, c.status AS status, c.attempt AS attempt,
    c.retry_of AS retry_of, c.fallback_of AS fallback_of,
    c.api_key_fingerprint AS api_key_fingerprint, c.user_id AS user_id, c.app AS app,
    if(c.input_content = '', toUInt64(0), cityHash64(c.input_content)) AS prompt_id
FROM llm_calls AS c
WHERE {{where}} AND (
    c.status = 'error' OR c.attempt > 0 OR c.retry_of != '' OR c.fallback_of != ''
    OR (c.trace_id != '' AND c.trace_id IN (
        SELECT trace_id FROM llm_calls WHERE {{inner}} AND status = 'error' AND trace_id != ''))
    OR ((c.api_key_fingerprint, c.user_id, c.app, toStartOfMinute(c.ts)) IN (
        SELECT api_key_fingerprint, user_id, app,
            arrayJoin(arrayMap(m -> toStartOfMinute(ts) + toIntervalMinute(m),
                               range(toUInt32(intDiv({{{{reach:UInt32}}}}, 60) + 2))))
        FROM llm_calls WHERE {{inner}} AND status = 'error' AND input_content != ''))
)
"""


def window_sums(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Raw llm_calls rows → what SUMS_SQL returns (summed rows pass through)."""
    if "calls" in calls.collect_schema().names():
        return calls
    calls = with_defaults(calls, {"response_model": pl.lit(""), "error_type": pl.lit("")})
    return calls.with_columns(
        window_start=pl.col("ts").dt.truncate(WINDOW),
        model=requested_model(),
        calls=pl.lit(1, pl.UInt64),
    )


def failover_windows(
    sums: pl.LazyFrame, chain_calls: pl.LazyFrame, window_s: float
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(failover_5m rows, fallback_paths_5m rows).

    ``sums``: calls summed per window, provider, model, status, http_status and
    error_type — or raw llm_calls rows. ``chain_calls``: the calls that may be
    part of a chain (raw rows; all calls will do)."""
    classified = window_sums(sums).with_columns(
        pl.col("window_start").cast(pl.Datetime("us", "UTC")), error_class=error_class()
    )
    failed = pl.col("status") == "error"

    def of_class(name: str) -> pl.Expr:
        return pl.col("calls").filter(pl.col("error_class") == name).sum().cast(pl.UInt64)

    counts = classified.group_by(KEYS).agg(
        attempts=pl.col("calls").sum().cast(pl.UInt64),
        ok=pl.col("calls").filter(pl.col("status") == "ok").sum().cast(pl.UInt64),
        errors=pl.col("calls").filter(failed).sum().cast(pl.UInt64),
        errors_429=of_class("429"),
        errors_5xx=of_class("5xx"),
        errors_timeout=of_class("timeout"),
        errors_other=of_class("other"),
        failed_input_tokens=count(pl.col("input_tokens")).filter(failed).sum(),
        failed_output_tokens=count(pl.col("output_tokens")).filter(failed).sum(),
        failed_cost_usd=usd("cost_usd").filter(failed).sum(),
    )
    links = chain_links(chain_calls, window_s)
    found = chains(links).with_columns(window_start=pl.col("ts").dt.truncate(WINDOW))
    per_root = found.group_by(KEYS).agg(
        chains=pl.len().cast(pl.UInt64),
        chains_recovered=pl.col("recovered").sum().cast(pl.UInt64),
        fallback_chains=pl.col("fallback").sum().cast(pl.UInt64),
        fallback_chains_recovered=(pl.col("fallback") & pl.col("recovered")).sum().cast(pl.UInt64),
    )
    zero = pl.lit(0, pl.UInt64)
    windows = (
        counts.join(retries(chain_calls, links).lazy(), on=KEYS, how="left", nulls_equal=True)
        .join(per_root.lazy(), on=KEYS, how="left", nulls_equal=True)
        .with_columns(
            *(
                pl.col(c).fill_null(zero)
                for c in (
                    "retries",
                    "chains",
                    "chains_recovered",
                    "fallback_chains",
                    "fallback_chains_recovered",
                )
            ),
            error_rate=(pl.col("errors") / pl.col("attempts")).cast(pl.Float64),
        )
        .with_columns(
            retries_per_call=(
                pl.col("retries") / (pl.col("attempts") - pl.col("retries")).clip(lower_bound=1)
            ).cast(pl.Float64),
            failed_cost_usd=pl.col("failed_cost_usd").cast(USD_POLARS),
        )
    )
    paths = (
        found.filter(pl.col("fallback"))
        .group_by("window_start", "provider", "model", "to_provider", "to_model")
        .agg(
            chains=pl.len().cast(pl.UInt64),
            recovered=pl.col("recovered").sum().cast(pl.UInt64),
            calls=pl.col("calls").sum().cast(pl.UInt64),
        )
        .rename({"provider": "from_provider", "model": "from_model"})
    )
    return windows, paths.lazy()


def _runs(entries: list[dict], step: timedelta) -> list[tuple[int, int]]:
    """(first, last) indexes of each run of consecutive bad windows."""
    runs: list[tuple[int, int]] = []
    for index, entry in enumerate(entries):
        if not entry["bad"]:
            continue
        if (
            runs
            and runs[-1][1] == index - 1
            and entry["window_start"] - entries[index - 1]["window_start"] == step
        ):
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


OUTAGE_TYPES = {
    "provider": pl.String,
    "model": pl.String,
    "started_at": pl.Datetime("us", "UTC"),
    "ended_at": pl.Datetime("us", "UTC"),
    "windows": pl.UInt32,
    "attempts": pl.UInt64,
    "errors": pl.UInt64,
    "peak_error_rate": pl.Float64,
    "recovered": pl.Boolean,
    "time_to_recover_s": pl.Float64,
}


def outages(
    windows: pl.LazyFrame, error_rate: float, min_attempts: int, min_windows: int
) -> pl.LazyFrame:
    """Runs of consecutive bad 5-minute windows per provider and model.

    ``windows``: window_start, provider, model, attempts, errors (failover_5m).
    A window is bad with at least ``min_attempts`` attempts and an error rate
    over ``error_rate``; an outage has recovered once a later window's error
    rate is at or under it."""
    step = timedelta(minutes=5)
    rate = pl.col("errors") / pl.col("attempts")
    frame = (
        windows.select(*KEYS, "attempts", "errors")
        .filter(pl.col("attempts") > 0)
        .with_columns(
            bad=(pl.col("attempts") >= min_attempts) & (rate > error_rate),
            healthy=rate <= error_rate,
        )
        .sort("provider", "model", "window_start")
        .collect()
    )
    rows = []
    for (provider, model), group in frame.group_by("provider", "model", maintain_order=True):
        entries = list(group.iter_rows(named=True))
        for first, last in _runs(entries, step):
            run = entries[first : last + 1]
            if len(run) < min_windows:
                continue
            started, ended = run[0]["window_start"], run[-1]["window_start"] + step
            recovered = any(e["healthy"] for e in entries[last + 1 :])
            rows.append(
                {
                    "provider": provider,
                    "model": model,
                    "started_at": started,
                    "ended_at": ended,
                    "windows": len(run),
                    "attempts": sum(e["attempts"] for e in run),
                    "errors": sum(e["errors"] for e in run),
                    "peak_error_rate": max(e["errors"] / e["attempts"] for e in run),
                    "recovered": recovered,
                    "time_to_recover_s": (ended - started).total_seconds() if recovered else None,
                }
            )
    return pl.LazyFrame(rows, schema=OUTAGE_TYPES)


OUTAGE_WINDOWS_SQL = """
SELECT window_start, provider, model, attempts, errors FROM failover_5m
WHERE window_start >= {since:DateTime64(0)}
"""


def _write_chunk(ctx: JobContext, chunk: WindowSet) -> int:
    margin = ctx.config.fallback_window_s
    sums = read_frame(ctx.store, SUMS_SQL.format(where=chunk.where("c.ts")), chunk.params())
    chain_sql = CHAIN_SQL.format(where=chunk.where("c.ts", margin), inner=chunk.where("ts", margin))
    chain_calls = read_frame(ctx.store, chain_sql, {**chunk.params(margin), "reach": int(margin)})
    windows, paths = failover_windows(sums, chain_calls, margin)
    mine = pl.col("window_start").dt.epoch("s").is_in(chunk.starts)
    stamp = pl.lit(ctx.now)
    window_rows = windows.filter(mine).with_columns(computed_at=stamp).collect()
    path_rows = paths.filter(mine).with_columns(computed_at=stamp).collect()
    # Paths first: the paths view follows failover_5m's newest version per window.
    written = write_version(
        ctx.store, "fallback_paths_5m_versions", to_arrow(path_rows, FALLBACK_PATHS_5M)
    )
    return written + write_version(
        ctx.store, "failover_5m_versions", to_arrow(window_rows, FAILOVER_5M)
    )


def _write_outages(ctx: JobContext) -> int:
    since = (ctx.now - timedelta(days=ctx.config.outage_lookback_days)).replace(microsecond=0)
    windows = read_frame(ctx.store, OUTAGE_WINDOWS_SQL, {"since": since})
    found = (
        outages(
            windows,
            ctx.config.outage_error_rate,
            ctx.config.outage_min_attempts,
            ctx.config.outage_min_windows,
        )
        .with_columns(computed_at=pl.lit(ctx.now))
        .collect()
    )
    return replace_snapshot(ctx.store, "outages", to_arrow(found, OUTAGES), ctx.now)


def run(ctx: JobContext) -> JobOutcome:
    # A late call can extend a chain that started up to fallback_window_s before it.
    starts = ctx.windows(FIVE_MINUTES, reach_back_s=ctx.config.fallback_window_s)
    outcome = JobOutcome(windows=len(starts))
    for chunk in ctx.chunks(starts, FIVE_MINUTES):
        outcome.rows += _write_chunk(ctx, chunk)
    outages_found = _write_outages(ctx)
    outcome.rows += outages_found
    outcome.details["outages"] = outages_found
    return outcome


def active_outages(found: pl.DataFrame, now: datetime, recent_s: float = 900) -> pl.DataFrame:
    """Outages still going on: not recovered, and bad as of the last 15 minutes."""
    return found.filter(
        ~pl.col("recovered") & (pl.col("ended_at") >= pl.lit(now - timedelta(seconds=recent_s)))
    )

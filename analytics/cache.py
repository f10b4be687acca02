"""Cache job: what caching saved and what it could still save, per hour, team, app, route, model.

- Provider prompt cache: hit rate = cache-read tokens / input tokens; savings
  = what the cached tokens would have cost as plain input minus what they
  cost (cache reads cheaper, cache writes dearer where a provider charges
  more for them), at the prices the calls were costed with — the genai-prices
  list or your overrides, at the model's base tier.
- Gateway cache (LiteLLM, Portkey, Helicone, Cloudflare): hits / lookups.
- Exact duplicates: a successful call whose request (same ``request_hash`` —
  provider, model and prompt) already succeeded earlier in the same hour is
  one an exact cache would have answered; its cost is what it would have saved.

The job also records, for the hours the near-duplicate report covers, one
fingerprint per distinct prompt (``prompt_fingerprints``; see
``analytics.duplicates``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import polars as pl

from analytics.context import JobContext, JobOutcome
from analytics.frames import BILLED_MODEL_SQL, billed_model, count, usd, with_defaults
from analytics.store_io import HOUR, WindowSet, read_frame, write_version
from analytics.tables import CACHE_HOURLY, USD_POLARS, to_arrow
from ingest.pricing import PriceBook, price_call

NAME = "cache"
KEYS = ("hour", "team", "app", "route", "provider", "model")
SUMS = (
    "calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "gateway_hits",
    "gateway_misses",
    "hashed_calls",
    "duplicate_calls",
)
# Tokens a savings rate is probed with: small enough for every model's base tier.
_PROBE = 1000

# Per request hash first (an hour's calls of one request), then per group,
# grouping by hashes (numbers) and joining the group's names once at the end:
# much faster in ClickHouse than grouping by the strings. Successful calls a
# gateway cache served are not counted again as duplicates.
GROUP_SQL = f"cityHash64(c.team, c.app, c.route, c.provider, {BILLED_MODEL_SQL})"
READ_SQL = f"""
SELECT hour, team, app, route, provider, model, calls, input_tokens, cache_read_tokens,
    cache_write_tokens, gateway_hits, gateway_misses, hashed_calls, duplicate_calls,
    exact_cache_savings_usd, cost_usd
FROM (
    SELECT hour, grp,
        sum(n) AS calls,
        sum(input) AS input_tokens,
        sum(cache_read) AS cache_read_tokens,
        sum(cache_write) AS cache_write_tokens,
        sum(hits) AS gateway_hits,
        sum(misses) AS gateway_misses,
        sumIf(n, h != 0) AS hashed_calls,
        sumIf(ok_n - 1, h != 0 AND ok_n > 1) AS duplicate_calls,
        sumIf(ok_cost - first_ok_cost, h != 0 AND ok_n > 1) AS exact_cache_savings_usd,
        sum(cost) AS cost_usd
    FROM (
        SELECT toDateTime64(toStartOfHour(c.ts), 0, 'UTC') AS hour, {GROUP_SQL} AS grp,
            if(c.request_hash = '', toUInt64(0), cityHash64(c.request_hash)) AS h,
            count() AS n,
            sum(ifNull(c.input_tokens, 0)) AS input,
            sum(ifNull(c.cache_read_tokens, 0)) AS cache_read,
            sum(ifNull(c.cache_write_tokens, 0)) AS cache_write,
            countIf(c.gateway_cache = 'hit') AS hits,
            countIf(c.gateway_cache = 'miss') AS misses,
            sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost,
            countIf(c.status = 'ok' AND c.gateway_cache != 'hit') AS ok_n,
            sumIf(ifNull(c.cost_usd, toDecimal128(0, 12)),
                  c.status = 'ok' AND c.gateway_cache != 'hit') AS ok_cost,
            argMinIf(ifNull(c.cost_usd, toDecimal128(0, 12)), c.ts,
                     c.status = 'ok' AND c.gateway_cache != 'hit') AS first_ok_cost
        FROM llm_calls AS c
        WHERE {{where}}
        GROUP BY hour, grp, h
    )
    GROUP BY hour, grp
) AS sums
INNER JOIN (
    SELECT {GROUP_SQL} AS grp, any(c.team) AS team, any(c.app) AS app, any(c.route) AS route,
        any(c.provider) AS provider, any({BILLED_MODEL_SQL}) AS model
    FROM llm_calls AS c
    WHERE {{where}}
    GROUP BY grp
) AS names USING (grp)
"""

# The prompt text a near-duplicate is judged on: the last text in the prompt
# (the newest message, its first 600 characters), lower-cased, JSON escapes
# and punctuation removed (``tokens`` splits on ASCII non-alphanumerics).
# context_id hashes the texts between the first (system) and the last, so two
# turns of different conversations, or two steps of one agent, never match.
TEXT_PARTS_RE = r'"(?:content|text|system|result|arguments)"\s*:\s*"((?:[^"\\]|\\.)*)"'
JSON_ESCAPES_RE = r"\\(?:u[0-9a-fA-F]{4}|.)"
# Written by INSERT … SELECT: the text never leaves ClickHouse, and the
# functions it needs (extractAll, tokens, ngrams) are there. Nested subqueries make
# ClickHouse compute each step once per call.
FINGERPRINT_SQL = """
INSERT INTO prompt_fingerprints (hour, team, app, route, context_id, text_id, text, lsh_keys,
    calls, ok_calls, cost_usd, first_ts, first_cost_usd, last_ts, computed_at)
SELECT hour, team, app, route, context_id, text_id, text,
    arrayFilter(k -> k != 0, [
        if(length(grams) >= 2, cityHash64(arraySlice(grams, 1, 2)), 0),
        if(length(grams) >= 2, cityHash64(arraySlice(grams, -2, 2)), 0)]),
    calls, ok_calls, cost_usd, first_ts, first_cost_usd, last_ts, {{now:DateTime64(3)}}
FROM (
    SELECT *, arraySort(arrayDistinct(arrayMap(g -> cityHash64(g), ngrams(text, 4)))) AS grams
    FROM (
        SELECT hour, any(team) AS team, any(app) AS app, any(route) AS route, context_id,
            text_id, any(norm) AS text, count() AS calls, countIf(ok) AS ok_calls,
            sum(cost) AS cost_usd, min(ts) AS first_ts, argMin(cost, ts) AS first_cost_usd,
            max(ts) AS last_ts
        FROM (
            SELECT hour, team, app, route, scope, ts, ok, cost, norm,
                cityHash64(norm) AS text_id, context_id
            FROM (
                SELECT hour, team, app, route, scope, ts, ok, cost,
                    arrayStringConcat(tokens(lowerUTF8(replaceRegexpAll(
                        substringUTF8(if(empty(parts), content, parts[-1]), 1, 600),
                        {{escapes_re:String}}, ' '))), ' ') AS norm,
                    cityHash64(arrayStringConcat(
                        arraySlice(parts, 2, greatest(length(parts) - 2, 0)), ' ')) AS context_id
                FROM (
                    SELECT toDateTime64(toStartOfHour(c.ts), 0, 'UTC') AS hour,
                        c.team AS team, c.app AS app, c.route AS route,
                        cityHash64(c.team, c.app, c.route) AS scope, c.ts AS ts,
                        c.status = 'ok' AS ok, ifNull(c.cost_usd, toDecimal128(0, 12)) AS cost,
                        c.input_content AS content,
                        extractAll(c.input_content, {{parts_re:String}}) AS parts
                    FROM llm_calls AS c
                    WHERE {where} AND c.input_content != ''
                )
            )
            WHERE norm != ''
        )
        GROUP BY hour, scope, context_id, text_id
    )
)
"""


def saving_rates(book: PriceBook, models: Iterable[tuple[str, str]]) -> pl.LazyFrame:
    """USD saved per cache-read token and per cache-write token (negative
    where writes cost more than plain input), per (provider, model);
    NULL for a model without a price."""
    rows = []
    for provider, model in models:
        plain = price_call(book, provider, model, {"input_tokens": _PROBE, "output_tokens": 0})
        read = price_call(
            book,
            provider,
            model,
            {"input_tokens": _PROBE, "output_tokens": 0, "cache_read_tokens": _PROBE},
        )
        write = price_call(
            book,
            provider,
            model,
            {"input_tokens": _PROBE, "output_tokens": 0, "cache_write_tokens": _PROBE},
        )
        priced = None not in (plain.cost_usd, read.cost_usd, write.cost_usd)
        rows.append(
            {
                "provider": provider,
                "model": model,
                "read_saving_usd": (plain.cost_usd - read.cost_usd) / _PROBE if priced else None,
                "write_saving_usd": (plain.cost_usd - write.cost_usd) / _PROBE if priced else None,
            }
        )
    schema = {
        "provider": pl.String,
        "model": pl.String,
        "read_saving_usd": USD_POLARS,
        "write_saving_usd": USD_POLARS,
    }
    return pl.LazyFrame(rows, schema=schema)


def hourly_groups(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Raw llm_calls rows → the per-group sums READ_SQL returns (summed rows pass)."""
    if "calls" in calls.collect_schema().names():
        return calls
    calls = with_defaults(
        calls,
        {
            "cache_read_tokens": pl.lit(None, pl.UInt64),
            "cache_write_tokens": pl.lit(None, pl.UInt64),
            "gateway_cache": pl.lit(""),
            "request_hash": pl.lit(""),
            "response_model": pl.lit(""),
        },
    )
    served = (pl.col("status") == "ok") & (pl.col("gateway_cache") != "hit")
    per_request = (
        calls.with_columns(hour=pl.col("ts").dt.truncate("1h"), model=billed_model())
        .sort("ts")
        .group_by(*KEYS, "request_hash")
        .agg(
            n=pl.len().cast(pl.UInt64),
            input_tokens=count(pl.col("input_tokens")).sum(),
            cache_read_tokens=count(pl.col("cache_read_tokens")).sum(),
            cache_write_tokens=count(pl.col("cache_write_tokens")).sum(),
            gateway_hits=(pl.col("gateway_cache") == "hit").sum().cast(pl.UInt64),
            gateway_misses=(pl.col("gateway_cache") == "miss").sum().cast(pl.UInt64),
            cost=usd("cost_usd").sum(),
            ok_n=served.sum().cast(pl.UInt64),
            ok_cost=usd("cost_usd").filter(served).sum(),
            first_ok_cost=usd("cost_usd").filter(served).first(),
        )
    )
    hashed = pl.col("request_hash") != ""
    repeated = hashed & (pl.col("ok_n") > 1)
    return per_request.group_by(KEYS).agg(
        calls=pl.col("n").sum(),
        input_tokens=pl.col("input_tokens").sum(),
        cache_read_tokens=pl.col("cache_read_tokens").sum(),
        cache_write_tokens=pl.col("cache_write_tokens").sum(),
        gateway_hits=pl.col("gateway_hits").sum(),
        gateway_misses=pl.col("gateway_misses").sum(),
        hashed_calls=pl.col("n").filter(hashed).sum(),
        duplicate_calls=(pl.col("ok_n") - 1).filter(repeated).sum(),
        exact_cache_savings_usd=(pl.col("ok_cost") - pl.col("first_ok_cost"))
        .filter(repeated)
        .sum(),
        cost_usd=pl.col("cost").sum(),
    )


def _rate(numerator: str, denominator: pl.Expr) -> pl.Expr:
    return (pl.when(denominator > 0).then(pl.col(numerator) / denominator).otherwise(0.0)).cast(
        pl.Float64
    )


def cache_hourly(calls: pl.LazyFrame, rates: pl.LazyFrame) -> pl.LazyFrame:
    """Hit rates, savings and duplicates per hour, team, app, route, provider, model."""
    groups = hourly_groups(calls)
    gateway = pl.col("gateway_hits") + pl.col("gateway_misses")
    return (
        groups.with_columns(*(count(pl.col(c)) for c in SUMS))
        .with_columns(usd("exact_cache_savings_usd"), usd("cost_usd"))
        .join(rates, on=["provider", "model"], how="left")
        .with_columns(
            provider_cache_savings_usd=(
                pl.col("cache_read_tokens").cast(pl.Decimal(38, 0)) * pl.col("read_saving_usd")
                + pl.col("cache_write_tokens").cast(pl.Decimal(38, 0)) * pl.col("write_saving_usd")
            ).cast(USD_POLARS),
            provider_cache_hit_rate=_rate("cache_read_tokens", pl.col("input_tokens")),
            gateway_hit_rate=_rate("gateway_hits", gateway),
            duplicate_rate=_rate("duplicate_calls", pl.col("hashed_calls")),
        )
        .drop("read_saving_usd", "write_saving_usd")
    )


def _write_fingerprints(ctx: JobContext, chunk: WindowSet, oldest: int) -> int:
    recent = [start for start in chunk.starts if start >= oldest]
    if not recent:
        return 0
    part = WindowSet(recent, HOUR)
    params = {**part.params(), "now": ctx.now}
    params |= {"parts_re": TEXT_PARTS_RE, "escapes_re": JSON_ESCAPES_RE}
    ctx.store.command(FINGERPRINT_SQL.format(where=part.where("c.ts")), params)
    return len(recent)


def run(ctx: JobContext) -> JobOutcome:
    starts = ctx.windows(HOUR)
    outcome = JobOutcome(windows=len(starts))
    lookback = timedelta(days=ctx.config.near_duplicate_days)
    oldest = int((ctx.now - lookback).timestamp()) // HOUR * HOUR
    fingerprinted = 0
    for chunk in ctx.chunks(starts, HOUR):
        groups = read_frame(ctx.store, READ_SQL.format(where=chunk.where("c.ts")), chunk.params())
        frame = groups.collect()
        models = frame.select("provider", "model").unique().iter_rows()
        rates = saving_rates(ctx.prices, models)
        result = cache_hourly(frame.lazy(), rates).with_columns(computed_at=pl.lit(ctx.now))
        rows = to_arrow(result.collect(), CACHE_HOURLY)
        outcome.rows += write_version(ctx.store, "cache_hourly_versions", rows)
        fingerprinted += _write_fingerprints(ctx, chunk, oldest)
    outcome.details["fingerprinted_hours"] = fingerprinted
    return outcome

"""Routing job: a weight per candidate model of each route, for a router to pull.

Candidates are the models a route declares in the routes file, else the
models its calls used in the last ``routing_window_minutes``. From those
calls: cost per successful call (failed attempts included in the cost),
p50/p95 latency and time to first token of successful calls, error rate.

- A model in an outage (``analytics.failover``) or with an error rate over
  ``routing_max_error_rate`` (at least 3 errors) gets weight 0.
- The healthy models with at least ``routing_min_calls`` successful calls are
  ranked by the route's objective: ``cost`` (cost per call), ``latency`` (p95),
  or ``balanced`` (the mean of the two, each relative to the best), times the
  success rate. The best gets 1 - ``routing_exploration``; every other healthy
  model an equal part of the exploration share, so data keeps flowing to it.
- With nothing ranked yet, the healthy models share equally; with nothing
  healthy, the model with the fewest errors gets everything.

Weights sum to 1 and each carries its reason. A new version is stored when a
route's weights change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import polars as pl

from analytics.config import AnalyticsConfig, RouteSpec
from analytics.context import JobContext, JobOutcome
from analytics.failover import active_outages
from analytics.frames import REQUESTED_MODEL_SQL, requested_model, usd, with_defaults
from analytics.store_io import read_frame
from analytics.tables import ROUTING_WEIGHTS, to_arrow
from ingest.store import query_rows

NAME = "routing"
MIN_ERRORS_TO_EXCLUDE = 3
TIE = 0.99  # within 1% of the best score counts as best

STATS_SQL = f"""
SELECT c.route AS route, c.provider AS provider, {REQUESTED_MODEL_SQL} AS model,
    count() AS calls,
    countIf(c.status = 'error') AS errors,
    countIf(c.status = 'ok') AS ok_calls,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL) AS unpriced_calls,
    quantileIf(0.5)(c.duration_ms, c.status = 'ok') AS p50_ms,
    quantileIf(0.95)(c.duration_ms, c.status = 'ok') AS p95_ms,
    quantileIf(0.5)(c.ttft_ms, c.status = 'ok' AND c.ttft_ms IS NOT NULL) AS ttft_p50_ms,
    quantileIf(0.95)(c.ttft_ms, c.status = 'ok' AND c.ttft_ms IS NOT NULL) AS ttft_p95_ms
FROM llm_calls AS c
WHERE c.ts >= {{start:DateTime64(6)}} AND c.ts < {{end:DateTime64(6)}} AND c.route != ''
GROUP BY route, provider, model
"""
LATEST_SQL = """
SELECT route, version, provider, model, weight FROM routing_weights
WHERE (route, version) IN (SELECT route, max(version) FROM routing_weights GROUP BY route)
"""
OUTAGES_SQL = """
SELECT provider, model, started_at, ended_at, recovered, peak_error_rate FROM outages
WHERE computed_at = (SELECT max(computed_at) FROM outages)
"""
QUANTILES = ("p50_ms", "p95_ms", "ttft_p50_ms", "ttft_p95_ms")


def route_stats(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Raw llm_calls rows → what STATS_SQL returns (summed rows pass through)."""
    if "calls" in calls.collect_schema().names():
        return calls.with_columns(pl.col(QUANTILES).cast(pl.Float64).fill_nan(None))
    calls = with_defaults(
        calls, {"ttft_ms": pl.lit(None, pl.Float64), "response_model": pl.lit("")}
    )
    ok = pl.col("status") == "ok"
    return (
        calls.filter(pl.col("route") != "")
        .with_columns(model=requested_model())
        .group_by("route", "provider", "model")
        .agg(
            calls=pl.len().cast(pl.UInt64),
            errors=(pl.col("status") == "error").sum().cast(pl.UInt64),
            ok_calls=ok.sum().cast(pl.UInt64),
            cost_usd=usd("cost_usd").sum(),
            unpriced_calls=pl.col("cost_usd").is_null().sum().cast(pl.UInt64),
            p50_ms=pl.col("duration_ms").filter(ok).quantile(0.5, "linear"),
            p95_ms=pl.col("duration_ms").filter(ok).quantile(0.95, "linear"),
            ttft_p50_ms=pl.col("ttft_ms").filter(ok).quantile(0.5, "linear"),
            ttft_p95_ms=pl.col("ttft_ms").filter(ok).quantile(0.95, "linear"),
        )
    )


def money(usd_value: float) -> str:
    return f"${usd_value:.4f}" if usd_value < 0.1 else f"${usd_value:,.3f}"


def _facts(c: dict[str, Any]) -> str:
    parts = []
    if c["cost_per_call"] is not None:
        parts.append(f"{money(c['cost_per_call'])}/call")
    if c["p95_ms"] is not None:
        parts.append(f"p95 {c['p95_ms'] / 1000:.1f} s")
    if c["ttft_p95_ms"] is not None:
        parts.append(f"TTFT p95 {c['ttft_p95_ms'] / 1000:.1f} s")
    parts.append(f"{c['error_rate'] * 100:.1f}% errors")
    return "; ".join(parts)


def _scores(ranked: list[dict[str, Any]], objective: str) -> list[float]:
    priced = all(c["cost_per_call"] is not None for c in ranked)
    if objective == "cost" and not priced:
        objective = "latency"  # cost cannot rank unpriced models; latency still can

    def relative(metric: str) -> list[float]:
        values = [c[metric] for c in ranked]
        best = min(values)
        return [(best / v) if v > 0 else 1.0 for v in values]

    if objective == "cost":
        base = relative("cost_per_call")
    elif objective == "latency" or not priced:
        base = relative("p95_ms")
    else:
        base = [
            (a + b) / 2 for a, b in zip(relative("cost_per_call"), relative("p95_ms"), strict=True)
        ]
    return [s * (1 - c["error_rate"]) for s, c in zip(base, ranked, strict=True)]


BEST_REASON = {"cost": "cheapest at", "latency": "fastest:", "balanced": "best cost and latency:"}


def weigh_route(
    candidates: list[dict[str, Any]], objective: str, config: AnalyticsConfig
) -> list[dict[str, Any]]:
    """Weights and reasons for one route's candidates (dicts of their stats)."""
    window = config.routing_window_minutes
    healthy, ranked = [], []
    for c in candidates:
        if c["outage_since"] is not None:
            c["weight"], c["reason"] = (
                0.0,
                (
                    f"weight 0: in an outage since {c['outage_since']:%Y-%m-%d %H:%M} UTC "
                    f"({c['outage_peak'] * 100:.0f}% errors)"
                ),
            )
        elif (
            c["error_rate"] > config.routing_max_error_rate and c["errors"] >= MIN_ERRORS_TO_EXCLUDE
        ):
            c["weight"], c["reason"] = (
                0.0,
                (
                    f"weight 0: {c['error_rate'] * 100:.1f}% errors in the last {window} min "
                    f"(limit {config.routing_max_error_rate * 100:.0f}%)"
                ),
            )
        else:
            healthy.append(c)
            has_metric = c["p95_ms"] is not None
            if c["ok_calls"] >= config.routing_min_calls and has_metric:
                ranked.append(c)
    if not healthy:
        least = min(candidates, key=lambda c: (c["error_rate"], -c["calls"], c["model"]))
        least["weight"], least["reason"] = (
            1.0,
            (f"every candidate is failing; fewest errors here ({_facts(least)})"),
        )
        return candidates
    if not ranked:
        for c in healthy:
            c["weight"] = 1.0 / len(healthy)
            c["reason"] = (
                f"equal share while data comes in: {c['ok_calls']} successful calls in the last "
                f"{window} min (ranking needs {config.routing_min_calls})"
            )
        return candidates
    scores = _scores(ranked, objective)
    top = max(scores)
    best = [c for c, s in zip(ranked, scores, strict=True) if s >= top * TIE]
    others = [c for c in healthy if not any(c is b for b in best)]
    explore = config.routing_exploration if others else 0.0
    for c in best:
        c["weight"] = (1 - explore) / len(best)
        c["reason"] = f"{BEST_REASON[objective]} {_facts(c)}"
    lead = best[0]
    for c in others:
        c["weight"] = explore / len(others)
        if c["ok_calls"] < config.routing_min_calls or c["p95_ms"] is None:
            c["reason"] = (
                f"exploration share: {c['ok_calls']} successful calls in the last {window} min"
            )
        elif c["cost_per_call"] is not None and lead["cost_per_call"]:
            ratio = c["cost_per_call"] / lead["cost_per_call"]
            c["reason"] = f"exploration share: {_facts(c)} ({ratio:.1f}x the best's cost)"
        else:
            c["reason"] = f"exploration share: {_facts(c)}"
    return candidates


def _rounded(candidates: list[dict[str, Any]]) -> None:
    """Four decimals, summing to exactly 1 (the largest weight absorbs the rest)."""
    for c in candidates:
        c["weight"] = round(c["weight"], 4)
    largest = max(candidates, key=lambda c: c["weight"])
    largest["weight"] = round(largest["weight"] + 1 - sum(c["weight"] for c in candidates), 4)


def recommend(
    stats: pl.LazyFrame,
    routes: Sequence[RouteSpec],
    outages: pl.DataFrame,
    config: AnalyticsConfig,
) -> pl.LazyFrame:
    """One row per route and candidate: weight, reason and the figures behind it."""
    frame = route_stats(stats).collect()
    observed: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for row in frame.iter_rows(named=True):
        observed.setdefault(row["route"], {})[(row["provider"], row["model"])] = row
    declared = {r.name: r for r in routes}
    down = {
        (o["provider"], o["model"]): o for o in outages.iter_rows(named=True) if not o["recovered"]
    }
    rows = []
    for route in sorted(set(observed) | set(declared)):
        spec = declared.get(route)
        seen = observed.get(route, {})
        keys = list(spec.candidates) if spec and spec.candidates else sorted(seen)
        if not keys:
            continue
        objective = spec.objective if spec else config.routing_objective
        candidates = [_candidate(route, key, seen.get(key), down.get(key)) for key in keys]
        _rounded(weigh_route(candidates, objective, config))
        rows += [{**c, "objective": objective} for c in candidates]
    columns = [
        n for n in ROUTING_WEIGHTS.names if n not in ("version", "computed_at", "window_minutes")
    ]
    types = {name: pl.Float64 for name in ("weight", "error_rate", "cost_per_call", *QUANTILES)}
    types.update(
        {
            "calls": pl.UInt64,
            **dict.fromkeys(("route", "objective", "provider", "model", "reason"), pl.String),
        }
    )
    return pl.LazyFrame(
        [{n: r[n] for n in columns} for r in rows], schema={n: types[n] for n in columns}
    )


def _candidate(
    route: str, key: tuple[str, str], stats: dict[str, Any] | None, outage: dict[str, Any] | None
) -> dict[str, Any]:
    stats = stats or {}
    calls = int(stats.get("calls") or 0)
    ok_calls = int(stats.get("ok_calls") or 0)
    errors = int(stats.get("errors") or 0)
    priced = ok_calls > 0 and not stats.get("unpriced_calls")
    return {
        "route": route,
        "provider": key[0],
        "model": key[1],
        "calls": calls,
        "ok_calls": ok_calls,
        "errors": errors,
        "error_rate": errors / calls if calls else 0.0,
        "cost_per_call": float(stats["cost_usd"]) / ok_calls if priced else None,
        **{q: stats.get(q) for q in QUANTILES},
        "outage_since": outage["started_at"] if outage else None,
        "outage_peak": outage["peak_error_rate"] if outage else None,
        "weight": 0.0,
        "reason": "",
    }


def run(ctx: JobContext) -> JobOutcome:
    config = ctx.config
    window = timedelta(minutes=config.routing_window_minutes)
    stats = read_frame(ctx.store, STATS_SQL, {"start": ctx.now - window, "end": ctx.now})
    found = read_frame(ctx.store, OUTAGES_SQL).collect()
    weights = recommend(stats, config.routes, active_outages(found, ctx.now), config).collect()
    latest: dict[str, dict[str, Any]] = {}
    for row in query_rows(ctx.store, LATEST_SQL):
        entry = latest.setdefault(row["route"], {"version": row["version"], "weights": {}})
        entry["weights"][(row["provider"], row["model"])] = row["weight"]
    changed = []
    for (route,), group in weights.group_by("route", maintain_order=True):
        now = {(p, m): w for p, m, w in group.select("provider", "model", "weight").iter_rows()}
        before = latest.get(str(route))
        if before and before["weights"] == now:
            continue
        version = before["version"] + 1 if before else 1
        changed.append(
            group.with_columns(
                version=pl.lit(version, pl.UInt64),
                computed_at=pl.lit(ctx.now),
                window_minutes=pl.lit(config.routing_window_minutes, pl.UInt32),
            )
        )
    rows = pl.concat(changed) if changed else None
    if rows is not None:
        ctx.store.insert_arrow("routing_weights", to_arrow(rows, ROUTING_WEIGHTS))
    routes = weights["route"].n_unique()
    return JobOutcome(
        windows=1,
        rows=rows.height if rows is not None else 0,
        details={"routes": routes, "new_versions": len(changed)},
    )

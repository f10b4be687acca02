"""API rows → the tables and series the pages draw. Pure functions, no Streamlit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from dashboards.filters import Filters, apply

TOTAL_COLUMNS = (
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


def spend_query_groups(group_by: Sequence[str], filters: Filters) -> list[str]:
    """What to ask /api/v1/spend to group by: the wanted groups plus every
    filter the endpoint cannot apply itself (app, model, provider)."""
    return list(dict.fromkeys([*group_by, *filters.client_side()]))


def spend_frame(
    rows: Iterable[dict[str, Any]], group_by: Sequence[str], filters: Filters
) -> pd.DataFrame:
    """Spend rows filtered client-side and summed back to ``group_by`` (+ period)."""
    kept = apply(rows, filters)
    keys = (["period"] if kept and "period" in kept[0] else []) + list(group_by)
    columns = keys + list(TOTAL_COLUMNS)
    if not kept:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(kept)
    for column in TOTAL_COLUMNS:
        if column not in frame:
            frame[column] = 0
    frame[list(TOTAL_COLUMNS)] = frame[list(TOTAL_COLUMNS)].fillna(0)
    if keys:
        frame = frame.groupby(keys, as_index=False, sort=True)[list(TOTAL_COLUMNS)].sum()
    else:
        frame = frame[list(TOTAL_COLUMNS)].sum().to_frame().T
    if "period" in frame:
        frame["period"] = pd.to_datetime(frame["period"], utc=True)
    frame["cost_per_call"] = frame["cost_usd"] / frame["calls"].where(frame["calls"] > 0)
    return frame[columns + ["cost_per_call"]]


def totals(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty:
        return {column: 0.0 for column in TOTAL_COLUMNS}
    return {column: float(frame[column].sum()) for column in TOTAL_COLUMNS}


def linear_forecast(
    spent: float, period_start: datetime, period_end: datetime, now: datetime
) -> float:
    """Spend at the end of a budget period if the rate so far continues."""
    elapsed = (min(now, period_end) - period_start).total_seconds()
    whole = (period_end - period_start).total_seconds()
    if elapsed <= 0 or whole <= 0:
        return spent
    return spent * whole / elapsed


def burn_down(
    series: pd.DataFrame,
    amount: float,
    period_start: datetime,
    period_end: datetime,
    forecast: float | None = None,
) -> pd.DataFrame:
    """Remaining budget over time from a cost series (period, cost_usd), and the line
    to the period's end at ``forecast`` (default: the rate so far continued)."""
    frame = series[series["period"] >= pd.Timestamp(period_start)].sort_values("period")
    remaining = amount - frame["cost_usd"].cumsum()
    actual = pd.DataFrame({"time": frame["period"], "remaining": remaining, "kind": "actual"})
    spent = float(frame["cost_usd"].sum())
    now = datetime.now(UTC)
    if forecast is None:
        forecast = linear_forecast(spent, period_start, period_end, now)
    projected = pd.DataFrame(
        {
            "time": [pd.Timestamp(min(now, period_end)), pd.Timestamp(period_end)],
            "remaining": [amount - spent, amount - forecast],
            "kind": "forecast",
        }
    )
    return pd.concat([actual, projected], ignore_index=True)


def error_rate_frame(rows: Iterable[dict[str, Any]], filters: Filters) -> pd.DataFrame:
    """Calls, errors and error rate per period, provider and model from spend rows
    grouped by provider, model and status."""
    frame = spend_frame(rows, ["provider", "model"], filters)
    if frame.empty:
        return frame.assign(error_rate=pd.Series(dtype=float))
    return frame.assign(error_rate=frame["error_calls"] / frame["calls"].where(frame["calls"] > 0))


def outage_windows(
    failures: Iterable[dict[str, Any]], min_failures: int = 3, gap: timedelta = timedelta(minutes=1)
) -> pd.DataFrame:
    """Stretches of provider-side failures (5xx or no answer) per provider: failures
    less than ``gap`` apart join one window; windows with fewer than
    ``min_failures`` are noise, not outages."""
    columns = ["provider", "start", "end", "failures", "models"]
    rows = [
        row
        for row in failures
        if row.get("status") == "error"
        and (not row.get("http_status") or row["http_status"] >= 500)
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame["model"] = frame.get("response_model", "").where(
        frame.get("response_model", "") != "", frame.get("request_model", "")
    )
    windows = []
    for provider, group in frame.sort_values("ts").groupby("provider"):
        start = last = None
        count, models = 0, set()
        for ts, model in zip(group["ts"], group["model"], strict=True):
            if last is not None and ts - last > gap:
                windows.append((provider, start, last, count, models))
                start, count, models = None, 0, set()
            start = start or ts
            last = ts
            count += 1
            models.add(model)
        windows.append((provider, start, last, count, models))
    found = [
        {"provider": p, "start": s, "end": e, "failures": n, "models": ", ".join(sorted(m))}
        for p, s, e, n, m in windows
        if n >= min_failures
    ]
    return pd.DataFrame(found, columns=columns)


def duplicate_prompts(calls: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Identical requests (same request_hash) seen more than once, with their spend."""
    columns = ["request_hash", "times", "cost_usd", "first_seen", "last_seen", "app", "model"]
    rows = [row for row in calls if row.get("request_hash")]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["model"] = frame["response_model"].where(
        frame["response_model"] != "", frame["request_model"]
    )
    frame["cost_usd"] = frame["cost_usd"].fillna(0)
    grouped = frame.groupby("request_hash").agg(
        times=("request_hash", "size"),
        cost_usd=("cost_usd", "sum"),
        first_seen=("ts", "min"),
        last_seen=("ts", "max"),
        app=("app", "first"),
        model=("model", "first"),
    )
    grouped = grouped[grouped["times"] > 1].reset_index()
    return grouped.sort_values(["times", "cost_usd"], ascending=False)[columns]


def flatten_tree(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trace's span tree as rows in display order, each with its depth and its
    start offset from the trace's first span (ms), for the waterfall."""
    out: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        out.append({**node, "depth": depth})
        for child in sorted(node.get("children", []), key=lambda n: n["ts"]):
            walk(child, depth + 1)

    for root in sorted(nodes, key=lambda n: n["ts"]):
        walk(root, 0)
    if not out:
        return out
    times = [pd.Timestamp(row["ts"]) for row in out]
    origin = min(times)
    for row, moment in zip(out, times, strict=True):
        row["start_ms"] = (moment - origin).total_seconds() * 1000
        row["duration_ms"] = float(row.get("duration_ms") or 0.0)
    return out


def node_kind(node: dict[str, Any]) -> str:
    if node.get("llm_call"):
        return "model call"
    if node.get("tool_calls") and str(node.get("name", "")).startswith("execute_tool"):
        return "tool"
    if str(node.get("name", "")).startswith("execute_tool"):
        return "tool"
    return "span"

"""Budgets job: month-to-date spend, a month-end forecast and alerts per budget.

A budget (budgets file, see ``analytics.config``) covers the calls matching
its scope — team, project, user, provider key fingerprint, any combination.
The forecast is the spend so far plus the rest of the month at the trend of
the last 14 complete days: a least-squares line through their daily spend,
never below zero, evaluated for the rest of today and each day after. With
one day of history the trend is that day; with none, today's rate so far.

An alert is raised once per budget, period and threshold, when the spend or
the forecast reaches 80% or 100% of the amount; it is stored in
``budget_alerts`` and posted to the webhook, retried on later runs until the
webhook takes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from analytics.config import Budget
from analytics.context import JobContext, JobOutcome
from analytics.store_io import read_frame, replace_snapshot
from analytics.tables import BUDGET_ALERTS, BUDGET_STATUS, USD_POLARS, to_arrow
from analytics.webhook import post_alert
from ingest.store import query_rows

NAME = "budgets"
TREND_DAYS = 14
THRESHOLDS = (80, 100)
KINDS = ("spend", "forecast")
PCT_COLUMN = {"spend": "spent_pct", "forecast": "forecast_pct"}
MAX_DELIVERY_ATTEMPTS = 20
_CENT = Decimal("0.000000000001")

# Spend per day and scope first (a few thousand rows), then each budget's share.
READ_SQL = """
SELECT day, budget_index, sum(cost) AS cost_usd
FROM (
    SELECT toDate(c.ts) AS day,
        cityHash64(c.team, c.project, c.user_id, c.api_key_fingerprint) AS scope,
        any(c.team) AS team, any(c.project) AS project, any(c.user_id) AS user_id,
        any(c.api_key_fingerprint) AS api_key_fingerprint,
        sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost
    FROM llm_calls AS c
    WHERE c.ts >= {start:DateTime64(6)} AND c.ts < {end:DateTime64(6)}
      AND ({any_team:Bool} OR c.team IN {teams:Array(String)})
    GROUP BY day, scope
)
ARRAY JOIN arrayFilter(
    i -> ({teams:Array(String)}[i] = '' OR {teams:Array(String)}[i] = team)
     AND ({projects:Array(String)}[i] = '' OR {projects:Array(String)}[i] = project)
     AND ({users:Array(String)}[i] = '' OR {users:Array(String)}[i] = user_id)
     AND ({keys:Array(String)}[i] = '' OR {keys:Array(String)}[i] = api_key_fingerprint),
    range(1, {n:UInt32} + 1)) AS budget_index
GROUP BY day, budget_index
"""


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    following = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start, following


def trend_line(
    daily: dict[date, Decimal], today: date, first_day: date | None
) -> tuple[float, float]:
    """(value at today, slope per day) of the least-squares line through the
    last 14 complete days (from the first day with spend, if later)."""
    begin = today - timedelta(days=TREND_DAYS)
    if first_day is not None and first_day > begin:
        begin = first_day
    xs = [(day - today).days for day in (begin + timedelta(n) for n in range((today - begin).days))]
    ys = [float(daily.get(today + timedelta(days=x), Decimal(0))) for x in xs]
    if len(xs) >= 2:
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        return mean_y - slope * mean_x, slope
    if len(xs) == 1:
        return ys[0], 0.0
    return 0.0, 0.0


def forecast(
    spent: Decimal, daily: dict[date, Decimal], now: datetime, first_day: date | None
) -> tuple[Decimal, float]:
    """Month-end spend and the trend's value today (USD per day)."""
    today = now.date()
    _, period_end = month_bounds(now)
    elapsed = (now - datetime(today.year, today.month, today.day, tzinfo=UTC)) / timedelta(days=1)
    if first_day is None or first_day >= today:
        # No complete day yet: today's rate so far.
        today_spend = float(daily.get(today, Decimal(0)))
        level, slope = (today_spend / elapsed if elapsed > 0.01 else 0.0), 0.0
    else:
        level, slope = trend_line(daily, today, first_day)
    days_after = (period_end.date() - today).days - 1
    rest = (1 - elapsed) * max(level, 0.0)
    rest += sum(max(level + slope * x, 0.0) for x in range(1, days_after + 1))
    return spent + Decimal(repr(round(rest, 12))).quantize(_CENT), level


STATUS_TYPES = {
    "amount_usd": USD_POLARS,
    "spent_usd": USD_POLARS,
    "forecast_usd": USD_POLARS,
    "daily_cost_usd": pl.List(USD_POLARS),
    "days": pl.List(pl.Date),
}


def budget_status(daily: pl.LazyFrame, budgets: Sequence[Budget], now: datetime) -> pl.LazyFrame:
    """One row per budget. ``daily`` has day, budget (its name) and cost_usd."""
    period_start, period_end = month_bounds(now)
    frame = daily.collect()
    days = [
        period_start.date() + timedelta(n)
        for n in range((now.date() - period_start.date()).days + 1)
    ]
    rows = []
    for budget in budgets:
        by_day: dict[date, Decimal] = {}
        for day, cost in (
            frame.filter(pl.col("budget") == budget.name).select("day", "cost_usd").iter_rows()
        ):
            by_day[day] = by_day.get(day, Decimal(0)) + (cost or Decimal(0))
        spent = sum((by_day.get(d, Decimal(0)) for d in days), Decimal(0))
        first_day = min((d for d, c in by_day.items() if c > 0), default=None)
        projected, trend = forecast(spent, by_day, now, first_day)
        spent_pct = float(spent / budget.amount_usd * 100)
        forecast_pct = float(projected / budget.amount_usd * 100)
        rows.append(
            {
                "budget": budget.name,
                "team": budget.team,
                "project": budget.project,
                "user_id": budget.user_id,
                "api_key_fingerprint": budget.api_key_fingerprint,
                "period_start": period_start,
                "period_end": period_end,
                "amount_usd": budget.amount_usd,
                "spent_usd": spent,
                "forecast_usd": projected,
                "spent_pct": spent_pct,
                "forecast_pct": forecast_pct,
                "trend_usd_per_day": trend,
                "status": status_of(spent_pct, forecast_pct),
                "days": days,
                "daily_cost_usd": [by_day.get(d, Decimal(0)) for d in days],
            }
        )
    if not rows:
        empty = pl.from_arrow(BUDGET_STATUS.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.drop("computed_at").lazy()
    return pl.DataFrame(rows, schema_overrides=STATUS_TYPES).lazy()


def status_of(spent_pct: float, forecast_pct: float) -> str:
    if spent_pct >= 100:
        return "over"
    if forecast_pct >= 100:
        return "forecast_over"
    if spent_pct >= 80 or forecast_pct >= 80:
        return "warning"
    return "ok"


def crossed(status: pl.DataFrame) -> list[dict[str, Any]]:
    """Every (budget, kind, threshold) the status rows have reached."""
    found = []
    for row in status.iter_rows(named=True):
        for kind in KINDS:
            for threshold in THRESHOLDS:
                if row[PCT_COLUMN[kind]] >= threshold:
                    found.append({**row, "kind": kind, "threshold_pct": threshold})
    return found


def message(alert: dict[str, Any]) -> str:
    month = alert["period_start"].strftime("%B %Y")
    value = alert["spent_usd"] if alert["kind"] == "spend" else alert["forecast_usd"]
    what = "spend so far" if alert["kind"] == "spend" else "month-end forecast"
    share = alert[PCT_COLUMN[alert["kind"]]]
    return (
        f"Budget {alert['budget']}: {what} ${value:,.2f} is {share:.0f}% "
        f"of ${alert['amount_usd']:,.2f} for {month} (crossed {alert['threshold_pct']}%)"
    )


ALERT_TYPES = {
    "amount_usd": USD_POLARS,
    "spent_usd": USD_POLARS,
    "forecast_usd": USD_POLARS,
    "delivered_at": pl.Datetime("ms", "UTC"),
    "last_error": pl.String,
    "message": pl.String,
}


def _alert_row(alert: dict[str, Any], **changes: Any) -> dict[str, Any]:
    row = {name: alert.get(name) for name in BUDGET_ALERTS.names}
    row.update(changes)
    row["version"] = time.time_ns()
    return row


def raise_and_deliver(ctx: JobContext, status: pl.DataFrame, period_start: datetime) -> dict:
    existing = {
        (r["budget"], r["kind"], r["threshold_pct"]): r
        for r in query_rows(
            ctx.store,
            "SELECT * FROM budget_alerts FINAL WHERE period_start = {p:DateTime64(0)}",
            {"p": period_start},
        )
    }
    new = [
        _alert_row(
            a, raised_at=ctx.now, message=message(a), delivered_at=None, attempts=0, last_error=""
        )
        for a in crossed(status)
        if (a["budget"], a["kind"], a["threshold_pct"]) not in existing
    ]
    pending = new + [
        r
        for r in existing.values()
        if r["delivered_at"] is None and r["attempts"] < MAX_DELIVERY_ATTEMPTS
    ]
    updates = []
    if ctx.config.webhook_url:
        for alert in pending:
            fields = {k: v for k, v in alert.items() if k not in ("version", "last_error")}
            error = post_alert(ctx.config.webhook_url, alert["message"], _jsonable(fields))
            updates.append(
                _alert_row(
                    alert,
                    delivered_at=None if error else datetime.now(UTC),
                    attempts=alert["attempts"] + 1,
                    last_error=error,
                )
            )
    changed = {(r["budget"], r["kind"], r["threshold_pct"]): r for r in new + updates}
    if changed:
        table = pl.DataFrame(list(changed.values()), schema_overrides=ALERT_TYPES)
        ctx.store.insert_arrow("budget_alerts", to_arrow(table, BUDGET_ALERTS))
    delivered = sum(1 for r in updates if r["delivered_at"] is not None)
    return {"alerts_raised": len(new), "alerts_delivered": delivered}


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, datetime | date):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def read_daily(ctx: JobContext, budgets: Sequence[Budget], start: datetime) -> pl.LazyFrame:
    """Daily spend per budget, one scan of llm_calls for all budgets."""
    if not budgets:
        return pl.LazyFrame(schema={"day": pl.Date, "budget": pl.String, "cost_usd": USD_POLARS})
    params = {
        "teams": [b.team for b in budgets],
        "projects": [b.project for b in budgets],
        "users": [b.user_id for b in budgets],
        "keys": [b.api_key_fingerprint for b in budgets],
        "n": len(budgets),
        "any_team": any(not b.team for b in budgets),
        "start": start,
        "end": ctx.now,
    }
    names = pl.LazyFrame(
        {"budget_index": range(1, len(budgets) + 1), "budget": [b.name for b in budgets]}
    )
    daily = read_frame(ctx.store, READ_SQL, params)
    return daily.with_columns(pl.col("budget_index").cast(pl.Int64)).join(names, on="budget_index")


def run(ctx: JobContext) -> JobOutcome:
    budgets = ctx.config.budgets
    period_start, _ = month_bounds(ctx.now)
    today = datetime.combine(ctx.now.date(), datetime.min.time(), UTC)
    daily = read_daily(ctx, budgets, min(period_start, today - timedelta(days=TREND_DAYS)))
    status = budget_status(daily, budgets, ctx.now).with_columns(computed_at=pl.lit(ctx.now))
    frame = status.collect()
    rows = replace_snapshot(ctx.store, "budget_status", to_arrow(frame, BUDGET_STATUS), ctx.now)
    details = raise_and_deliver(ctx, frame, period_start)
    return JobOutcome(windows=1, rows=rows, details={"budgets": len(budgets), **details})

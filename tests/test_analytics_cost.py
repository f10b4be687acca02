"""Cost rollups and budgets, on hand-made frames (no store)."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from analytics.budgets import budget_status, crossed, forecast, message
from analytics.config import Budget, ConfigFileError, load_budgets, load_routes
from analytics.cost import cost_hourly
from tests.test_analytics_frames import at, calls


def test_spend_per_team_is_the_exact_sum_of_call_costs() -> None:
    rng = random.Random(7)
    teams = ["payments", "search", "support"]
    rows, expected = [], {t: Decimal(0) for t in teams}
    for i in range(3000):
        team = rng.choice(teams)
        # Costs with all 12 decimals, some calls unpriced (NULL cost).
        cost = None if i % 17 == 0 else Decimal(rng.randrange(1, 10**9)) / Decimal(10**12)
        expected[team] += cost or Decimal(0)
        rows.append(
            {
                "ts": at(rng.uniform(0, 600)),
                "team": team,
                "user_id": f"u{rng.randrange(20)}",
                "request_model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                "response_model": "",
                "cost_usd": cost,
            }
        )
    hourly = cost_hourly(calls(*rows)).collect()
    per_team = dict(hourly.group_by("team").agg(pl.col("cost_usd").sum()).iter_rows())
    assert per_team == expected  # exact Decimal equality, not just to the cent
    assert hourly["calls"].sum() == 3000
    assert hourly["unpriced_calls"].sum() == len([i for i in range(3000) if i % 17 == 0])


def test_cost_hourly_groups_by_hour_and_attribution_with_cost_per_1k_calls() -> None:
    hourly = cost_hourly(
        calls(
            {"ts": at(1), "cost_usd": Decimal("0.002"), "input_tokens": 100, "status": "error"},
            {"ts": at(30), "cost_usd": Decimal("0.004"), "cache_read_tokens": 40},
            {"ts": at(61), "cost_usd": Decimal("0.010")},
            {"ts": at(2), "team": "search", "cost_usd": Decimal("0.5")},
        )
    ).collect()
    first = hourly.filter((pl.col("team") == "payments") & (pl.col("hour") == at(0)))
    assert first.select("calls", "error_calls", "input_tokens", "cache_read_tokens").row(0) == (
        2,
        1,
        200,
        40,
    )
    assert first["cost_usd"][0] == Decimal("0.006")
    assert first["cost_per_1k_calls"][0] == pytest.approx(3.0)
    assert hourly.height == 3


def budgets_frame(daily: dict[date, str], name: str = "payments") -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "day": list(daily),
            "budget": [name] * len(daily),
            "cost_usd": [Decimal(v) for v in daily.values()],
        },
        schema={"day": pl.Date, "budget": pl.String, "cost_usd": pl.Decimal(38, 12)},
    )


def test_forecast_of_a_steady_spend_is_the_month_at_that_rate() -> None:
    # $10 every day of November so far; it is Nov 20, noon: $5 spent today.
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    daily = {date(2026, 11, d): "10" for d in range(1, 20)} | {date(2026, 11, 20): "5"}
    daily |= {date(2026, 10, d): "10" for d in range(25, 32)}
    budget = Budget("payments", Decimal(300), team="payments")
    row = budget_status(budgets_frame(daily), [budget], now).collect().row(0, named=True)
    # Spent: 19 days x $10 + $5. Forecast: + half of today at $10 + 10 more days.
    assert row["spent_usd"] == Decimal(195)
    assert row["forecast_usd"] == Decimal(300)
    assert row["spent_pct"] == pytest.approx(65.0)
    assert row["forecast_pct"] == pytest.approx(100.0)
    assert row["status"] == "forecast_over"
    assert row["trend_usd_per_day"] == pytest.approx(10.0)
    assert len(row["days"]) == 20 and row["daily_cost_usd"][-1] == Decimal(5)
    kinds = {(a["kind"], a["threshold_pct"]) for a in crossed(pl.DataFrame([row]))}
    assert kinds == {("forecast", 80), ("forecast", 100)}


def test_forecast_follows_a_rising_trend() -> None:
    # Daily spend 1, 2, ..., 14 over the 14 complete days before Dec 15 (00:00).
    now = datetime(2026, 12, 15, 0, 0, tzinfo=UTC)
    daily = {date(2026, 12, 1) + timedelta(days=i): str(i + 1) for i in range(14)}
    spent = Decimal(sum(range(1, 15)))
    first = min(daily)
    projected, level = forecast(spent, {k: Decimal(v) for k, v in daily.items()}, now, first)
    # The least-squares line is exact: 15 today, 16 tomorrow, ..., 31 on Dec 31.
    assert level == pytest.approx(15.0)
    assert projected == spent + Decimal(sum(range(15, 32)))


def test_forecast_without_history_uses_todays_rate() -> None:
    now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # a quarter of the last day gone
    projected, level = forecast(
        Decimal(2), {date(2026, 11, 30): Decimal(2)}, now, date(2026, 11, 30)
    )
    assert level == pytest.approx(8.0)
    assert projected == Decimal(8)


def test_spend_alerts_and_message() -> None:
    now = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
    daily = {date(2026, 11, d): "100" for d in range(1, 10)}
    budget = Budget("team=payments", Decimal(1000), team="payments")
    status = budget_status(budgets_frame(daily, "team=payments"), [budget], now).collect()
    alerts = crossed(status)
    assert {(a["kind"], a["threshold_pct"]) for a in alerts} == {
        ("spend", 80),
        ("forecast", 80),
        ("forecast", 100),
    }
    spend80 = next(a for a in alerts if a["kind"] == "spend")
    assert message(spend80) == (
        "Budget team=payments: spend so far $900.00 is 90% of $1,000.00 for November 2026 "
        "(crossed 80%)"
    )


def test_budgets_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        '[[budget]]\nteam = "payments"\nmonthly_usd = 500\n\n'
        '[[budget]]\nname = "alice"\nuser = "alice@example.com"\nmonthly_usd = "25.50"\n'
    )
    budgets = load_budgets(path)
    assert budgets[0] == Budget("team=payments", Decimal(500), team="payments")
    assert budgets[1].user_id == "alice@example.com" and budgets[1].amount_usd == Decimal("25.50")
    for text, problem in (
        ('[[budget]]\nteam = "x"\n', "monthly_usd"),
        ('[[budget]]\nteam = "x"\nmonthly_usd = -1\n', "above 0"),
        ('[[budget]]\nsquad = "x"\nmonthly_usd = 1\n', "unknown keys ['squad']"),
        (
            '[[budget]]\nteam = "x"\nmonthly_usd = 1\n[[budget]]\nteam = "x"\nmonthly_usd = 2\n',
            "twice",
        ),
        ("budget = 3\n", "[[budget]]"),
        ("[[budget]\n", "not valid TOML"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigFileError, match=re.escape(problem)):
            load_budgets(path)
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_budgets(tmp_path / "missing.toml")


def test_routes_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[[route]]\nname = "chat"\nobjective = "cost"\n'
        'candidates = ["openai/gpt-4o-mini", "bedrock/us.anthropic.claude-3-5-haiku/v1"]\n'
    )
    (route,) = load_routes(path)
    assert route.candidates == (
        ("openai", "gpt-4o-mini"),
        ("aws", "us.anthropic.claude-3-5-haiku/v1"),
    )
    for text, problem in (
        ('[[route]]\nname = "chat"\nobjective = "cheap"\n', "objective must be"),
        ('[[route]]\nname = "chat"\ncandidates = ["gpt-4o"]\n', "provider/model"),
        ('[[route]]\nobjective = "cost"\n', "needs a 'name'"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigFileError, match=re.escape(problem)):
            load_routes(path)

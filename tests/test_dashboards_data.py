"""The dashboards' pure parts: filters in the URL, spend re-aggregation, outage
windows, duplicates, the trace waterfall's rows, forecasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards import data
from dashboards.api import is_loopback
from dashboards.filters import Filters, rounded_now
from dashboards.ui import pages_for


def test_filters_round_trip_through_the_url() -> None:
    shared = Filters.from_query({"period": "7d", "team": "payments", "model": "gpt-4o"})
    assert shared.as_query() == {"period": "7d", "team": "payments", "model": "gpt-4o"}
    assert Filters.from_query(shared.as_query()) == shared
    assert Filters.from_query({}).as_query() == {}  # defaults stay out of the URL
    assert Filters.from_query({"period": "forever"}).period == "24h"
    custom = Filters.from_query({"from": "2026-11-01T00:00:00Z", "to": "2026-11-08"})
    assert custom.period == "custom"
    assert custom.window().end - custom.window().start == timedelta(days=7)
    assert Filters.from_query(custom.as_query()) == custom
    assert Filters.from_query({"from": "not a time"}).period == "24h"


def test_now_is_rounded_up_so_reruns_share_cached_answers() -> None:
    now = datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC)
    assert rounded_now(now) == datetime(2026, 11, 23, 10, 0, 10, tzinfo=UTC)
    window = Filters(period="1h").window(now)
    assert window.end - window.start == timedelta(hours=1)


def test_spend_filters_it_cannot_apply_are_grouped_then_summed_away() -> None:
    filters = Filters(model="gpt-4o")
    assert data.spend_query_groups(["team"], filters) == ["team", "model"]
    rows = [
        {"team": "a", "model": "gpt-4o", "calls": 2, "cost_usd": 0.5, "error_calls": 1},
        {"team": "a", "model": "gpt-4o-mini", "calls": 5, "cost_usd": 0.1, "error_calls": 0},
        {"team": "b", "model": "gpt-4o", "calls": 1, "cost_usd": 0.25, "error_calls": 0},
    ]
    frame = data.spend_frame(rows, ["team"], filters)
    assert list(frame["team"]) == ["a", "b"]
    assert list(frame["cost_usd"]) == [0.5, 0.25]
    assert list(frame["cost_per_call"]) == [0.25, 0.25]
    assert data.totals(frame)["calls"] == 3
    assert data.spend_frame([], ["team"], filters).empty


def test_outage_windows_are_runs_of_provider_side_failures() -> None:
    start = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def failure(seconds: float, provider: str = "anthropic", status: int = 503) -> dict:
        return {
            "ts": (start + timedelta(seconds=seconds)).isoformat(),
            "status": "error",
            "http_status": status,
            "provider": provider,
            "request_model": "claude",
            "response_model": "",
        }

    calls = [failure(s) for s in (0, 5, 10, 20)] + [failure(600), failure(601)]
    calls += [failure(3, "openai", 429)] * 5  # rate limits are not outages
    windows = data.outage_windows(calls)
    assert len(windows) == 1
    assert windows.iloc[0]["failures"] == 4
    assert windows.iloc[0]["end"] - windows.iloc[0]["start"] == timedelta(seconds=20)


def test_duplicates_are_identical_requests_seen_again() -> None:
    def call(request_hash: str, cost: float) -> dict:
        return {
            "request_hash": request_hash,
            "cost_usd": cost,
            "ts": "2026-11-23T10:00:00+00:00",
            "app": "bot",
            "request_model": "m",
            "response_model": "m",
        }

    report = data.duplicate_prompts([call("h1", 0.1), call("h1", 0.1), call("h2", 1.0)])
    assert list(report["request_hash"]) == ["h1"]
    assert report.iloc[0]["times"] == 2
    assert report.iloc[0]["cost_usd"] == pytest.approx(0.2)


def test_waterfall_rows_follow_the_tree_with_offsets() -> None:
    root = {
        "ts": "2026-11-23T10:00:00+00:00",
        "name": "POST /chat",
        "duration_ms": 900,
        "children": [
            {
                "ts": "2026-11-23T10:00:00.500+00:00",
                "name": "tool",
                "duration_ms": 50,
                "children": [],
            },
            {
                "ts": "2026-11-23T10:00:00.100+00:00",
                "name": "chat",
                "duration_ms": 300,
                "children": [],
                "llm_call": {"cost_usd": 0.01},
            },
        ],
    }
    rows = data.flatten_tree([root])
    assert [(r["name"], r["depth"], r["start_ms"]) for r in rows] == [
        ("POST /chat", 0, 0.0),
        ("chat", 1, 100.0),
        ("tool", 1, 500.0),
    ]
    assert data.node_kind(rows[1]) == "model call"


def test_forecast_extends_the_rate_so_far() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    assert data.linear_forecast(100.0, start, end, start + timedelta(days=10)) == 300.0
    assert data.linear_forecast(100.0, start, end, end + timedelta(days=5)) == 100.0


def test_pages_by_role_and_loopback() -> None:
    assert pages_for("admin") == ["spend", "traces", "reliability", "cache", "routing", "audit"]
    assert pages_for("engineer") == ["traces", "reliability", "cache"]
    assert pages_for("router") == ["routing"]
    assert pages_for("ingest") == []
    assert all(is_loopback(a) for a in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "", None, "10.0.0.1", "example.com"))

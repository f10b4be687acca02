"""Routing weights from observed cost, latency and errors, on hand-made frames."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from analytics.config import AnalyticsConfig, RouteSpec
from analytics.routing import recommend
from tests.test_analytics_frames import at, calls

MINI = {"provider": "openai", "request_model": "gpt-4o-mini", "response_model": "gpt-4o-mini"}
HAIKU = {"provider": "anthropic", "request_model": "claude-3-5-haiku-latest"}
FLASH = {"provider": "google", "request_model": "gemini-2.0-flash", "response_model": ""}
FAIL = {"status": "error", "http_status": 503, "cost_usd": None}
CONFIG = AnalyticsConfig(routing_exploration=0.1, routing_min_calls=10, routing_max_error_rate=0.2)
NO_OUTAGES = pl.DataFrame(
    schema={
        "provider": pl.String,
        "model": pl.String,
        "started_at": pl.Datetime("us", "UTC"),
        "recovered": pl.Boolean,
        "peak_error_rate": pl.Float64,
    }
)


def traffic(model: dict, n: int, cost: str, ms: float, route: str = "chat", **extra) -> list[dict]:
    return [
        {
            **model,
            "route": route,
            "ts": at(i * 0.5),
            "cost_usd": Decimal(cost),
            "duration_ms": ms + i,
            **extra,
        }
        for i in range(n)
    ]


def weights(frame: pl.LazyFrame, routes=(), outages=NO_OUTAGES, config=CONFIG) -> dict:
    rows = recommend(frame, routes, outages, config).collect()
    return {(r["route"], r["model"]): r for r in rows.iter_rows(named=True)}


def test_a_model_failing_every_call_gets_zero_and_the_healthy_share_the_rest() -> None:
    found = weights(
        calls(
            *traffic(MINI, 20, "0.0012", 1500),
            *traffic(HAIKU, 20, "0.0040", 900),
            *traffic(FLASH, 20, "0", 500, **FAIL),
        ),
        routes=[
            RouteSpec(
                "chat",
                "cost",
                (
                    ("openai", "gpt-4o-mini"),
                    ("anthropic", "claude-3-5-haiku-latest"),
                    ("google", "gemini-2.0-flash"),
                ),
            )
        ],
    )
    mini, haiku, flash = (
        found[("chat", m)] for m in ("gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash")
    )
    assert flash["weight"] == 0.0
    assert flash["reason"] == "weight 0: 100.0% errors in the last 60 min (limit 20%)"
    assert (mini["weight"], haiku["weight"]) == (0.9, 0.1)
    assert mini["reason"].startswith("cheapest at $0.0012/call; p95 1.5 s; 0.0% errors")
    assert haiku["reason"].startswith("exploration share: $0.0040/call")
    assert "3.3x the best's cost" in haiku["reason"]
    assert sum(r["weight"] for r in found.values()) == pytest.approx(1.0)
    assert mini["cost_per_call"] == pytest.approx(0.0012)
    assert mini["error_rate"] == 0.0 and flash["error_rate"] == 1.0


def test_latency_objective_prefers_the_fastest() -> None:
    found = weights(
        calls(*traffic(MINI, 20, "0.0012", 1500), *traffic(HAIKU, 20, "0.0040", 900)),
        routes=[RouteSpec("chat", "latency", ())],
    )
    assert found[("chat", "claude-3-5-haiku-latest")]["weight"] == 0.9
    assert found[("chat", "claude-3-5-haiku-latest")]["reason"].startswith("fastest: ")


def test_balanced_objective_weighs_cost_and_latency_and_errors() -> None:
    # Mini: cheapest and slower; Haiku: 3.3x the cost, 1.7x as fast. Balanced is
    # the mean of each one's cost and p95 relative to the best: about 0.80 for
    # mini (1 and 0.6), 0.65 for Haiku (0.3 and 1).
    found = weights(
        calls(*traffic(MINI, 20, "0.0012", 1500), *traffic(HAIKU, 20, "0.0040", 900)),
    )
    assert found[("chat", "gpt-4o-mini")]["weight"] == 0.9
    assert found[("chat", "gpt-4o-mini")]["objective"] == "balanced"


def test_an_outage_zeroes_a_model_even_before_its_error_rate_shows() -> None:
    outage = pl.DataFrame(
        {
            "provider": ["anthropic"],
            "model": ["claude-3-5-haiku-latest"],
            "started_at": [datetime(2026, 11, 2, 9, 55, tzinfo=UTC)],
            "recovered": [False],
            "peak_error_rate": [0.9],
        }
    )
    found = weights(
        calls(*traffic(MINI, 20, "0.0012", 1500), *traffic(HAIKU, 20, "0.0004", 900)),
        outages=outage,
    )
    assert found[("chat", "claude-3-5-haiku-latest")]["weight"] == 0.0
    assert found[("chat", "claude-3-5-haiku-latest")]["reason"] == (
        "weight 0: in an outage since 2026-11-02 09:55 UTC (90% errors)"
    )
    assert found[("chat", "gpt-4o-mini")]["weight"] == 1.0


def test_models_with_little_data_share_the_exploration() -> None:
    found = weights(
        calls(
            *traffic(MINI, 20, "0.0012", 1500),
            *traffic(HAIKU, 3, "0.0004", 900),
        ),
        routes=[
            RouteSpec(
                "chat",
                "cost",
                (
                    ("openai", "gpt-4o-mini"),
                    ("anthropic", "claude-3-5-haiku-latest"),
                    ("google", "gemini-2.0-flash"),
                ),
            )
        ],
    )
    haiku, flash = found[("chat", "claude-3-5-haiku-latest")], found[("chat", "gemini-2.0-flash")]
    assert found[("chat", "gpt-4o-mini")]["weight"] == 0.9
    assert haiku["weight"] == flash["weight"] == 0.05
    assert flash["reason"] == "exploration share: 0 successful calls in the last 60 min"
    assert flash["calls"] == 0


def test_a_route_with_no_ranked_model_splits_evenly() -> None:
    found = weights(calls(*traffic(MINI, 2, "0.0012", 1500), *traffic(HAIKU, 2, "0.004", 900)))
    assert {r["weight"] for r in found.values()} == {0.5}
    assert all(r["reason"].startswith("equal share while data comes in") for r in found.values())


def test_when_every_model_fails_the_least_bad_gets_everything() -> None:
    found = weights(
        calls(
            *traffic(MINI, 10, "0", 1500, **FAIL),
            *traffic(HAIKU, 8, "0", 900, **FAIL),
            *traffic(HAIKU, 2, "0.004", 900),
        )
    )
    haiku = found[("chat", "claude-3-5-haiku-latest")]
    assert haiku["weight"] == 1.0 and found[("chat", "gpt-4o-mini")]["weight"] == 0.0
    assert haiku["reason"].startswith("every candidate is failing; fewest errors here")


def test_weights_always_sum_to_one_with_four_decimals() -> None:
    found = weights(
        calls(
            *traffic(MINI, 20, "0.0012", 1500),
            *traffic(HAIKU, 20, "0.004", 900),
            *traffic(FLASH, 20, "0.003", 700),
            *traffic({**MINI, "request_model": "gpt-4.1-nano"}, 20, "0.002", 800),
        ),
        routes=[RouteSpec("chat", "cost", ())],
    )
    assert sum(r["weight"] for r in found.values()) == 1.0
    # 0.1 / 3 each for exploration; the best takes the rounding remainder.
    assert sorted(r["weight"] for r in found.values()) == [0.0333, 0.0333, 0.0333, 0.9001]


def test_calls_without_a_route_are_not_routed() -> None:
    assert weights(calls(*traffic(MINI, 20, "0.001", 100, route=""))) == {}

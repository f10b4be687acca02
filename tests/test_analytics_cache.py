"""Cache metrics and the near-duplicate report, on hand-made frames (no store).

Prices are genai-prices' list prices, written out by hand below:
gpt-4o $2.50/M input, $1.25/M cached input; claude-sonnet-4 $3.00/M input,
$0.30/M cache read, $3.75/M cache write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from analytics.cache import cache_hourly, saving_rates
from analytics.duplicates import near_duplicate_groups, similarity
from ingest.pricing import PriceBook
from tests.test_analytics_frames import at, calls

SONNET = {"provider": "anthropic", "request_model": "claude-sonnet-4-0", "response_model": ""}


def test_saving_rates_are_the_price_lists_differences() -> None:
    rates = saving_rates(
        PriceBook(), [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-0"), ("x", "nope")]
    ).collect()
    by_model = {r["model"]: r for r in rates.iter_rows(named=True)}
    assert by_model["gpt-4o"]["read_saving_usd"] == Decimal("0.00000125")
    assert by_model["gpt-4o"]["write_saving_usd"] == Decimal(0)
    assert by_model["claude-sonnet-4-0"]["read_saving_usd"] == Decimal("0.0000027")
    assert by_model["claude-sonnet-4-0"]["write_saving_usd"] == Decimal("-0.00000075")
    assert by_model["nope"]["read_saving_usd"] is None


def cache_rows(*rows: dict) -> dict[str, dict]:
    """The 10:00 hour's cache_hourly rows by model."""
    frame = calls(*rows)
    models = frame.select("provider", "response_model", "request_model").collect()
    pairs = {(p, r or q) for p, r, q in models.iter_rows()}
    result = cache_hourly(frame, saving_rates(PriceBook(), pairs)).collect()
    return {row["model"]: row for row in result.iter_rows(named=True) if row["hour"] == at(0)}


def test_cached_tokens_give_the_savings_the_price_list_implies() -> None:
    rows = cache_rows(
        {"input_tokens": 20_000, "cache_read_tokens": 10_000},
        {"input_tokens": 40_000, "cache_read_tokens": 30_000, "ts": at(10)},
        {**SONNET, "input_tokens": 200_000, "cache_read_tokens": 100_000},
        {**SONNET, "input_tokens": 50_000, "cache_write_tokens": 20_000},
    )
    gpt, sonnet = rows["gpt-4o"], rows["claude-sonnet-4-0"]
    # 40,000 cached tokens x ($2.50 - $1.25)/M
    assert gpt["provider_cache_savings_usd"] == Decimal("0.05")
    assert gpt["provider_cache_hit_rate"] == pytest.approx(40_000 / 60_000)
    # 100,000 x ($3.00 - $0.30)/M saved, 20,000 x ($3.75 - $3.00)/M paid extra for writing
    assert sonnet["provider_cache_savings_usd"] == Decimal("0.27") - Decimal("0.015")
    assert sonnet["provider_cache_hit_rate"] == pytest.approx(100_000 / 250_000)


def test_gateway_hit_rate_counts_hits_over_lookups() -> None:
    row = cache_rows(
        {"gateway_cache": "hit"},
        {"gateway_cache": "miss"},
        {"gateway_cache": "miss"},
        {"gateway_cache": ""},
    )["gpt-4o"]
    assert (row["gateway_hits"], row["gateway_misses"]) == (1, 2)
    assert row["gateway_hit_rate"] == pytest.approx(1 / 3)


def test_exact_duplicates_and_what_an_exact_cache_would_have_saved() -> None:
    same = {"request_hash": "h1"}
    row = cache_rows(
        {**same, "ts": at(5), "cost_usd": Decimal("0.02")},
        {**same, "ts": at(1), "cost_usd": Decimal("0.01")},  # the first: not a duplicate
        {**same, "ts": at(9), "cost_usd": Decimal("0.04")},
        {**same, "ts": at(7), "cost_usd": Decimal("0.03")},
        {**same, "ts": at(8), "status": "error", "cost_usd": None},  # a failure is no answer
        {**same, "ts": at(9), "gateway_cache": "hit", "cost_usd": Decimal("0.05")},  # cached
        {"request_hash": "h2", "ts": at(3), "cost_usd": Decimal("0.07")},
        {"request_hash": "", "ts": at(3)},  # no prompt captured: not comparable
        {**same, "ts": at(70), "cost_usd": Decimal("0.09")},  # next hour: its own first
    )["gpt-4o"]
    assert row["hashed_calls"] == 7
    assert row["duplicate_calls"] == 3
    assert row["exact_cache_savings_usd"] == Decimal("0.09")  # 0.02 + 0.03 + 0.04
    assert row["duplicate_rate"] == pytest.approx(3 / 7)
    assert row["calls"] == 8


def prompts(*rows: dict) -> pl.LazyFrame:
    base = {
        "team": "support",
        "app": "bot",
        "route": "chat",
        "context_id": 0,
        "calls": 1,
        "ok_calls": 1,
        "cost_usd": Decimal("0.01"),
        "first_cost_usd": Decimal("0.01"),
        "first_ts": datetime(2026, 11, 2, tzinfo=UTC),
        "last_ts": datetime(2026, 11, 2, tzinfo=UTC),
    }
    full = [{**base, "text_id": i, **row} for i, row in enumerate(rows)]
    types = {
        "cost_usd": pl.Decimal(38, 12),
        "first_cost_usd": pl.Decimal(38, 12),
        "context_id": pl.UInt64,
        "text_id": pl.UInt64,
        "calls": pl.UInt64,
        "ok_calls": pl.UInt64,
    }
    return pl.DataFrame(full, schema_overrides=types).lazy()


RESET = "how do i reset my password"
RESET_THANKS = "how do i reset my password thanks"
TICKET_1 = "summarize this ticket customer cannot log in after password reset tried twice"
TICKET_2 = "summarize this ticket customer cannot log in after a password reset tried twice"


def test_similarity_is_dice_over_character_trigrams() -> None:
    # " how do i reset my password " has 26 distinct 3-grams, all of them in
    # " how do i reset my password thanks ", which has 33: 2 x 26 / (26 + 33).
    assert similarity(RESET, RESET_THANKS) == pytest.approx(52 / 59)
    assert similarity(RESET, RESET) == 1.0
    assert similarity(RESET, "what is the capital of france") < 0.3


def test_near_duplicates_are_grouped_and_priced() -> None:
    day = datetime(2026, 11, 2, tzinfo=UTC)
    groups = near_duplicate_groups(
        prompts(
            {
                "text": RESET,
                "calls": 5,
                "cost_usd": Decimal("0.05"),
                "first_ts": day + timedelta(hours=1),
                "first_cost_usd": Decimal("0.011"),
            },
            {
                "text": RESET_THANKS,
                "calls": 3,
                "cost_usd": Decimal("0.03"),
                "first_ts": day,  # asked first, so its first call is the one a cache needs
                "first_cost_usd": Decimal("0.012"),
                "last_ts": day + timedelta(hours=5),
            },
            {"text": "what is the capital of france"},  # once: not a group
            {"text": TICKET_1, "cost_usd": Decimal("0.2"), "first_cost_usd": Decimal("0.2")},
            {"text": TICKET_2, "cost_usd": Decimal("0.3"), "first_cost_usd": Decimal("0.3")},
            {"text": RESET, "team": "search", "calls": 2, "cost_usd": Decimal("0.02")},
        ),
        min_similarity=0.8,
    ).collect()
    found = {(g["team"], g["example"]): g for g in groups.iter_rows(named=True)}
    assert set(found) == {("support", RESET), ("support", TICKET_1), ("search", RESET)}
    reset = found[("support", RESET)]
    assert (reset["prompts"], reset["calls"], reset["repeat_calls"]) == (2, 8, 7)
    assert reset["variants"] == [RESET_THANKS]
    assert reset["cost_usd"] == Decimal("0.08")
    assert reset["savings_usd"] == Decimal("0.08") - Decimal("0.012")
    assert reset["lowest_similarity"] == pytest.approx(52 / 59)
    assert reset["last_seen"] == day + timedelta(hours=5)
    ticket = found[("support", TICKET_1)]
    assert ticket["savings_usd"] == Decimal("0.3")  # the later variant's cost
    repeated = found[("search", RESET)]  # the same text in another team: its own group
    assert (repeated["prompts"], repeated["calls"], repeated["lowest_similarity"]) == (1, 2, 1.0)
    # Most savings first.
    assert groups["example"].to_list()[0] == TICKET_1


def test_a_stricter_similarity_splits_groups() -> None:
    frame = prompts({"text": RESET}, {"text": RESET_THANKS})
    assert near_duplicate_groups(frame, min_similarity=0.8).collect().height == 1
    assert near_duplicate_groups(frame, min_similarity=0.9).collect().height == 0

"""Hand-made llm_calls frames for the analytics job tests, and the shared expressions.

``calls(...)`` builds raw call rows the way the store holds them; the jobs
take such rows as well as the sums the runner reads from ClickHouse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from analytics.frames import error_class

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "ts": T0,
    "trace_id": "",
    "provider": "openai",
    "request_model": "gpt-4o",
    "response_model": "gpt-4o",
    "status": "ok",
    "http_status": 200,
    "error_type": "",
    "duration_ms": 1000.0,
    "ttft_ms": None,
    "input_tokens": 100,
    "output_tokens": 10,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": Decimal("0.001"),
    "team": "payments",
    "project": "checkout",
    "user_id": "u1",
    "app": "web",
    "route": "chat",
    "api_key_fingerprint": "",
    "attempt": 0,
    "retry_of": "",
    "fallback_of": "",
    "gateway_cache": "",
    "request_hash": "",
    "input_content": "",
    "prompt_id": 0,
}
TYPES = {
    "ts": pl.Datetime("us", "UTC"),
    "cost_usd": pl.Decimal(38, 12),
    "http_status": pl.UInt16,
    "ttft_ms": pl.Float64,
    "attempt": pl.UInt16,
    "prompt_id": pl.UInt64,
    **{
        c: pl.UInt64
        for c in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
        )
    },
}


def calls(*rows: dict[str, Any]) -> pl.LazyFrame:
    """Raw call rows: each dict overrides BASE; span ids default to s0, s1, ..."""
    full = [{**BASE, "span_id": f"s{i}", **row} for i, row in enumerate(rows)]
    return pl.DataFrame(full, schema_overrides=TYPES).lazy()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_error_classes_follow_status_then_provider_words() -> None:
    frame = calls(
        {"status": "ok"},
        {"status": "error", "http_status": 429, "error_type": "http_429"},
        {"status": "error", "http_status": 0, "error_type": "RESOURCE_EXHAUSTED"},
        {"status": "error", "http_status": 400, "error_type": "ThrottlingException"},
        {"status": "error", "http_status": 529, "error_type": "overloaded_error"},
        {"status": "error", "http_status": 0, "error_type": "ServiceUnavailable"},
        {"status": "error", "http_status": 504, "error_type": ""},
        {"status": "error", "http_status": 0, "error_type": "ReadTimeout"},
        {"status": "error", "http_status": 400, "error_type": "invalid_request_error"},
        {"status": "error", "http_status": 0, "error_type": "interrupted"},
    )
    classes = frame.select(error_class()).collect().to_series().to_list()
    assert classes == ["", *["429"] * 3, "5xx", "5xx", "timeout", "timeout", "other", "other"]

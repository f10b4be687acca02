"""Polars expressions the jobs share: models, error classes, call groups.

Each job accepts either raw ``llm_calls`` rows (as tests build them by hand)
or rows the runner already summed in ClickHouse. Summed rows carry a
``calls`` column; a raw row is a group of one call, and ``call_groups``
gives it the same columns, so one function serves both.
"""

from __future__ import annotations

import polars as pl

from analytics.tables import USD_POLARS

TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
ZERO_USD = pl.lit(0).cast(USD_POLARS)

# SQL for the same things, for the runner's pre-aggregation.
BILLED_MODEL_SQL = "if(c.response_model != '', c.response_model, c.request_model)"
REQUESTED_MODEL_SQL = "if(c.request_model != '', c.request_model, c.response_model)"


def billed_model() -> pl.Expr:
    """The model that answered, as priced and as GET /api/v1/spend groups it."""
    return (
        pl.when(pl.col("response_model") != "")
        .then(pl.col("response_model"))
        .otherwise(pl.col("request_model"))
    )


def requested_model() -> pl.Expr:
    """The model the caller asked for: what a router chooses, and what a
    failed call (with no response model) is known by."""
    return (
        pl.when(pl.col("request_model") != "")
        .then(pl.col("request_model"))
        .otherwise(pl.col("response_model"))
    )


def with_defaults(frame: pl.LazyFrame, defaults: dict[str, pl.Expr]) -> pl.LazyFrame:
    """Add the columns a hand-made frame left out."""
    present = set(frame.collect_schema().names())
    missing = {name: expr for name, expr in defaults.items() if name not in present}
    return frame.with_columns(**missing) if missing else frame


def usd(name: str) -> pl.Expr:
    """A cost column as Decimal(38, 12), NULL as 0."""
    return pl.col(name).cast(USD_POLARS).fill_null(ZERO_USD)


def count(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(0).cast(pl.UInt64)


def error_class() -> pl.Expr:
    """429 (rate limited), 5xx, timeout or other, from http_status and error_type.

    Providers name the same failure differently (rate_limit_error,
    RESOURCE_EXHAUSTED, ThrottlingException; overloaded_error,
    ServiceUnavailable), so the type is matched by words, after the status."""
    kind = pl.col("error_type").fill_null("").str.to_lowercase()
    status = pl.col("http_status").fill_null(0).cast(pl.Int64)
    return (
        pl.when(pl.col("status") != "error")
        .then(pl.lit(""))
        .when(
            (status == 429) | kind.str.contains("rate.?limit|429|resource_exhausted|throttl|quota")
        )
        .then(pl.lit("429"))
        .when(status.is_in([408, 504]) | kind.str.contains("timeout|timed.?out|deadline"))
        .then(pl.lit("timeout"))
        .when(
            (status >= 500)
            | kind.str.contains(
                "server_error|overloaded|internal|unavailable|api_error|5\\d\\d|bad_gateway"
            )
        )
        .then(pl.lit("5xx"))
        .otherwise(pl.lit("other"))
    )

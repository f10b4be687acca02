"""Arrow schemas of the tables the jobs write, mirroring migrations 0006–0009.

A job's polars output is cast to its table's schema before insert, so a
column that went missing or changed type fails loudly here, not in the store.
A test checks these against the tables the migrations create.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

_S = pa.timestamp("s", tz="UTC")
_MS = pa.timestamp("ms", tz="UTC")
_US = pa.timestamp("us", tz="UTC")
_STR = pa.string()
_U64 = pa.uint64()
_F64 = pa.float64()
USD = pa.decimal128(38, 12)
USD_POLARS = pl.Decimal(38, 12)

JOB_RUNS = pa.schema(
    [
        ("job", _STR),
        ("run_id", _STR),
        ("trigger", _STR),
        ("full", pa.bool_()),
        ("started_at", _MS),
        ("finished_at", _MS),
        ("status", _STR),
        ("high_water", _MS),
        ("windows", pa.uint32()),
        ("rows_written", _U64),
        ("duration_ms", _F64),
        ("error", _STR),
        ("details", _STR),
    ]
)

COST_HOURLY = pa.schema(
    [
        ("hour", _S),
        ("team", _STR),
        ("project", _STR),
        ("user_id", _STR),
        ("app", _STR),
        ("route", _STR),
        ("provider", _STR),
        ("model", _STR),
        ("calls", _U64),
        ("error_calls", _U64),
        ("unpriced_calls", _U64),
        ("input_tokens", _U64),
        ("cache_read_tokens", _U64),
        ("cache_write_tokens", _U64),
        ("output_tokens", _U64),
        ("reasoning_tokens", _U64),
        ("cost_usd", USD),
        ("cost_per_1k_calls", _F64),
        ("computed_at", _MS),
    ]
)

BUDGET_STATUS = pa.schema(
    [
        ("computed_at", _MS),
        ("budget", _STR),
        ("team", _STR),
        ("project", _STR),
        ("user_id", _STR),
        ("api_key_fingerprint", _STR),
        ("period_start", _S),
        ("period_end", _S),
        ("amount_usd", USD),
        ("spent_usd", USD),
        ("forecast_usd", USD),
        ("spent_pct", _F64),
        ("forecast_pct", _F64),
        ("trend_usd_per_day", _F64),
        ("status", _STR),
        ("days", pa.list_(pa.date32())),
        ("daily_cost_usd", pa.list_(USD)),
    ]
)

BUDGET_ALERTS = pa.schema(
    [
        ("period_start", _S),
        ("budget", _STR),
        ("kind", _STR),
        ("threshold_pct", pa.uint8()),
        ("raised_at", _MS),
        ("amount_usd", USD),
        ("spent_usd", USD),
        ("forecast_usd", USD),
        ("message", _STR),
        ("delivered_at", _MS),
        ("attempts", pa.uint32()),
        ("last_error", _STR),
        ("version", _U64),
    ]
)

CACHE_HOURLY = pa.schema(
    [
        ("hour", _S),
        ("team", _STR),
        ("app", _STR),
        ("route", _STR),
        ("provider", _STR),
        ("model", _STR),
        ("calls", _U64),
        ("input_tokens", _U64),
        ("cache_read_tokens", _U64),
        ("cache_write_tokens", _U64),
        ("provider_cache_hit_rate", _F64),
        ("provider_cache_savings_usd", USD),
        ("gateway_hits", _U64),
        ("gateway_misses", _U64),
        ("gateway_hit_rate", _F64),
        ("hashed_calls", _U64),
        ("duplicate_calls", _U64),
        ("duplicate_rate", _F64),
        ("exact_cache_savings_usd", USD),
        ("cost_usd", USD),
        ("computed_at", _MS),
    ]
)

PROMPT_FINGERPRINTS = pa.schema(
    [
        ("hour", _S),
        ("team", _STR),
        ("app", _STR),
        ("route", _STR),
        ("context_id", _U64),
        ("text_id", _U64),
        ("text", _STR),
        ("lsh_keys", pa.list_(_U64)),
        ("calls", _U64),
        ("ok_calls", _U64),
        ("cost_usd", USD),
        ("first_ts", _US),
        ("first_cost_usd", USD),
        ("last_ts", _US),
        ("computed_at", _MS),
    ]
)

NEAR_DUPLICATES = pa.schema(
    [
        ("computed_at", _MS),
        ("period_start", _S),
        ("period_end", _S),
        ("min_similarity", _F64),
        ("group_id", _U64),
        ("team", _STR),
        ("app", _STR),
        ("route", _STR),
        ("prompts", _U64),
        ("calls", _U64),
        ("repeat_calls", _U64),
        ("cost_usd", USD),
        ("savings_usd", USD),
        ("lowest_similarity", _F64),
        ("first_seen", _US),
        ("last_seen", _US),
        ("example", _STR),
        ("variants", pa.list_(_STR)),
    ]
)

FAILOVER_5M = pa.schema(
    [
        ("window_start", _S),
        ("provider", _STR),
        ("model", _STR),
        ("attempts", _U64),
        ("ok", _U64),
        ("errors", _U64),
        ("errors_429", _U64),
        ("errors_5xx", _U64),
        ("errors_timeout", _U64),
        ("errors_other", _U64),
        ("error_rate", _F64),
        ("retries", _U64),
        ("retries_per_call", _F64),
        ("chains", _U64),
        ("chains_recovered", _U64),
        ("fallback_chains", _U64),
        ("fallback_chains_recovered", _U64),
        ("failed_input_tokens", _U64),
        ("failed_output_tokens", _U64),
        ("failed_cost_usd", USD),
        ("computed_at", _MS),
    ]
)

FALLBACK_PATHS_5M = pa.schema(
    [
        ("window_start", _S),
        ("from_provider", _STR),
        ("from_model", _STR),
        ("to_provider", _STR),
        ("to_model", _STR),
        ("chains", _U64),
        ("recovered", _U64),
        ("calls", _U64),
        ("computed_at", _MS),
    ]
)

OUTAGES = pa.schema(
    [
        ("computed_at", _MS),
        ("provider", _STR),
        ("model", _STR),
        ("started_at", _S),
        ("ended_at", _S),
        ("windows", pa.uint32()),
        ("attempts", _U64),
        ("errors", _U64),
        ("peak_error_rate", _F64),
        ("recovered", pa.bool_()),
        ("time_to_recover_s", _F64),
    ]
)

ROUTING_WEIGHTS = pa.schema(
    [
        ("route", _STR),
        ("version", _U64),
        ("computed_at", _MS),
        ("objective", _STR),
        ("window_minutes", pa.uint32()),
        ("provider", _STR),
        ("model", _STR),
        ("weight", _F64),
        ("reason", _STR),
        ("calls", _U64),
        ("error_rate", _F64),
        ("cost_per_call", _F64),
        ("p50_ms", _F64),
        ("p95_ms", _F64),
        ("ttft_p50_ms", _F64),
        ("ttft_p95_ms", _F64),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "job_runs": JOB_RUNS,
    "cost_hourly_versions": COST_HOURLY,
    "budget_status": BUDGET_STATUS,
    "budget_alerts": BUDGET_ALERTS,
    "cache_hourly_versions": CACHE_HOURLY,
    "prompt_fingerprints": PROMPT_FINGERPRINTS,
    "near_duplicates": NEAR_DUPLICATES,
    "failover_5m_versions": FAILOVER_5M,
    "fallback_paths_5m_versions": FALLBACK_PATHS_5M,
    "outages": OUTAGES,
    "routing_weights": ROUTING_WEIGHTS,
}


def to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """The frame's columns in the table's order and types (extra columns dropped)."""
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"job output lacks columns {missing}")
    table = frame.select(schema.names).to_arrow()
    # safe=False: timestamps go from polars' microseconds to the table's
    # seconds or milliseconds, dropping what the column does not keep.
    return table.cast(schema, safe=False)

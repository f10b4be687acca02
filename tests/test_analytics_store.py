"""The job runner on a real store: idempotent writes, late data, SQL that agrees
with the pure functions, fingerprints, budgets and their webhook.

Runs on embedded chDB, and on a ClickHouse server too when
TOKENTRAIL_TEST_CLICKHOUSE_URL is set (each test in a database of its own).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from analytics.cache import cache_hourly, saving_rates
from analytics.config import AnalyticsConfig, Budget
from analytics.cost import cost_hourly
from analytics.failover import failover_windows
from analytics.runner import JobRunner
from analytics.tables import TABLES
from ingest.migrate import migrate
from ingest.pricing import PriceBook
from ingest.rows import LLM_CALLS_SCHEMA, rows_table
from ingest.store import ChdbStore, ServerStore, Store, query_polars, query_rows

SERVER_URL = os.environ.get("TOKENTRAIL_TEST_CLICKHOUSE_URL", "")
NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = NOW.replace(minute=0, second=0) - timedelta(hours=3)  # three whole hours ago

DEFAULTS: dict[str, Any] = {
    "trace_id": "",
    "parent_span_id": "",
    "source": "otlp",
    "provider": "openai",
    "operation": "chat",
    "request_model": "gpt-4o",
    "response_model": "gpt-4o",
    "server_address": "",
    "http_status": 200,
    "status": "ok",
    "error_type": "",
    "is_stream": False,
    "duration_ms": 800.0,
    "input_tokens": 1000,
    "output_tokens": 100,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": Decimal("0.0035"),
    "cost_source": "genai-prices",
    "price_version": "test",
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
    "finish_reason": "stop",
    "tool_call_count": 0,
    "provider_request_id": "",
    "request_hash": "",
    "input_content": "",
    "output_content": "",
    "redaction_count": 0,
    "attributes": {},
}


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "chdb":
        opened: Store = ChdbStore(tmp_path / "chdb")
    else:
        if not SERVER_URL:
            pytest.skip("set TOKENTRAIL_TEST_CLICKHOUSE_URL to test the ClickHouse server backend")
        base, _, _ = SERVER_URL.rstrip("/").rpartition("/")
        opened = ServerStore(f"{base}/tt_test_{uuid.uuid4().hex[:8]}")
    migrate(opened)
    yield opened
    if request.param == "server":
        opened.command(f"DROP DATABASE IF EXISTS {opened.database}")
    opened.close()


def insert_calls(store: Store, rows: list[dict[str, Any]], ingested_at: datetime | None = None):
    full = [{**DEFAULTS, "span_id": uuid.uuid4().hex[:16], "ts": HOUR, **row} for row in rows]
    table = rows_table(full, LLM_CALLS_SCHEMA)
    if ingested_at is not None:
        stamps = pa.array([ingested_at] * len(full), pa.timestamp("ms", tz="UTC"))
        table = table.append_column("ingested_at", stamps)
    store.insert_arrow("llm_calls", table)


def runner(store: Store, **config: Any) -> JobRunner:
    return JobRunner(store, AnalyticsConfig(**config), PriceBook())


def run_ok(jobs: JobRunner, name: str | None = None, full: bool = False) -> list[dict]:
    results = jobs.run(name, full=full)
    assert [r["error"] for r in results if r["status"] != "ok"] == []
    return results


def snapshot(store: Store) -> dict[str, list[dict]]:
    """Every job output, without the columns that depend on when it was computed
    (a forecast moves with the clock; the report covers the last N days)."""
    moving = ("computed_at", "period_start", "period_end", "forecast_usd", "forecast_pct")
    moving += ("trend_usd_per_day", "status")
    found = {}
    for table in (
        "cost_hourly",
        "cache_hourly",
        "failover_5m",
        "fallback_paths_5m",
        "near_duplicates",
        "outages",
        "budget_status",
    ):
        frame = query_polars(store, f"SELECT * FROM {table}")
        frame = frame.drop([c for c in moving if c in frame.columns])
        found[table] = frame.sort(frame.columns).to_dicts()
    return found


def mixed_calls() -> list[dict[str, Any]]:
    rows = []
    for i in range(60):
        failed = i % 7 == 0
        rows.append(
            {
                "ts": HOUR + timedelta(minutes=i * 1.7),
                "team": ["payments", "search"][i % 2],
                "user_id": f"u{i % 5}",
                "request_model": ["gpt-4o", "gpt-4o-mini"][i % 3 == 0],
                "response_model": "" if failed else ["gpt-4o", "gpt-4o-mini"][i % 3 == 0],
                "status": "error" if failed else "ok",
                "http_status": [503, 429][i % 2] if failed else 200,
                "cost_usd": None if failed else Decimal(i + 1) / Decimal(1000),
                "cache_read_tokens": 500 if i % 4 == 0 else 0,
                "gateway_cache": ["", "hit", "miss"][i % 3],
                "request_hash": f"h{i % 9}",
                "trace_id": f"t{i // 2}",
                "input_content": f"question {i % 9}",
            }
        )
    return rows


def test_job_tables_match_their_schemas(store: Store) -> None:
    for table, schema in TABLES.items():
        columns = [r["name"] for r in query_rows(store, f"DESCRIBE TABLE {table}")]
        assert columns == schema.names, table
    for view in ("cost_hourly", "cache_hourly", "failover_5m", "fallback_paths_5m"):
        columns = [r["name"] for r in query_rows(store, f"DESCRIBE TABLE {view}")]
        assert columns == TABLES[f"{view}_versions"].names, view


def test_rerunning_changes_nothing_and_late_calls_count_once(store: Store) -> None:
    insert_calls(store, mixed_calls(), ingested_at=NOW - timedelta(hours=2))
    # No overlap, so the test can see exactly which windows a run recomputes
    # (the default re-reads the last two minutes' calls too: harmless, see above).
    budgets = (Budget("team=payments", Decimal(1), team="payments"),)
    jobs = runner(store, budgets=budgets, late_overlap_s=0)
    run_ok(jobs)
    first = snapshot(store)
    assert first["cost_hourly"] and first["failover_5m"] and first["cache_hourly"]
    run_ok(jobs)  # nothing new: no window is recomputed
    run_ok(jobs, full=True)  # everything recomputed from scratch
    assert snapshot(store) == first

    # Two calls arrive late for the first hour, and one for an hour before it.
    late = [
        {"ts": HOUR + timedelta(minutes=5), "cost_usd": Decimal("0.100000000001")},
        {"ts": HOUR + timedelta(minutes=50), "cost_usd": Decimal("0.2")},
        {"ts": HOUR - timedelta(hours=5), "cost_usd": Decimal("0.3")},
    ]
    insert_calls(store, late)
    results = run_ok(jobs, "cost")
    assert results[0]["windows"] == 2  # only the two hours that got calls
    run_ok(jobs, "cost")
    per_hour = {
        r["hour"]: r["c"]
        for r in query_rows(store, "SELECT hour, sum(cost_usd) AS c FROM cost_hourly GROUP BY hour")
    }
    expected = {
        r["hour"]: r["c"]
        for r in query_rows(
            store,
            "SELECT toDateTime64(toStartOfHour(ts), 0, 'UTC') AS hour, "
            "sum(ifNull(cost_usd, toDecimal128(0, 12))) AS c FROM llm_calls GROUP BY hour",
        )
    }
    assert per_hour == expected
    assert per_hour[HOUR] == sum(
        (r["cost_usd"] or Decimal(0) for r in mixed_calls() if r["ts"] < HOUR + timedelta(hours=1)),
        Decimal(0),
    ) + Decimal("0.300000000001")


def test_clickhouse_sums_agree_with_the_pure_functions(store: Store) -> None:
    insert_calls(store, mixed_calls())
    run_ok(runner(store))
    raw = query_polars(store, "SELECT * EXCEPT (attributes) FROM llm_calls").lazy()
    raw = raw.with_columns(
        prompt_id=pl.when(pl.col("input_content") == "")
        .then(0)
        .otherwise(pl.col("input_content").hash())
        .cast(pl.UInt64)
    )

    def rows(frame: pl.DataFrame, keys: list[str]) -> list[dict]:
        return frame.drop([c for c in frame.columns if c == "computed_at"]).sort(keys).to_dicts()

    keys = ["hour", "team", "user_id", "model"]
    expected_cost = cost_hourly(raw).collect()
    stored_cost = query_polars(store, "SELECT * FROM cost_hourly")
    assert rows(stored_cost.select(expected_cost.columns), keys) == rows(expected_cost, keys)

    models = raw.select("provider", "response_model", "request_model").collect()
    rates = saving_rates(PriceBook(), {(p, r or q) for p, r, q in models.iter_rows()})
    expected_cache = cache_hourly(raw, rates).collect()
    stored_cache = query_polars(store, "SELECT * FROM cache_hourly")
    keys = ["hour", "team", "app", "model"]
    assert rows(stored_cache.select(expected_cache.columns), keys) == rows(expected_cache, keys)

    windows, _ = failover_windows(raw, raw, 120)
    expected_failover = windows.collect()
    stored_failover = query_polars(store, "SELECT * FROM failover_5m")
    keys = ["window_start", "provider", "model"]
    assert rows(stored_failover.select(expected_failover.columns), keys) == rows(
        expected_failover, keys
    )

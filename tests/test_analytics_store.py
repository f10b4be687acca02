"""The job runner on a real store: idempotent writes, late data, SQL that agrees
with the pure functions, fingerprints, budgets and their webhook.

Runs on embedded chDB, and on a ClickHouse server too when
TOKENTRAIL_TEST_CLICKHOUSE_URL is set (each test in a database of its own).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
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
from analytics.spend import rollup_spend_query
from analytics.tables import TABLES
from collector.routers.finance import spend_query
from ingest.migrate import migrate
from ingest.pricing import PriceBook
from ingest.rows import LLM_CALLS_SCHEMA, rows_table
from ingest.store import ChdbStore, ServerStore, Store, query_polars, query_rows
from tests.conftest import free_port

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


def test_spend_from_the_rollup_equals_spend_from_raw_calls(store: Store) -> None:
    insert_calls(store, mixed_calls(), ingested_at=NOW - timedelta(hours=2))
    run_ok(runner(store), "cost")
    # Late calls the cost job has not seen yet: their hours must come from llm_calls.
    insert_calls(
        store,
        [
            {"ts": HOUR + timedelta(minutes=10), "cost_usd": Decimal("0.123456789012")},
            {"ts": HOUR + timedelta(hours=1, minutes=5), "team": "search", "user_id": "late"},
        ],
    )
    start = HOUR - timedelta(minutes=20)  # a partial hour at each end
    end = NOW + timedelta(minutes=1)
    cases = [
        ([], None),
        (["team"], None),
        (["team", "model", "user"], "hour"),
        (["project"], "day"),
    ]
    for group_by, granularity in cases:
        base = {"start": start, "end": end, "team": "", "project": ""}
        rollup_params = dict(base)
        sql = rollup_spend_query(store, group_by, granularity, start, end, rollup_params, 0)
        assert sql is not None and rollup_params["dirty"]  # the late hours
        raw_params = dict(base)
        raw = query_rows(store, spend_query(group_by, granularity, raw_params), raw_params)
        assert query_rows(store, sql, rollup_params) == raw, (group_by, granularity)
    # Groups the rollup does not have are left to the raw query.
    assert rollup_spend_query(store, ["status"], None, start, end, {}, 0) is None


def messages(*texts: str) -> str:
    roles = ["system", *(["user", "assistant"] * len(texts))]
    parts = [
        {"role": r, "content": t}
        for r, t in zip(roles, ("You are Acme's helpdesk.", *texts), strict=False)
    ]
    return json.dumps(parts)


def test_exact_and_near_duplicate_prompts_are_found_and_priced(store: Store) -> None:
    reset = messages("How do I reset my password?")
    reset_thanks = messages("How do I reset my password? Thanks!")
    in_a_conversation = messages("Hi", "Hello! How can I help?", "How do I reset my password?")
    rows = [
        {"input_content": reset, "request_hash": "r1", "cost_usd": Decimal("0.010")},
        {"input_content": reset, "request_hash": "r1", "cost_usd": Decimal("0.011")},
        {"input_content": reset, "request_hash": "r1", "cost_usd": Decimal("0.012")},
        {"input_content": reset_thanks, "request_hash": "r2", "cost_usd": Decimal("0.020")},
        {"input_content": reset_thanks, "request_hash": "r2", "cost_usd": Decimal("0.021")},
        {"input_content": messages("What is the capital of France?"), "request_hash": "r3"},
        {"input_content": in_a_conversation, "request_hash": "r4"},
        {"input_content": reset, "request_hash": "r1", "team": "search"},
    ]
    for minute, row in enumerate(rows):
        row["ts"] = HOUR + timedelta(minutes=minute)
    insert_calls(store, rows)
    run_ok(runner(store))
    cache = query_rows(
        store, "SELECT team, duplicate_calls, exact_cache_savings_usd FROM cache_hourly"
    )
    payments = next(r for r in cache if r["team"] == "payments")
    assert payments["duplicate_calls"] == 3  # two repeats of r1, one of r2
    assert payments["exact_cache_savings_usd"] == Decimal("0.011") + Decimal("0.012") + Decimal(
        "0.021"
    )
    groups = query_rows(store, "SELECT * FROM near_duplicates ORDER BY savings_usd DESC")
    found = {(g["team"], g["example"]): g for g in groups}
    # The other team asked once: no repeat there. France was asked once.
    assert set(found) == {("payments", "how do i reset my password")}
    group = found[("payments", "how do i reset my password")]
    # The question asked in a conversation has another context: not the same request.
    assert (group["prompts"], group["calls"]) == (2, 5)
    assert group["variants"] == ["how do i reset my password thanks"]
    assert group["savings_usd"] == Decimal("0.011") + Decimal("0.012") + Decimal("0.041")
    assert group["lowest_similarity"] >= 0.8


def test_budget_alerts_are_retried_until_the_webhook_takes_them(store: Store) -> None:
    insert_calls(store, [{"ts": NOW - timedelta(minutes=5), "cost_usd": Decimal("5")}])
    port = free_port()
    jobs = runner(
        store,
        budgets=(Budget("team=payments", Decimal(1), team="payments"),),
        webhook_url=f"http://127.0.0.1:{port}/alerts",
    )
    first = run_ok(jobs, "budgets")[0]["details"]
    assert (first["alerts_raised"], first["alerts_delivered"]) == (4, 0)
    alerts = query_rows(store, "SELECT * FROM budget_alerts FINAL")
    assert all(a["delivered_at"] is None and a["attempts"] == 1 for a in alerts)
    assert all("ConnectError" in a["last_error"] for a in alerts)

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        second = run_ok(jobs, "budgets")[0]["details"]
        assert (second["alerts_raised"], second["alerts_delivered"]) == (0, 4)
        assert run_ok(jobs, "budgets")[0]["details"]["alerts_delivered"] == 0
    finally:
        server.shutdown()
    assert sorted((m["alert"]["kind"], m["alert"]["threshold_pct"]) for m in received) == [
        ("forecast", 80),
        ("forecast", 100),
        ("spend", 80),
        ("spend", 100),
    ]
    delivered = query_rows(store, "SELECT delivered_at, attempts FROM budget_alerts FINAL")
    assert all(a["delivered_at"] is not None and a["attempts"] == 2 for a in delivered)


def test_routing_keeps_a_new_version_only_when_weights_change(store: Store) -> None:
    recent = NOW - timedelta(minutes=20)
    rows = [
        {"ts": recent, "request_model": m, "response_model": m, "cost_usd": Decimal(c)}
        for m, c in (("gpt-4o-mini", "0.001"), ("gpt-4o", "0.01"))
        for _ in range(12)
    ]
    insert_calls(store, rows)
    jobs = runner(store, routing_min_calls=5)
    run_ok(jobs, "routing")
    run_ok(jobs, "routing")
    versions = query_rows(store, "SELECT DISTINCT version FROM routing_weights")
    assert [v["version"] for v in versions] == [1]
    failing = {"request_model": "gpt-4o-mini", "response_model": "", "status": "error"}
    insert_calls(store, [{"ts": recent, **failing, "cost_usd": None}] * 20)
    run_ok(jobs, "routing")
    latest = query_rows(
        store, "SELECT model, weight FROM routing_weights WHERE version = 2 ORDER BY model"
    )
    assert latest == [{"model": "gpt-4o", "weight": 1.0}, {"model": "gpt-4o-mini", "weight": 0.0}]

"""The store on both backends: embedded chDB always, a ClickHouse server when
TOKENTRAIL_TEST_CLICKHOUSE_URL is set (http://user:pass@host:8123/db)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.migrate import CONTENT_COLUMNS, Migration, apply_content_ttl, load_migrations, migrate
from ingest.rows import LLM_CALLS_SCHEMA, SPANS_SCHEMA, TOOL_CALLS_SCHEMA, rows_table
from ingest.store import (
    ChdbStore,
    ServerStore,
    Store,
    StoreError,
    query_polars,
    query_rows,
    release_memory,
)

SERVER_URL = os.environ.get("TOKENTRAIL_TEST_CLICKHOUSE_URL", "")


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "chdb":
        opened: Store = ChdbStore(tmp_path / "chdb")
    else:
        if not SERVER_URL:
            pytest.skip("set TOKENTRAIL_TEST_CLICKHOUSE_URL to test the ClickHouse server backend")
        # A database of this test's own, so runs never see each other's rows.
        base, _, _ = SERVER_URL.rstrip("/").rpartition("/")
        opened = ServerStore(f"{base}/tt_test_{uuid.uuid4().hex[:8]}")
    migrate(opened)
    yield opened
    if request.param == "server":
        opened.command(f"DROP DATABASE IF EXISTS {opened.database}")
    opened.close()


def test_migrations_apply_once_and_are_recorded(store: Store) -> None:
    assert migrate(store) == []
    versions = [
        r["version"]
        for r in query_rows(store, "SELECT version FROM schema_migrations ORDER BY version")
    ]
    assert versions == [m.version for m in load_migrations()]
    tables = {
        r["name"]
        for r in query_rows(
            store, "SELECT name FROM system.tables WHERE database = currentDatabase()"
        )
    }
    assert {"spans", "llm_calls", "tool_calls", "audit_log", "api_keys"} <= tables


def test_edited_migration_is_refused(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in load_migrations():
        (folder / f"{migration.version:04d}_{migration.name}.sql").write_text(migration.sql)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(StoreError, match="changed after it was applied"):
        migrate(store, folder)


def test_migration_statements_ignore_semicolons_in_comments() -> None:
    migration = Migration(9, "x", "-- a; b\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;")
    assert migration.statements() == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


def _table_columns(store: Store, table: str) -> list[str]:
    rows = query_rows(
        store,
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "AND default_kind = '' ORDER BY position",
        {"t": table},
    )
    return [r["name"] for r in rows]


@pytest.mark.parametrize(
    ("table", "schema"),
    [("spans", SPANS_SCHEMA), ("llm_calls", LLM_CALLS_SCHEMA), ("tool_calls", TOOL_CALLS_SCHEMA)],
)
def test_arrow_schemas_match_the_migrations(store: Store, table: str, schema: pa.Schema) -> None:
    assert _table_columns(store, table) == schema.names


# The llm_calls columns ARCHITECTURE.md names as public interface.
ARCHITECTURE_LLM_COLUMNS = """
    ts trace_id span_id parent_span_id source provider operation request_model response_model
    server_address http_status status error_type is_stream duration_ms ttft_ms input_tokens
    output_tokens cache_read_tokens cache_write_tokens reasoning_tokens cost_usd cost_source team
    project user_id app route api_key_fingerprint attempt retry_of fallback_of gateway_cache
    finish_reason tool_call_count provider_request_id request_hash input_content output_content
    attributes
""".split()


def test_architecture_columns_exist(store: Store) -> None:
    llm = set(_table_columns(store, "llm_calls"))
    for column in ARCHITECTURE_LLM_COLUMNS:
        assert column in llm, column
    audit = _table_columns(store, "audit_log")
    assert audit == [
        "seq",
        "ts",
        "actor",
        "role",
        "action",
        "object",
        "details",
        "prev_hash",
        "hash",
    ]


def test_insert_and_query_round_trip_with_bound_parameters(store: Store) -> None:
    rows = [
        {
            "ts": datetime(2026, 11, 1, 12, tzinfo=UTC),
            "trace_id": "t1",
            "span_id": "s1",
            "team": "a'b",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": None,
            "cost_usd": Decimal("0.000123456789"),
            "is_stream": True,
            "attributes": {"k": "v"},
            "http_status": 200,
            "attempt": 0,
            "tool_call_count": 0,
            "redaction_count": 0,
            "duration_ms": 1.5,
        },
        {
            "ts": datetime(2026, 11, 2, 12, tzinfo=UTC),
            "trace_id": "t2",
            "span_id": "s2",
            "team": "x",
            "provider": "anthropic",
            "input_tokens": None,
            "output_tokens": None,
            "cost_usd": None,
            "is_stream": False,
            "attributes": {},
            "http_status": 0,
            "attempt": 0,
            "tool_call_count": 0,
            "redaction_count": 0,
            "duration_ms": 2.0,
        },
    ]
    store.insert_arrow("llm_calls", rows_table(rows, LLM_CALLS_SCHEMA))
    found = query_rows(
        store,
        "SELECT team, input_tokens, output_tokens, cost_usd, attributes['k'] AS k FROM llm_calls "
        "WHERE team = {team:String} AND ts >= {since:DateTime64(6)} "
        "AND span_id IN {ids:Array(String)}",
        {"team": "a'b", "since": datetime(2026, 10, 1, tzinfo=UTC), "ids": ["s1", "s2", "it's"]},
    )
    assert found == [
        {
            "team": "a'b",
            "input_tokens": 10,
            "output_tokens": None,
            "cost_usd": Decimal("0.000123456789"),
            "k": "v",
        }
    ]
    # An injection attempt stays a value: it matches nothing and breaks nothing.
    assert query_rows(
        store, "SELECT count() AS n FROM llm_calls WHERE team = {t:String}", {"t": "x' OR '1'='1"}
    ) == [{"n": 0}]
    frame = query_polars(store, "SELECT provider, input_tokens FROM llm_calls ORDER BY provider")
    assert frame["provider"].to_list() == ["anthropic", "openai"]
    assert frame["input_tokens"].to_list() == [None, 10]


def test_decimal_costs_sum_exactly(store: Store) -> None:
    base = {
        "ts": datetime(2026, 11, 1, tzinfo=UTC),
        "trace_id": "t",
        "team": "t",
        "attributes": {},
        "http_status": 0,
        "attempt": 0,
        "tool_call_count": 0,
        "redaction_count": 0,
        "duration_ms": 0.0,
        "is_stream": False,
    }
    rows = [{**base, "span_id": f"s{i}", "cost_usd": Decimal("0.1")} for i in range(10)]
    store.insert_arrow("llm_calls", rows_table(rows, LLM_CALLS_SCHEMA))
    total = query_rows(store, "SELECT sum(cost_usd) AS total FROM llm_calls")[0]["total"]
    assert total == Decimal("1")  # float addition would give 0.9999999999999999


def test_content_ttl_is_set_and_cleared(store: Store) -> None:
    apply_content_ttl(store, 14)
    for table, columns in CONTENT_COLUMNS.items():
        create = store.query_arrow(f"SHOW CREATE TABLE {table}").column(0)[0].as_py()
        for column in columns:
            line = next(
                part for part in create.split("\n") if part.strip().startswith(f"`{column}`")
            )
            assert "toIntervalDay(14)" in line
    apply_content_ttl(store, 14)  # unchanged: no new mutation
    apply_content_ttl(store, 0)
    create = store.query_arrow("SHOW CREATE TABLE llm_calls").column(0)[0].as_py()
    assert "TTL" not in create


def test_store_errors_carry_clickhouse_message(store: Store) -> None:
    with pytest.raises(StoreError, match="(?i)unknown|doesn't exist|does not exist"):
        store.query_arrow("SELECT * FROM no_such_table")


def test_release_memory_purges_chdb_and_leaves_a_server_alone(store: Store) -> None:
    """The embedded store hands freed allocator pages back; a server is not told to."""
    commands: list[str] = []
    real_command = store.command

    def recording(sql: str, params: Any = None) -> None:
        commands.append(sql)
        real_command(sql, params)  # chDB must accept it for real

    store.command = recording  # type: ignore[method-assign]
    query_rows(store, "SELECT count() AS n FROM numbers(1000000) GROUP BY number % 7")
    release_memory(store)
    assert commands == (["SYSTEM JEMALLOC PURGE"] if store.backend == "chdb" else [])

"""POST /api/v1/sql: one read-only SELECT for engineers, refused otherwise —
by our check with a 400 that says why, and by ClickHouse's readonly setting
even when our check is bypassed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from collector.routers.sql import readonly_query, readonly_settings
from ingest.migrate import migrate
from ingest.store import ChdbStore, StoreError, query_rows
from tests.compliance_helpers import seed_calls
from tests.conftest import CollectorProcess, collector_env, free_port

COUNTS = "SELECT (SELECT count() FROM llm_calls) AS calls, (SELECT count() FROM spans) AS spans"


@pytest.fixture(scope="module")
def engineer(collector: CollectorProcess) -> str:
    seed_calls(collector, teams=("sql-a", "sql-b"), per_team=2)
    return collector.create_key("engineer", "sql-user")


def sql(collector: CollectorProcess, key: str, query: str, **body) -> httpx.Response:
    return collector.post("/api/v1/sql", key, json={"sql": query, **body})


def test_select_as_json_with_params(collector: CollectorProcess, engineer: str) -> None:
    response = sql(
        collector,
        engineer,
        "SELECT team, count() AS calls FROM llm_calls WHERE team LIKE {prefix:String} "
        "GROUP BY team ORDER BY team",
        params={"prefix": "sql-%"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rows"] == [{"team": "sql-a", "calls": 2}, {"team": "sql-b", "calls": 2}]
    assert [c["name"] for c in body["columns"]] == ["team", "calls"]
    assert body["row_count"] == 2 and body["truncated"] is False


def test_select_as_arrow_stream(collector: CollectorProcess, engineer: str) -> None:
    response = collector.post(
        "/api/v1/sql",
        engineer,
        json={"sql": "SELECT number FROM numbers(5)"},
        headers={"Accept": "application/vnd.apache.arrow.stream"},
    )
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column("number").to_pylist() == [0, 1, 2, 3, 4]


def test_comments_and_strings_are_understood(collector: CollectorProcess, engineer: str) -> None:
    allowed = [
        "SELECT 1 AS x /* ; DROP TABLE llm_calls */",
        "SELECT 1 AS x -- ; DROP TABLE llm_calls",
        "SELECT ';DROP TABLE llm_calls' AS x;",
        "SELECT 'it''s' AS x, \"team\" FROM llm_calls LIMIT 1",
        "WITH t AS (SELECT team FROM llm_calls) SELECT count() AS x FROM t",
        "SELECT format('{}-{}', 'a', 'b') AS x, replaceAll('ab', 'b', 'c') AS y",
        "SELECT name FROM system.functions WHERE name = 'sum'",
    ]
    for query in allowed:
        response = sql(collector, engineer, query)
        assert response.status_code == 200, (query, response.text)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("INSERT INTO llm_calls (team) VALUES ('x')", "only SELECT queries"),
        ("ALTER TABLE llm_calls DELETE WHERE 1", "only SELECT queries"),
        ("DROP TABLE llm_calls", "only SELECT queries"),
        ("TRUNCATE TABLE spans", "only SELECT queries"),
        ("SELECT 1; DROP TABLE llm_calls", "only one statement"),
        ("SELECT 1; SELECT 2", "only one statement"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS is not allowed"),
        ("SELECT 1 SETTINGS max_execution_time = 3600", "SETTINGS is not allowed"),
        ("SELECT 1 FORMAT TabSeparated", "FORMAT is not allowed"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO is not allowed"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file() reads outside"),
        ("SELECT file('/etc/passwd')", "file() reads outside"),
        ("SELECT * FROM url('http://127.0.0.1:1/', 'CSV')", "url() reads outside"),
        ("SELECT * FROM s3('http://x/y', 'CSV')", "s3() reads outside"),
        ("SELECT * FROM remote('127.0.0.1', system.one)", "remote() reads outside"),
        ("SELECT * FROM Python(arrow_rows)", "Python() reads outside"),
        ("SELECT * FROM merge(currentDatabase(), '')", "merge() reads outside"),
        ("SELECT * FROM system.tables", "system.tables is not readable"),
        ("SELECT * FROM `system`.query_log", "system.query_log is not readable"),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "is not readable"),
        ("SELECT * FROM default.whatever", "only tables of the"),
        ("SELECT key_hash FROM api_keys", "api_keys is not readable"),
        ("SELECT * FROM tokentrail.audit_log", "audit_log is not readable"),
        ("SELECT 1 /* never closed", "never closed"),
        ("SELECT $$x$$", "heredoc"),
        ("SELECT 'unclosed", "never closed"),
        ("", "empty"),
        ("-- only a comment", "empty"),
    ],
)
def test_refused_with_a_reason(
    collector: CollectorProcess, engineer: str, query: str, why: str
) -> None:
    response = sql(collector, engineer, query)
    assert response.status_code == 400 and why in response.json()["detail"], response.text


def test_bad_bodies_and_clickhouse_errors_are_400(
    collector: CollectorProcess, engineer: str
) -> None:
    assert sql(collector, engineer, "SELECT no_such_column FROM llm_calls").status_code == 400
    assert sql(collector, engineer, "SELECT FROM WHERE").status_code == 400
    assert sql(collector, engineer, "SELECT {x:UInt8}").status_code == 400  # no value for x
    assert sql(collector, engineer, "SELECT 1", params={"bad-name": 1}).status_code == 400
    assert collector.post("/api/v1/sql", engineer, json={"sql": 5}).status_code == 400
    assert collector.post("/api/v1/sql", engineer, content=b"{").status_code == 400
    assert sql(collector, engineer, "SELECT 1", limit=0).status_code == 400


def test_roles_and_audit(collector: CollectorProcess, engineer: str) -> None:
    for role in ("finance", "compliance", "router", "ingest"):
        assert sql(collector, collector.create_key(role), "SELECT 1").status_code == 403
    assert httpx.post(f"{collector.url}/api/v1/sql", json={"sql": "SELECT 1"}).status_code == 401
    marker = "SELECT 'audit me 4711' AS x"
    assert sql(collector, engineer, marker).status_code == 200
    compliance = collector.create_key("compliance")
    rows = collector.get(
        "/api/v1/audit/log", key=compliance, action="sql.query", actor="sql-user"
    ).json()["rows"]
    assert any("audit me 4711" in row["details"] for row in rows)


def test_tables_unchanged_after_all_that(collector: CollectorProcess, engineer: str) -> None:
    before = sql(collector, collector.admin_key, COUNTS).json()["rows"]
    for query in ("DROP TABLE llm_calls", "SELECT 1; DROP TABLE spans"):
        sql(collector, engineer, query)
    assert sql(collector, collector.admin_key, COUNTS).json()["rows"] == before


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    store.command("INSERT INTO llm_calls (team, span_id) VALUES ('t', 's')")
    yield store
    store.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO llm_calls (team, span_id) SELECT 'x', 'y'",
        "ALTER TABLE llm_calls DELETE WHERE 1",
        "ALTER TABLE llm_calls ADD COLUMN evil String",
        "DROP TABLE llm_calls",
        "TRUNCATE TABLE llm_calls",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    ],
)
def test_clickhouse_itself_refuses_writes_under_our_settings(
    store: ChdbStore, statement: str
) -> None:
    """Without our check, the settings every query gets still stop writes."""
    with pytest.raises(StoreError, match="READONLY|readonly"):
        store.command(f"{statement} {readonly_settings(5, 1 << 30)}")
    with pytest.raises(StoreError):  # and as the subquery we run it in
        store.query_arrow(readonly_query(statement, 10, 5, 1 << 30))
    assert query_rows(store, "SELECT count() AS n FROM llm_calls") == [{"n": 1}]
    assert query_rows(store, "EXISTS TABLE evil") == [{"result": 0}]


def test_row_and_time_limits(tmp_path: Path) -> None:
    env = collector_env(TOKENTRAIL_SQL_MAX_ROWS="5", TOKENTRAIL_SQL_MAX_SECONDS="1")
    proc = CollectorProcess(tmp_path / "data", free_port(), env)
    proc.start()
    try:
        capped = proc.post("/api/v1/sql", json={"sql": "SELECT number FROM numbers(100)"}).json()
        assert capped["row_count"] == 5 and capped["truncated"] is True
        asked = proc.post("/api/v1/sql", json={"sql": "SELECT 1 FROM numbers(3)", "limit": 2})
        assert asked.json()["row_count"] == 2
        slow = proc.post("/api/v1/sql", json={"sql": "SELECT count() FROM numbers(100000000000)"})
        assert slow.status_code == 400 and "longer than 1 s" in slow.json()["detail"]
        assert proc.get("/healthz").status_code == 200
    finally:
        proc.stop()

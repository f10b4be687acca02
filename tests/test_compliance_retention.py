"""Retention: per-table TTLs applied as ClickHouse TTL (content before
metadata), and every purge written to the audit log."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.audit_chain import AnchoredAuditLog
from ingest.migrate import apply_content_ttl, apply_table_ttl, migrate
from ingest.otlp import decode_json
from ingest.pipeline import PipelineConfig, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionRules
from ingest.retention import purge
from ingest.store import ChdbStore, query_rows
from ingest.writer import write_tables
from tests.compliance_helpers import PERIOD, chat_span, otlp_body, send, tool_span
from tests.conftest import CollectorProcess, collector_env, free_port

DAY_NS = 86_400 * 10**9
AGES = (400, 100, 20, 1)  # days


def old_spans() -> list[dict]:
    now = time.time_ns()
    spans = []
    for age in AGES:
        trace_id = secrets.token_hex(16)
        spans.append(chat_span(trace_id, f"age-{age}", now - age * DAY_NS, f"prompt of day {age}"))
        spans.append(tool_span(trace_id, f"age-{age}", now - age * DAY_NS))
    return spans


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    config = PipelineConfig(PriceBook.load(None), RedactionRules.default())
    write_tables(store, [process_spans(decode_json(otlp_body(old_spans()))["spans"], config)])
    yield store
    store.close()


def teams_left(store: ChdbStore, table: str) -> list[str]:
    rows = query_rows(store, f"SELECT team FROM {table} ORDER BY team")
    return [row["team"] for row in rows]


def test_ttls_are_clickhouse_ttls_and_purge_is_audited(store: ChdbStore, tmp_path: Path) -> None:
    retention = {"llm_calls": 365, "tool_calls": 60}
    apply_content_ttl(store, 30)
    apply_table_ttl(store, retention, 30)
    create = store.query_arrow("SHOW CREATE TABLE llm_calls").column(0)[0].as_py()
    assert "TTL toDateTime(ts) + toIntervalDay(365)" in create
    assert "`input_content` String CODEC(ZSTD(3)) TTL toDateTime(ts) + toIntervalDay(30)" in create
    # Setting a TTL removes nothing by itself: the purge does, and says so.
    assert len(teams_left(store, "llm_calls")) == 4

    audit = AnchoredAuditLog(store, tmp_path / "audit.head")
    records = {r["object"]: json.loads(r["details"]) for r in purge(store, audit, retention, 30)}
    assert records["llm_calls"]["rows"]["purged"] == 1  # the 400-day-old call
    assert records["llm_calls"]["content"]["expired"] == 2  # content of 400 and 100 days
    assert records["tool_calls"]["rows"]["purged"] == 2  # 400 and 100 days
    assert teams_left(store, "llm_calls") == ["age-1", "age-100", "age-20"]
    assert teams_left(store, "tool_calls") == ["age-1", "age-20"]
    content = {
        r["team"]: r["input_content"]
        for r in query_rows(store, "SELECT team, input_content FROM llm_calls")
    }
    assert content["age-100"] == "" and "day 20" in content["age-20"]
    logged = [r for r in audit.records() if r["action"] == "retention.purge"]
    assert {r["object"] for r in logged} == {"llm_calls", "tool_calls"}
    assert audit.report().ok
    assert purge(store, audit, retention, 30) == []  # nothing left to purge: no record

    apply_table_ttl(store, {"llm_calls": 0}, 30)  # 0 removes the TTL again
    create = store.query_arrow("SHOW CREATE TABLE llm_calls").column(0)[0].as_py()
    assert not any(line.startswith("TTL ") for line in create.splitlines())


@pytest.mark.parametrize(
    ("retention", "content_days", "message"),
    [
        ({"audit_log": 30}, 30, "audit_log is never expired"),
        ({"api_keys": 30}, 30, "api_keys is never expired"),
        ({"no_such_table": 30}, 30, "not a table"),
        ({"llm_calls": 10}, 30, "content must expire first"),
        ({"spans": -1}, 30, r"use 0 \(keep\) or more days"),
    ],
)
def test_bad_retention_is_refused(
    store: ChdbStore, retention: dict, content_days: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        apply_table_ttl(store, retention, content_days)


def test_collector_purges_at_start_and_audits(tmp_path: Path) -> None:
    # Data stored first, retention configured later: ClickHouse applies a TTL
    # to what it writes, so old rows must be in place before the TTL is.
    proc = CollectorProcess(tmp_path / "data", free_port(), collector_env())
    proc.start()
    try:
        send(proc, proc.create_key("ingest"), old_spans())
        compliance = proc.create_key("compliance")
        assert proc.wait_for(lambda: len(proc.calls(**PERIOD)) == 4)
        proc.env.update(
            TOKENTRAIL_RETENTION_DAYS=json.dumps({"spans": 60, "llm_calls": 60, "tool_calls": 60}),
            TOKENTRAIL_CONTENT_TTL_DAYS="7",
            TOKENTRAIL_RETENTION_PURGE_SECONDS="1",
        )
        proc.restart()

        def purged() -> list[dict]:
            rows = proc.get(
                "/api/v1/audit/log", key=compliance, action="retention.purge", **PERIOD
            ).json()["rows"]
            return (
                rows if {r["object"] for r in rows} == {"spans", "llm_calls", "tool_calls"} else []
            )

        records = proc.wait_for(purged, timeout=30)
        assert records, proc.log_path.read_text()[-2000:]
        details = {r["object"]: json.loads(r["details"]) for r in records}
        assert details["llm_calls"]["rows"]["purged"] == 2  # 400 and 100 days old
        # Content older than the default 30 days was cleared as it was written;
        # of the rest, the 20-day-old call's content is past the new 7 days.
        assert details["llm_calls"]["content"]["expired"] == 1
        calls = proc.calls(**PERIOD)
        assert sorted(c["team"] for c in calls) == ["age-1", "age-20"]
        content = {c["team"]: c["input_content"] for c in calls}
        assert content["age-20"] == "" and "day 1" in content["age-1"]
        assert proc.get("/api/v1/audit/verify", key=compliance).json()["ok"]
    finally:
        proc.stop()


def test_collector_refuses_to_start_with_a_bad_retention(tmp_path: Path) -> None:
    env = collector_env(TOKENTRAIL_RETENTION_DAYS=json.dumps({"audit_log": 30}))
    proc = CollectorProcess(tmp_path / "data", free_port(), env)
    with pytest.raises(RuntimeError, match="audit_log is never expired"):
        proc.start(timeout=60)
    proc.stop()

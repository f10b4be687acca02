"""The audit log's chain catches records edited, deleted, reordered, duplicated
or cut from the end — tampered with in the real store — and the collector and
`tokentrail audit verify-log` name the first broken link."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.audit import AUDIT_SCHEMA, GENESIS, record_hash
from ingest.audit_chain import ANCHOR_FILE, AnchoredAuditLog, check_chain, read_anchor
from ingest.migrate import migrate
from ingest.store import ChdbStore, query_rows
from tests.conftest import ROOT, CollectorProcess


@pytest.fixture()
def audit(tmp_path: Path) -> Iterator[AnchoredAuditLog]:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    log = AnchoredAuditLog(store, tmp_path / ANCHOR_FILE)
    for n in range(1, 6):
        log.append(f"user{n}", "engineer", "calls.read", "llm_calls", {"rows": n})
    yield log
    store.close()


def mutate(store: ChdbStore, sql: str) -> None:
    store.command(sql + " SETTINGS mutations_sync = 2")


def report(log: AnchoredAuditLog):
    return check_chain(log.records(), read_anchor(log.anchor_path))


def test_intact_log_verifies_and_anchor_follows_the_head(audit: AnchoredAuditLog) -> None:
    result = report(audit)
    assert result.ok and result.records == 5 and result.head_hash == audit.head
    assert read_anchor(audit.anchor_path) == {"seq": 5, "hash": audit.head}


def test_edited_record(audit: AnchoredAuditLog) -> None:
    mutate(audit.store, "ALTER TABLE audit_log UPDATE details = '{\"rows\":0}' WHERE seq = 3")
    result = report(audit)
    assert not result.ok and result.broken_seq == 3 and "edited" in result.problem


def test_deleted_record(audit: AnchoredAuditLog) -> None:
    mutate(audit.store, "ALTER TABLE audit_log DELETE WHERE seq = 2")
    result = report(audit)
    assert result.broken_seq == 3 and "seq 2 is missing" in result.problem


def test_reordered_records(audit: AnchoredAuditLog) -> None:
    rows = audit.records()
    rows[1], rows[2] = {**rows[2], "seq": 2}, {**rows[1], "seq": 3}
    mutate(audit.store, "ALTER TABLE audit_log DELETE WHERE 1")
    audit.store.insert_arrow("audit_log", pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA))
    result = report(audit)
    assert result.broken_seq == 2 and "does not chain" in result.problem


def test_duplicated_record(audit: AnchoredAuditLog) -> None:
    copy = query_rows(audit.store, "SELECT * FROM audit_log WHERE seq = 4")
    audit.store.insert_arrow("audit_log", pa.Table.from_pylist(copy, schema=AUDIT_SCHEMA))
    result = report(audit)
    assert result.broken_seq == 4 and "appears again" in result.problem


def test_newest_records_cut_from_the_end(audit: AnchoredAuditLog) -> None:
    mutate(audit.store, "ALTER TABLE audit_log DELETE WHERE seq >= 4")
    assert check_chain(audit.records()).ok  # the rest still chains: only the anchor knows
    result = report(audit)
    assert result.broken_seq == 4 and "newest records were deleted" in result.problem


def test_rewritten_log_under_the_same_numbers(audit: AnchoredAuditLog) -> None:
    # A whole new chain of five records replaces the log: each link holds, but
    # it is not the chain that was written.
    forged: list[dict] = []
    prev = GENESIS
    for record in audit.records():
        fake = {**record, "actor": "mallory", "prev_hash": prev}
        fake["hash"] = prev = record_hash(prev, fake)
        forged.append(fake)
    mutate(audit.store, "ALTER TABLE audit_log DELETE WHERE 1")
    audit.store.insert_arrow("audit_log", pa.Table.from_pylist(forged, schema=AUDIT_SCHEMA))
    assert check_chain(audit.records()).ok
    result = report(audit)
    assert result.broken_seq == 5 and "rewritten" in result.problem


def run_cli(*args: str, key: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    if key:
        env["TOKENTRAIL_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "tokentrail.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_collector_checks_the_chain_on_start_and_cli_names_the_break(
    fresh_collector: CollectorProcess,
) -> None:
    compliance = fresh_collector.create_key("compliance", "auditor")
    for role in ("finance", "engineer", "router"):
        fresh_collector.create_key(role)
    url = ["--url", fresh_collector.url, "--data-dir", str(fresh_collector.data_dir)]
    ok = run_cli("audit", "verify-log", *url, key=compliance)
    assert ok.returncode == 0 and "audit log intact" in ok.stdout, ok.stderr

    fresh_collector.stop()
    offline = run_cli(
        "audit", "verify-log", "--offline", "--data-dir", str(fresh_collector.data_dir)
    )
    assert offline.returncode == 0 and "intact" in offline.stdout, offline.stderr
    store = ChdbStore(fresh_collector.data_dir / "chdb")
    mutate(store, "ALTER TABLE audit_log UPDATE actor = 'someone else' WHERE seq = 3")
    store.close()
    fresh_collector.start()

    log_text = fresh_collector.log_path.read_text()
    assert "AUDIT LOG CHAIN BROKEN at seq 3" in log_text
    broken = run_cli("audit", "verify-log", *url, key=compliance)
    assert broken.returncode == 1
    assert "broken at seq 3" in broken.stderr and "edited" in broken.stderr
    verify = fresh_collector.get("/api/v1/audit/verify", key=compliance).json()
    assert verify["ok"] is False and verify["broken_seq"] == 3
    # The detection itself is now a record of the log.
    found = fresh_collector.get(
        "/api/v1/audit/log", key=compliance, action="audit.chain_broken"
    ).json()["rows"]
    assert len(found) == 1 and '"broken_seq":3' in found[0]["details"]

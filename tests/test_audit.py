"""The audit log chains every record to the one before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.audit import GENESIS, AuditLog, first_broken_link
from ingest.migrate import migrate
from ingest.store import ChdbStore


@pytest.fixture()
def audit(tmp_path: Path):
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    yield AuditLog(store)
    store.close()


def test_appends_chain_and_survive_reopen(audit: AuditLog) -> None:
    audit.append("admin", "admin", "key.create", "k1", {"role": "finance"})
    audit.append("eng", "engineer", "calls.read", "llm_calls", {"rows": 3})
    records = audit.records()
    assert [r["seq"] for r in records] == [1, 2]
    assert records[0]["prev_hash"] == GENESIS and records[1]["prev_hash"] == records[0]["hash"]
    assert audit.verify() is None
    reopened = AuditLog(audit.store)
    assert (reopened.seq, reopened.head) == (2, records[1]["hash"])
    reopened.append("admin", "admin", "key.revoke", "k1")
    assert reopened.verify() is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", "mallory"), ("details", '{"rows": 300}'), ("hash", "f" * 64), ("seq", 7)],
)
def test_any_change_breaks_the_chain_at_that_record(audit: AuditLog, field: str, value) -> None:
    for i in range(4):
        audit.append("a", "admin", "x", str(i))
    records = audit.records()
    records[2] = {**records[2], field: value}
    assert first_broken_link(records) == (7 if field == "seq" else 3)


def test_removed_record_is_detected(audit: AuditLog) -> None:
    for i in range(3):
        audit.append("a", "admin", "x", str(i))
    records = audit.records()
    assert first_broken_link([records[0], records[2]]) == 3

"""The audit log: append-only, each record hash-chained to the one before.

hash = SHA-256(prev_hash + canonical JSON of the record's content), so
changing, removing or reordering any record breaks every hash after it.
One ``AuditLog`` per store owner serializes appends.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from ingest.store import Store, query_rows

GENESIS = "0" * 64
AUDIT_SCHEMA = pa.schema(
    [
        ("seq", pa.uint64()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("actor", pa.string()),
        ("role", pa.string()),
        ("action", pa.string()),
        ("object", pa.string()),
        ("details", pa.string()),
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)


def record_hash(prev_hash: str, record: dict[str, Any]) -> str:
    ts = record["ts"]
    content = {
        "seq": int(record["seq"]),
        "ts": ts.astimezone(UTC).isoformat(timespec="milliseconds"),
        "actor": record["actor"],
        "role": record["role"],
        "action": record["action"],
        "object": record["object"],
        "details": record["details"],
    }
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


def first_broken_link(records: list[dict[str, Any]]) -> int | None:
    """The seq of the first record that does not chain, or None if all do."""
    prev = GENESIS
    expected_seq = 1
    for record in records:
        if int(record["seq"]) != expected_seq or record["prev_hash"] != prev:
            return int(record["seq"])
        if record_hash(prev, record) != record["hash"]:
            return int(record["seq"])
        prev = record["hash"]
        expected_seq += 1
    return None


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        head = query_rows(store, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        self.seq = int(head[0]["seq"]) if head else 0
        self.head = str(head[0]["hash"]) if head else GENESIS

    def append(
        self,
        actor: str,
        role: str,
        action: str,
        obj: str = "",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        with self._lock:
            record: dict[str, Any] = {
                "seq": self.seq + 1,
                # Millisecond precision is what the column keeps and what the hash covers.
                "ts": now.replace(microsecond=now.microsecond // 1000 * 1000),
                "actor": actor,
                "role": role,
                "action": action,
                "object": obj,
                "details": orjson.dumps(details or {}, option=orjson.OPT_SORT_KEYS).decode(),
                "prev_hash": self.head,
            }
            record["hash"] = record_hash(self.head, record)
            self.store.insert_arrow(
                "audit_log", pa.Table.from_pylist([record], schema=AUDIT_SCHEMA)
            )
            self.seq = record["seq"]
            self.head = record["hash"]
            return record

    def records(self) -> list[dict[str, Any]]:
        return query_rows(self.store, "SELECT * FROM audit_log ORDER BY seq")

    def verify(self) -> int | None:
        return first_broken_link(self.records())

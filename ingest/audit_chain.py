"""Checking the audit log's hash chain, and anchoring its head outside the store.

The chain (``ingest.audit``) shows an edited, removed or reordered record,
but not records cut from the end: the remaining log still chains. So every
append also writes the new head to ``<data-dir>/audit.head``, and a log that
ends before that anchor is reported as truncated. Export manifests carry the
head too, which anchors it outside the machine.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest.audit import GENESIS, AuditLog, record_hash
from ingest.store import Store

log = logging.getLogger("tokentrail.audit")
ANCHOR_FILE = "audit.head"  # in the data dir


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str = ""  # one sentence naming the first broken link; "" when ok

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _explain(record: dict[str, Any], expected_seq: int, prev_hash: str) -> str | None:
    seq = int(record["seq"])
    if seq > expected_seq:
        if expected_seq == 1:
            return f"the log starts at seq {seq}: the records before it were deleted"
        return (
            f"seq {expected_seq} is missing (seq {seq} follows seq {expected_seq - 1}): "
            "a record was deleted"
        )
    if seq < expected_seq:
        return f"seq {seq} appears again after seq {expected_seq - 1}: a record was duplicated"
    if record["prev_hash"] != prev_hash:
        return (
            f"seq {seq} does not chain to seq {seq - 1} (its prev_hash is not that record's "
            "hash): a record was replaced, reordered or its prev_hash edited"
        )
    if record_hash(prev_hash, record) != record["hash"]:
        return f"seq {seq} does not match its own hash: the record was edited"
    return None


def check_chain(records: list[dict[str, Any]], anchor: dict[str, Any] | None = None) -> ChainReport:
    """Walk the chain from the genesis hash; name the first broken link."""
    prev_hash = GENESIS
    for index, record in enumerate(records):
        problem = _explain(record, index + 1, prev_hash)
        if problem:
            return ChainReport(False, len(records), index, prev_hash, int(record["seq"]), problem)
        prev_hash = str(record["hash"])
    head_seq = len(records)
    if anchor:
        anchored_seq, anchored_hash = int(anchor["seq"]), str(anchor["hash"])
        if anchored_seq > head_seq:
            return ChainReport(
                False,
                head_seq,
                head_seq,
                prev_hash,
                head_seq + 1,
                f"the log ends at seq {head_seq} but seq {anchored_seq} was written "
                "(audit.head): the newest records were deleted",
            )
        if anchored_seq and str(records[anchored_seq - 1]["hash"]) != anchored_hash:
            return ChainReport(
                False,
                head_seq,
                head_seq,
                prev_hash,
                anchored_seq,
                f"seq {anchored_seq} is not the record written under that number "
                "(its hash differs from audit.head): the log was rewritten",
            )
    return ChainReport(True, head_seq, head_seq, prev_hash)


def read_anchor(path: Path) -> dict[str, Any] | None:
    try:
        anchor = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        return {"seq": 0, "hash": ""}  # unreadable: no claim, the chain check still runs
    return anchor if isinstance(anchor, dict) and {"seq", "hash"} <= anchor.keys() else None


def write_anchor(path: Path, seq: int, hash_: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"seq": seq, "hash": hash_}))
    os.replace(tmp, path)


class AnchoredAuditLog(AuditLog):
    """An ``AuditLog`` that also writes its head to ``anchor_path`` on every append."""

    def __init__(self, store: Store, anchor_path: Path) -> None:
        super().__init__(store)
        self.anchor_path = anchor_path
        self._anchor_lock = threading.Lock()
        if read_anchor(anchor_path) is None and self.seq:
            # First start with anchoring: trust the log as it is now.
            write_anchor(anchor_path, self.seq, self.head)

    def append(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self._anchor_lock:
            record = super().append(*args, **kwargs)
            write_anchor(self.anchor_path, int(record["seq"]), str(record["hash"]))
        return record

    def report(self) -> ChainReport:
        return check_chain(self.records(), read_anchor(self.anchor_path))


def check_chain_on_start(audit: AnchoredAuditLog) -> ChainReport:
    """Verify the chain; a break is logged loudly and itself written to the log,
    so the evidence outlives the anchor file being moved on by new records."""
    report = audit.report()
    if report.ok:
        log.info("audit log verified: %d records, chain intact", report.records)
        return report
    log.error(
        "AUDIT LOG CHAIN BROKEN at seq %s: %s. Run `tokentrail audit verify-log` for details.",
        report.broken_seq,
        report.problem,
    )
    audit.append("collector", "admin", "audit.chain_broken", "audit_log", report.as_dict())
    return report

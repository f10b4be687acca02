"""Retention: expired rows and content are purged on a schedule, and each purge is audited.

The rules are ClickHouse TTLs (``ingest.migrate.apply_table_ttl`` and
``apply_content_ttl``), set without touching old rows. ``purge`` counts what
is past its TTL, makes ClickHouse apply the TTL now to just the partitions
holding it (``ALTER TABLE … MATERIALIZE TTL IN PARTITION ID …``), counts again
and writes one ``retention.purge`` record per table to the audit log: the
cutoff, how many rows (or rows' content) were past it and how many are gone.
ClickHouse's own merges may also apply a TTL between purges; the record's
cutoff still says exactly which rows the policy removed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.audit import AuditLog
from ingest.migrate import CONTENT_COLUMNS, time_column
from ingest.store import Store, query_rows

log = logging.getLogger("tokentrail.retention")
CUTOFF = "{cutoff:DateTime64(3, 'UTC')}"


@dataclass(frozen=True)
class Expiry:
    """Rows (or, with ``columns``, just those columns) of ``table`` older than ``days``."""

    table: str
    time_column: str
    days: int
    columns: tuple[str, ...] = ()

    def condition(self) -> str:
        old = f"toDateTime({self.time_column}) <= {CUTOFF}"
        if not self.columns:
            return old
        filled = " OR ".join(f"{column} != ''" for column in self.columns)
        return f"{old} AND ({filled})"


def expiries(store: Store, table_days: dict[str, int], content_days: int) -> list[Expiry]:
    rules = [
        Expiry(table, time_column(store, table), days)
        for table, days in sorted(table_days.items())
        if days > 0
    ]
    if content_days > 0:
        rules += [
            Expiry(table, "ts", content_days, columns)
            for table, columns in sorted(CONTENT_COLUMNS.items())
        ]
    return rules


def _count(store: Store, rule: Expiry, cutoff: datetime) -> int:
    sql = f"SELECT count() AS n FROM {rule.table} WHERE {rule.condition()}"
    return int(query_rows(store, sql, {"cutoff": cutoff})[0]["n"])


def purge(
    store: Store,
    audit: AuditLog,
    table_days: dict[str, int],
    content_days: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Apply every TTL now; return (and audit) what each table had past it."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    by_table: dict[str, list[tuple[Expiry, datetime, int]]] = {}
    for rule in expiries(store, table_days, content_days):
        cutoff = now - timedelta(days=rule.days)
        expired = _count(store, rule, cutoff)
        if expired:
            by_table.setdefault(rule.table, []).append((rule, cutoff, expired))
    records = []
    for table, found in by_table.items():
        latest_cutoff = max(cutoff for _, cutoff, _ in found)
        partitions = query_rows(
            store,
            f"SELECT DISTINCT _partition_id AS p FROM {table} "
            f"WHERE toDateTime({found[0][0].time_column}) <= {CUTOFF} ORDER BY p",
            {"cutoff": latest_cutoff},
        )
        for row in partitions:
            store.command(
                f"ALTER TABLE {table} MATERIALIZE TTL IN PARTITION ID {{p:String}} "
                "SETTINGS mutations_sync = 2",
                {"p": str(row["p"])},
            )
        details: dict[str, Any] = {}
        for rule, cutoff, expired in found:
            what = "content" if rule.columns else "rows"
            left = _count(store, rule, cutoff)
            details[what] = {
                "days": rule.days,
                "cutoff": cutoff.isoformat(),
                "columns": list(rule.columns),
                "expired": expired,
                "purged": expired - left,
            }
        records.append(audit.append("collector", "admin", "retention.purge", table, details))
        log.info("retention purge of %s: %s", table, details)
    return records


class RetentionJob:
    """Runs ``purge`` at start and every ``interval`` seconds on its own thread."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        table_days: dict[str, int],
        content_days: int,
        interval: float,
    ) -> None:
        self.store = store
        self.audit = audit
        self.table_days = dict(table_days)
        self.content_days = content_days
        self.interval = max(interval, 0.5)
        self.runs = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokentrail-retention", daemon=True)

    @property
    def active(self) -> bool:
        return self.content_days > 0 or any(days > 0 for days in self.table_days.values())

    def start(self) -> None:
        if self.active:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                purge(self.store, self.audit, self.table_days, self.content_days)
                self.last_error = ""
            except Exception as exc:  # the store may be down; try again next time
                self.last_error = str(exc)[:500]
                log.warning("retention purge failed, will retry: %s", exc)
            self.runs += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

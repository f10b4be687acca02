"""The thin layer between the jobs and the store: windows, reads, idempotent writes.

A windowed job works on time windows (an hour, five minutes) named by their
start in unix seconds. Which windows a run recomputes comes from
``llm_calls.ingested_at``: every window holding a call ingested since the
last successful run, so late data lands in the window it belongs to. A run
writes whole windows as a new version (``write_version``); readers see each
window's newest version, so a re-run of the same data changes nothing.
Snapshot tables (one current answer, like the outage list, a few hundred rows)
get the new snapshot first and lose the older ones after, so a reader never
sees an empty table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from ingest.store import Store, query_rows

HOUR = 3600
FIVE_MINUTES = 300


def window_expr(seconds: int, column: str = "ts") -> str:
    """SQL: the start (unix seconds) of the window holding ``column``."""
    return f"toUInt32(intDiv(toUnixTimestamp({column}), {int(seconds)}) * {int(seconds)})"


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def high_water(store: Store) -> datetime | None:
    """The newest ``ingested_at`` in llm_calls (None when it is empty)."""
    rows = query_rows(store, "SELECT max(ingested_at) AS hw, count() AS n FROM llm_calls")
    return rows[0]["hw"] if rows and rows[0]["n"] else None


def changed_windows(
    store: Store, seconds: int, since: datetime | None, reach_back_s: float = 0.0
) -> list[int]:
    """Windows holding calls ingested after ``since`` (all windows when None).

    ``reach_back_s`` adds the windows before each one that a result may read
    across (a fallback chain that started up to that long before)."""
    where = "" if since is None else "WHERE ingested_at > {since:DateTime64(3)}"
    rows = query_rows(
        store,
        f"SELECT DISTINCT {window_expr(seconds)} AS w FROM llm_calls {where} ORDER BY w",
        {"since": since} if since is not None else None,
    )
    found = {int(r["w"]) for r in rows}
    steps = int(-(-reach_back_s // seconds)) if reach_back_s > 0 else 0
    for start in list(found):
        found.update(start - k * seconds for k in range(1, steps + 1))
    return sorted(found)


def chunked(windows: list[int], span_s: int) -> Iterator[list[int]]:
    """Consecutive groups of windows, each within ``span_s`` seconds, so one
    read never holds months of rows."""
    group: list[int] = []
    for start in windows:
        if group and start - group[0] >= span_s:
            yield group
            group = []
        group.append(start)
    if group:
        yield group


@dataclass(frozen=True)
class WindowSet:
    """The windows of one chunk and the SQL/params that select their calls."""

    starts: list[int]
    seconds: int

    @property
    def lo(self) -> datetime:
        return utc(self.starts[0])

    @property
    def hi(self) -> datetime:
        return utc(self.starts[-1] + self.seconds)

    @property
    def contiguous(self) -> bool:
        return self.starts[-1] - self.starts[0] == (len(self.starts) - 1) * self.seconds

    def where(self, column: str = "ts", margin_s: float = 0.0) -> str:
        """Condition on ``column`` (a DateTime64): inside these windows, widened by
        ``margin_s`` on both sides when a job must read neighbours too."""
        bounds = f"{column} >= {{lo:DateTime64(6)}} AND {column} < {{hi:DateTime64(6)}}"
        if self.contiguous or margin_s > 0:
            return bounds
        return f"{bounds} AND {window_expr(self.seconds, column)} IN {{windows:Array(UInt32)}}"

    def params(self, margin_s: float = 0.0) -> dict[str, Any]:
        margin = timedelta(seconds=margin_s)
        return {"lo": self.lo - margin, "hi": self.hi + margin, "windows": self.starts}


def read_frame(store: Store, sql: str, params: dict[str, Any] | None = None) -> pl.LazyFrame:
    frame = pl.from_arrow(store.query_arrow(sql, params))
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def write_version(store: Store, table: str, rows: pa.Table) -> int:
    """Insert a run's rows for the windows it recomputed.

    Windowed outputs are versioned (see migration 0007): each row carries its
    run's computed_at, and the table's view shows per window only the newest
    run's rows — so there is nothing to delete, and a re-run replaces rather
    than adds."""
    store.insert_arrow(table, rows)
    return rows.num_rows


def replace_snapshot(store: Store, table: str, rows: pa.Table, computed_at: datetime) -> int:
    """Insert the new snapshot, then drop every older one."""
    store.insert_arrow(table, rows)
    store.command(
        f"DELETE FROM {table} WHERE computed_at < {{at:DateTime64(3)}}", {"at": computed_at}
    )
    return rows.num_rows

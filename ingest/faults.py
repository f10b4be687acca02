"""Fault injection: make the store slow or failing from outside the process.

With ``TOKENTRAIL_FAULTS_FILE`` set, the collector wraps its store in a
``FaultInjectingStore``. Each store call looks at the file (re-read only when
its modification time or size changes) and, as it says, waits and/or raises
``StoreError`` before passing the call on. Editing the file switches a fault
on or off in the running collector; a missing or empty file means no fault.
This is how the fault tests make the store slow and then fail for a while,
and how operators rehearse a ClickHouse outage. Unset, the store is not
wrapped at all, so production pays nothing.

The file is a JSON object; every key is optional:

    {"store_delay_seconds": 2.0, "store_fail": true, "queries": false}

``store_delay_seconds`` waits before each insert, ``store_fail`` makes each
insert raise (after the wait); with ``queries`` true both apply to queries and
commands too (API reads, migrations, merges), not only to inserts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ingest.store import Params, Store, StoreError

log = logging.getLogger("tokentrail.faults")


@dataclass(frozen=True)
class Faults:
    """What the faults file asks for right now."""

    store_delay_seconds: float = 0.0
    store_fail: bool = False
    queries: bool = False

    @property
    def active(self) -> bool:
        return self.store_fail or self.store_delay_seconds > 0


NO_FAULTS = Faults()


def parse_faults(text: str) -> Faults:
    """The file's JSON as ``Faults``; ``ValueError`` says what is wrong with it."""
    if not text.strip():
        return NO_FAULTS
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(data) - {"store_delay_seconds", "store_fail", "queries"})
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    delay = data.get("store_delay_seconds", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
        raise ValueError("store_delay_seconds must be a number of seconds from 0 to 3600")
    for flag in ("store_fail", "queries"):
        if not isinstance(data.get(flag, False), bool):
            raise ValueError(f"{flag} must be true or false")
    return Faults(float(delay), data.get("store_fail", False), data.get("queries", False))


class FaultsFile:
    """The faults file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._faults = NO_FAULTS

    def current(self) -> Faults:
        try:
            stat = os.stat(self.path)
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._faults = self._read() if stamp else NO_FAULTS
                log.warning("fault injection from %s: %s", self.path, self._faults)
            return self._faults

    def _read(self) -> Faults:
        try:
            return parse_faults(self.path.read_text())
        except (OSError, ValueError) as exc:
            # A half-written or wrong file injects nothing rather than stopping the collector.
            log.error("ignoring faults file %s: %s", self.path, exc)
            return NO_FAULTS


class FaultInjectingStore:
    """A ``Store`` that delays or fails calls as the faults file says, then delegates."""

    def __init__(self, store: Store, faults: FaultsFile) -> None:
        self.store = store
        self.faults = faults
        self.backend = store.backend
        self.database = store.database

    def _apply(self, is_insert: bool, what: str) -> None:
        faults = self.faults.current()
        if not faults.active or not (is_insert or faults.queries):
            return
        if faults.store_delay_seconds:
            time.sleep(faults.store_delay_seconds)
        if faults.store_fail:
            raise StoreError(f"injected store failure ({what}; faults file {self.faults.path})")

    def command(self, sql: str, params: Params = None) -> None:
        self._apply(False, "command")
        self.store.command(sql, params)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._apply(True, f"insert into {table}")
        self.store.insert_arrow(table, data)

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        self._apply(False, "query")
        return self.store.query_arrow(sql, params)

    def close(self) -> None:
        self.store.close()


def with_faults(store: Store, faults_file: Path | None) -> Store:
    """The store itself without a faults file (production), else the wrapper."""
    if faults_file is None:
        return store
    log.warning("fault injection is on: store calls follow %s", faults_file)
    return FaultInjectingStore(store, FaultsFile(faults_file))

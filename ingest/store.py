"""The store: one small interface over ClickHouse, two backends.

``ChdbStore`` runs ClickHouse's own engine embedded (chDB) on
``<data-dir>/chdb``; ``ServerStore`` talks to a ClickHouse server through
clickhouse-connect. Both take the same SQL: unqualified table names (the store
selects the database) and ClickHouse's server-side parameters
``{name:Type}``, so user input is never spliced into SQL text.
"""

from __future__ import annotations

import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import polars as pl
import pyarrow as pa

Params = dict[str, Any] | None


class StoreError(RuntimeError):
    """The store refused or failed a statement; the message is ClickHouse's."""


class Store(Protocol):
    backend: str
    database: str

    def command(self, sql: str, params: Params = None) -> None: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table: ...

    def close(self) -> None: ...


def query_polars(store: Store, sql: str, params: Params = None) -> pl.DataFrame:
    frame = pl.from_arrow(store.query_arrow(sql, params))
    assert isinstance(frame, pl.DataFrame)
    return frame


def query_rows(store: Store, sql: str, params: Params = None) -> list[dict[str, Any]]:
    return store.query_arrow(sql, params).to_pylist()


def release_memory(store: Store) -> None:
    """Hand the memory chDB has freed back to the OS (embedded store only).

    chDB's allocator (jemalloc) keeps freed pages in per-thread arenas. In the
    collector's process, the pages a query or insert freed on one thread stay
    counted as the collector's memory until that thread allocates again, so
    ingest, queries and analytics jobs on different threads add up. Measured
    on the near-duplicate report's query: 92 MB above the process's baseline
    after the query, 20 MB after a purge. A ClickHouse server manages its own."""
    if store.backend == "chdb":
        store.command("SYSTEM JEMALLOC PURGE")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _literal(value: Any) -> str:
    """A value in the text form ClickHouse parses for an array element."""
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return _param_text(value)


def _param_text(value: Any) -> str:
    """A parameter value as ClickHouse's HTTP interface expects it (what chDB takes)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        # Not strftime: its %Y drops leading zeros for years below 1000.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return _literal(value)
    if isinstance(value, str):
        return value.translate(_ESCAPED)
    return str(value)


# A scalar parameter is read in ClickHouse's "Escaped" text format, where a
# raw newline or tab would end the value early.
_ESCAPED = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"})


class ChdbStore:
    """Embedded chDB. chDB locks its directory to one process, and its
    connection is not safe for concurrent use, so every call holds a lock."""

    backend = "chdb"

    def __init__(self, path: Path, database: str = "tokentrail") -> None:
        import chdb

        path.mkdir(parents=True, exist_ok=True)
        self.database = database
        self._lock = threading.Lock()
        self._conn = chdb.connect(str(path))
        self._run(f"CREATE DATABASE IF NOT EXISTS {database}", None, "CSV")
        self._run(f"USE {database}", None, "CSV")
        # Times are stored and bound as UTC whatever the machine's zone is.
        self._run("SET session_timezone = 'UTC'", None, "CSV")

    def _run(self, sql: str, params: Params, fmt: str) -> Any:
        text_params = {k: _param_text(v) for k, v in params.items()} if params else None
        with self._lock:
            try:
                return self._conn.query(sql, fmt, params=text_params)
            except Exception as exc:  # chdb raises its own error types
                raise StoreError(str(exc)) from exc

    def command(self, sql: str, params: Params = None) -> None:
        self._run(sql, params, "CSV")

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        # chDB's Python() table function reads the Arrow table from this frame's
        # local variable ``arrow_rows`` without copying it through a text format.
        arrow_rows = data  # noqa: F841 - read by name by chDB
        self._run(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM Python(arrow_rows)", None, "CSV"
        )

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        result = self._run(sql, params, "ArrowTable")
        assert isinstance(result, pa.Table)
        return result

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ServerStore:
    """A ClickHouse server (or cluster endpoint) through clickhouse-connect."""

    backend = "clickhouse"

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(
                "TOKENTRAIL_CLICKHOUSE_URL must look like http[s]://user:password@host:8123/database"
            )
        self.database = parts.path.strip("/") or "tokentrail"
        connect = {
            "host": parts.hostname,
            "port": parts.port or (8443 if parts.scheme == "https" else 8123),
            "username": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "secure": parts.scheme == "https",
        }
        admin = clickhouse_connect.get_client(**connect)
        admin.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        admin.close()
        # Many collector threads share this client, so no session id.
        self._client = clickhouse_connect.get_client(
            **connect,
            database=self.database,
            autogenerate_session_id=False,
            settings={"session_timezone": "UTC"},  # times are bound as UTC
        )

    def command(self, sql: str, params: Params = None) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        try:
            self._client.insert_arrow(table, data)
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=params or None, use_strings=True)
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()


def open_store(data_dir: Path, clickhouse_url: str = "", database: str = "tokentrail") -> Store:
    if clickhouse_url:
        return ServerStore(clickhouse_url)
    return ChdbStore(data_dir / "chdb", database)

"""POST /api/v1/sql: one read-only SELECT for engineers, as JSON or Arrow.

Two independent guards. Ours: the text is tokenized (strings, quoted names
and comments understood), comments are dropped, and only a single SELECT (or
WITH … SELECT) is let through — no SETTINGS, FORMAT or INTO, no table or
scalar functions that reach files, URLs, other servers or Python objects, no
database but ours (and a few harmless ``system`` tables), no key hashes or
audit log. ClickHouse's: the query runs as a subquery of ours with
``readonly = 1`` and time and memory limits set last, so even a statement our
check missed cannot write, change settings or call a table function.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.runtime import Runtime
from ingest.store import StoreError, query_rows

router = APIRouter(prefix="/api/v1", tags=["engineer"])
ARROW_STREAM = "application/vnd.apache.arrow.stream"

# Words that never belong in a read-only SELECT (as words, not function names).
FORBIDDEN_KEYWORDS = frozenset(
    "settings format into outfile insert alter drop create attach detach rename truncate "
    "optimize kill grant revoke set use exchange undrop delete update".split()
)
# Functions that read files, URLs, other servers, processes or Python objects.
FORBIDDEN_FUNCTIONS = frozenset(
    "file filecluster url urlcluster s3 s3cluster s3queue gcs oss cosn azureblobstorage "
    "azureblobstoragecluster hdfs hdfscluster remote remotesecure cluster clusterallreplicas "
    "mysql postgresql mongodb redis sqlite jdbc odbc executable executablepool input "
    "deltalake deltalakecluster iceberg icebergs3 icebergazure iceberghdfs icebergcluster "
    "hudi hudicluster hive python merge mergetreeindex dictionary loop fuzzjson fuzzquery "
    "arrowflight ytsaurus".split()
)
SAFE_SYSTEM_TABLES = frozenset(
    "one numbers numbers_mt zeros zeros_mt functions table_functions data_type_families "
    "time_zones formats".split()
)
PRIVATE_TABLES = frozenset({"api_keys", "audit_log"})

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>(?:--|\#)[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<quoted>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
    | (?P<heredoc>\$[A-Za-z0-9_]*\$)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class SqlRefused(ValueError):
    """The query is not a single read-only SELECT; the message says why."""


Token = tuple[str, str, int]  # kind, text, end offset in the query


def tokens(sql: str) -> list[Token]:
    """(kind, text, end) tokens without comments and whitespace."""
    found: list[Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match is not None  # "other" matches any character
        kind = match.lastgroup or "other"
        if kind == "block_comment":
            end = sql.find("*/", match.end())
            if end < 0:
                raise SqlRefused("a /* comment is never closed")
            if "/*" in sql[match.end() : end]:
                raise SqlRefused("nested /* comments are not accepted")
            pos = end + 2
            continue
        if kind == "heredoc":
            raise SqlRefused("heredoc ($$ … $$) strings are not accepted; use '…'")
        if kind == "other" and match.group() in "'\"`":
            raise SqlRefused(f"a {match.group()} quote is never closed")
        if kind not in ("space", "line_comment"):
            found.append((kind, match.group(), match.end()))
        pos = match.end()
    return found


def without_comments(sql: str, end: int) -> str:
    """``sql[:end]`` with each comment replaced by a space, nothing else changed."""
    kept: list[str] = []
    pos = 0
    while pos < end:
        match = _TOKEN.match(sql, pos)
        assert match is not None
        if match.lastgroup == "block_comment":
            pos = sql.find("*/", match.end()) + 2
            kept.append(" ")
            continue
        kept.append(" " if match.lastgroup == "line_comment" else match.group())
        pos = match.end()
    return "".join(kept)


def _name(token: Token) -> str:
    kind, text, _ = token
    return text[1:-1] if kind == "quoted" else text


def validate_select(sql: str, database: str, databases: set[str]) -> str:
    """The query as it will run (comments and trailing ';' removed, nothing
    else changed) if it is one read-only SELECT; else SqlRefused saying why."""
    found = tokens(sql)
    while found and found[-1][:2] == ("other", ";"):
        found.pop()
    if not found:
        raise SqlRefused("the query is empty")
    if any(token[:2] == ("other", ";") for token in found):
        raise SqlRefused("only one statement is allowed: remove the ';' between statements")
    kind, first, _ = found[0]
    if kind != "word" or first.lower() not in ("select", "with"):
        raise SqlRefused(f"only SELECT queries are allowed; this one starts with {first!r}")
    other_databases = {d for d in databases if d != database}
    for index, token in enumerate(found):
        kind, text, _ = token
        following = found[index + 1][1] if index + 1 < len(found) else ""
        if kind not in ("word", "quoted"):
            continue
        name = _name(token)
        if following == "(":
            if name.lower() in FORBIDDEN_FUNCTIONS:
                raise SqlRefused(f"{name}() reads outside the database and is not allowed")
        elif kind == "word" and text.lower() in FORBIDDEN_KEYWORDS:
            raise SqlRefused(f"{text.upper()} is not allowed in a read-only query")
        if name in PRIVATE_TABLES:
            raise SqlRefused(f"{name} is not readable through SQL")
        if following == "." and index + 2 < len(found):
            _check_qualified(name, _name(found[index + 2]), database, other_databases)
    return without_comments(sql, found[-1][2]).strip()


def _check_qualified(qualifier: str, name: str, database: str, others: set[str]) -> None:
    if qualifier.lower() in ("system", "information_schema"):
        if qualifier.lower() == "system" and name in SAFE_SYSTEM_TABLES:
            return
        allowed = ", ".join(f"system.{t}" for t in sorted(SAFE_SYSTEM_TABLES))
        raise SqlRefused(f"{qualifier}.{name} is not readable; of system tables only {allowed}")
    if qualifier in others:
        raise SqlRefused(f"only tables of the {database} database can be read, not {qualifier}")


def readonly_settings(max_seconds: float, max_memory_bytes: int) -> str:
    """The SETTINGS clause every query gets; readonly last, so it cannot be undone."""
    return (
        f"SETTINGS max_execution_time = {float(max_seconds)}, "
        f"max_memory_usage = {int(max_memory_bytes)}, readonly = 1"
    )


def readonly_query(select: str, limit: int, max_seconds: float, max_memory_bytes: int) -> str:
    return f"SELECT * FROM (\n{select}\n) LIMIT {int(limit) + 1} " + readonly_settings(
        max_seconds, max_memory_bytes
    )


class SqlQuery(BaseModel):
    sql: str = Field(max_length=100_000, description="one SELECT (or WITH … SELECT)")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="values for {name:Type} placeholders in the query"
    )
    limit: int | None = Field(default=None, ge=1, description="rows at most (server cap applies)")


_CODE = re.compile(r"Code: (\d+)")


def _refusal(exc: StoreError, max_seconds: float) -> HTTPException:
    message = str(exc)
    code = _CODE.search(message)
    if code is None:  # no ClickHouse error code: the store itself failed
        return HTTPException(503, f"store error: {message[:500]}")
    if code.group(1) == "159":
        return HTTPException(400, f"the query ran longer than {max_seconds:g} s and was stopped")
    if code.group(1) == "164":
        return HTTPException(400, "ClickHouse refused it: only reads are allowed (readonly)")
    return HTTPException(400, f"ClickHouse refused the query: {message[:1000]}")


@router.post(
    "/sql",
    summary="Run one read-only SELECT (JSON, or Arrow with its Accept type)",
    response_model=None,
)
def run_sql(body: SqlQuery, request: Request, caller: Caller("engineer")) -> Response | dict:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    bad = [name for name in body.params if not re.fullmatch(r"[A-Za-z_]\w*", name)]
    if bad:
        raise HTTPException(400, f"parameter names must be identifiers: {', '.join(bad)}")
    databases = {str(r["name"]) for r in query_rows(runtime.store, "SHOW DATABASES")}
    try:
        select = validate_select(body.sql, runtime.store.database, databases)
    except SqlRefused as exc:
        raise HTTPException(400, f"refused: {exc}") from None
    limit = min(body.limit or settings.sql_max_rows, settings.sql_max_rows)
    sql = readonly_query(select, limit, settings.sql_max_seconds, settings.sql_max_memory_mb << 20)
    started = time.perf_counter()
    try:
        table = runtime.store.query_arrow(sql, body.params or None)
    except StoreError as exc:
        raise _refusal(exc, settings.sql_max_seconds) from None
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    truncated = table.num_rows > limit
    table = table.slice(0, limit)
    runtime.audit.append(
        caller.name,
        caller.role,
        "sql.query",
        "sql",
        {"sql": body.sql[:4000], "params": body.params, "rows": table.num_rows},
    )
    if ARROW_STREAM in request.headers.get("accept", ""):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(
            sink.getvalue().to_pybytes(),
            media_type=ARROW_STREAM,
            headers={"X-Tokentrail-Truncated": str(truncated).lower()},
        )
    return {
        "columns": column_types(table),
        "rows": json_rows(table),
        "row_count": table.num_rows,
        "truncated": truncated,
        "limit": limit,
        "elapsed_ms": elapsed_ms,
    }


def column_types(table: pa.Table) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]

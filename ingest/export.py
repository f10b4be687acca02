"""Audit exports: the data file, its manifest, and checking both offline.

An export is a file (CSV, JSON Lines or Parquet) of ``llm_calls``,
``tool_calls`` or ``audit_log`` rows for a period, plus a manifest. The
export itself is an audit record (action ``audit.export``) whose details hold
the file's SHA-256, size and row count; the manifest is derived from that
record alone (``manifest_from_record``), so its ``audit_chain_head`` is the
export's own record and anyone with the collector can rebuild it.

The manifest carries ``manifest_sha256`` over its other fields and is written
in one canonical form, so any edited byte shows: a changed value breaks the
digest, changed formatting breaks the canonical form. ``verify_files`` needs
only the two files; ``chain_problems`` compares the manifest with the
collector's record of the export.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.rows import LLM_CALLS_SCHEMA, TOOL_CALLS_SCHEMA
from ingest.store import Store

FORMATS = {"csv": "text/csv", "jsonl": "application/x-ndjson", "parquet": "application/x-parquet"}
MANIFEST_VERSION = 1
EXPORT_ACTION = "audit.export"
AUDIT_COLUMNS = ("seq", "ts", "actor", "role", "action", "object", "details", "prev_hash", "hash")


class ExportError(ValueError):
    """The export asked for cannot be made; the message says why."""


# kind -> (table, columns, content columns, order, filter name -> SQL condition)
KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, dict[str, str]]] = {
    "calls": (
        "llm_calls",
        tuple(LLM_CALLS_SCHEMA.names),
        ("input_content", "output_content"),
        "ts, span_id",
        {
            "team": "team = {team:String}",
            "project": "project = {project:String}",
            "app": "app = {app:String}",
            "provider": "provider = {provider:String}",
            "model": "(response_model = {model:String} OR request_model = {model:String})",
            "status": "status = {status:String}",
        },
    ),
    "tools": (
        "tool_calls",
        tuple(TOOL_CALLS_SCHEMA.names),
        ("arguments", "result"),
        "ts, span_id, tool_call_id",
        {
            "team": "team = {team:String}",
            "project": "project = {project:String}",
            "app": "app = {app:String}",
            "tool_name": "tool_name = {tool_name:String}",
            "status": "status = {status:String}",
        },
    ),
    "audit": (
        "audit_log",
        AUDIT_COLUMNS,
        (),
        "seq",
        {
            "actor": "actor = {actor:String}",
            "role": "role = {role:String}",
            "action": "action = {action:String}",
        },
    ),
}


def export_table(
    store: Store,
    kind: str,
    start: datetime,
    end: datetime,
    filters: dict[str, str],
    content: bool,
    max_rows: int,
) -> pa.Table:
    """The rows of one export, in a stable order."""
    if kind not in KINDS:
        raise ExportError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    table, columns, content_columns, order, conditions = KINDS[kind]
    unknown = sorted(set(filters) - set(conditions))
    if unknown:
        raise ExportError(
            f"a {kind} export cannot filter by {', '.join(unknown)}; "
            f"it takes {', '.join(conditions)}"
        )
    if content and not content_columns:
        raise ExportError(f"a {kind} export has no content columns; drop content=true")
    selected = [c for c in columns if content or c not in content_columns]
    where = ["ts >= {start:DateTime64(6)}", "ts < {end:DateTime64(6)}"]
    where += [conditions[name] for name in sorted(filters)]
    sql = (
        f"SELECT {', '.join(selected)} FROM {table} WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT {{limit:UInt64}}"
    )
    result = store.query_arrow(sql, {**filters, "start": start, "end": end, "limit": max_rows + 1})
    if result.num_rows > max_rows:
        raise ExportError(
            f"the period holds more than {max_rows} rows (TOKENTRAIL_EXPORT_MAX_ROWS); "
            "export shorter periods"
        )
    return result


# -- encoding ---------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A cell as JSON-ready data: exact decimals as text, times in ISO 8601."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def json_ready_rows(table: pa.Table) -> list[dict[str, Any]]:
    maps = {f.name for f in table.schema if pa.types.is_map(f.type)}
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            row[key] = dict(value or []) if key in maps else _plain(value)
    return rows


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def encode(table: pa.Table, fmt: str) -> bytes:
    if fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return buffer.getvalue()
    rows = json_ready_rows(table)
    if fmt == "jsonl":
        return b"".join(orjson.dumps(row) + b"\n" for row in rows)
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([_csv_cell(v) for v in row.values()] for row in rows)
        return text.getvalue().encode()
    raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def count_rows(data: bytes, fmt: str) -> int:
    """Rows in an export file, read back in its format (raises ExportError)."""
    if fmt == "parquet":
        try:
            return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except Exception as exc:  # pyarrow raises several error types
            raise ExportError(f"it is not a readable Parquet file ({exc})") from None
    if fmt == "jsonl":
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, 1):
            try:
                if not isinstance(orjson.loads(line), dict):
                    raise ValueError
            except ValueError:
                raise ExportError(f"line {number} is not a JSON object") from None
        return len(lines)
    if fmt == "csv":
        try:
            records = list(csv.reader(io.StringIO(data.decode())))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ExportError(f"it is not readable CSV ({exc})") from None
        return max(len(records) - 1, 0)  # minus the header
    raise ExportError(f"unknown format {fmt!r}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the manifest -----------------------------------------------------------


def record_details(
    export_id: str,
    kind: str,
    fmt: str,
    start: datetime,
    end: datetime,
    filters: dict[str, str],
    content: bool,
    data: bytes,
    rows: int,
    key_id: str,
) -> dict[str, Any]:
    """What the ``audit.export`` record holds (the manifest is rebuilt from it)."""
    return {
        "export_id": export_id,
        "kind": kind,
        "format": fmt,
        "from": start.astimezone(UTC).isoformat(),
        "to": end.astimezone(UTC).isoformat(),
        "filters": filters,
        "content": content,
        "rows": rows,
        "bytes": len(data),
        "sha256": sha256_hex(data),
        "key_id": key_id,
    }


def manifest_digest(manifest: dict[str, Any]) -> str:
    fields = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_hex(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))


def manifest_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the export that ``record`` (an audit.export record) logged."""
    details = record["details"]
    if isinstance(details, str):
        details = orjson.loads(details)
    ts = record["ts"]
    if isinstance(ts, str):  # a record read back through the API
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    created_at = ts.astimezone(UTC).isoformat(timespec="milliseconds")
    manifest: dict[str, Any] = {
        "tokentrail_export_manifest": MANIFEST_VERSION,
        "export_id": details["export_id"],
        "kind": details["kind"],
        "format": details["format"],
        "period": {"from": details["from"], "to": details["to"]},
        "filters": details["filters"],
        "content": details["content"],
        "row_count": details["rows"],
        "file_bytes": details["bytes"],
        "file_sha256": details["sha256"],
        "audit_chain_head": {"seq": int(record["seq"]), "hash": record["hash"]},
        "created_at": created_at,
        "created_by": {
            "actor": record["actor"],
            "role": record["role"],
            "key_id": details["key_id"],
        },
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The one form a manifest file is written in."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


# -- verification -----------------------------------------------------------

_REQUIRED = {
    "export_id": str,
    "format": str,
    "row_count": int,
    "file_bytes": int,
    "file_sha256": str,
    "audit_chain_head": dict,
    "manifest_sha256": str,
}


def read_manifest(manifest_path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest and the problems with it (empty when it is intact)."""
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        return None, [f"cannot read the manifest {manifest_path}: {exc.strerror or exc}"]
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, [f"the manifest {manifest_path} is not valid JSON ({exc}): it was altered"]
    if not isinstance(manifest, dict):
        return None, [f"the manifest {manifest_path} is not a JSON object: it was altered"]
    for name, kind in _REQUIRED.items():
        if not isinstance(manifest.get(name), kind):
            return None, [f"the manifest lacks a valid {name!r} field: it was altered"]
    if manifest_digest(manifest) != manifest["manifest_sha256"]:
        return manifest, [
            "the manifest's fields do not match its manifest_sha256: a field was changed"
        ]
    if manifest_bytes(manifest) != raw:
        return manifest, [
            "the manifest's bytes differ from the form Tokentrail writes: it was edited"
        ]
    return manifest, []


def verify_files(path: Path, manifest_path: Path | None = None) -> tuple[dict | None, list[str]]:
    """Check an export file against its manifest, offline. Returns the
    manifest (when readable) and one sentence per problem found."""
    manifest, problems = read_manifest(manifest_path or manifest_path_for(path))
    if manifest is None:
        return None, problems
    try:
        data = path.read_bytes()
    except OSError as exc:
        return manifest, [*problems, f"cannot read the export {path}: {exc.strerror or exc}"]
    digest = sha256_hex(data)
    if digest != manifest["file_sha256"]:
        problems.append(
            f"{path.name} has SHA-256 {digest} but the manifest says {manifest['file_sha256']}: "
            "the file was changed"
        )
    if len(data) != manifest["file_bytes"]:
        problems.append(
            f"{path.name} is {len(data)} bytes but the manifest says {manifest['file_bytes']}"
        )
    try:
        rows = count_rows(data, manifest["format"])
    except ExportError as exc:
        problems.append(f"{path.name} cannot be read as {manifest['format']}: {exc}")
    else:
        if rows != manifest["row_count"]:
            problems.append(
                f"{path.name} holds {rows} rows but the manifest says {manifest['row_count']}"
            )
    return manifest, problems


def chain_problems(manifest: dict[str, Any], verification: dict[str, Any]) -> list[str]:
    """Compare a manifest with the collector's answer to
    ``GET /api/v1/audit/verify?seq=<the manifest's head seq>``."""
    head = manifest["audit_chain_head"]
    seq = head.get("seq")
    if not verification.get("ok"):
        return [f"the collector's audit chain is broken: {verification.get('problem')}"]
    record = verification.get("record")
    if record is None:
        return [f"the collector's audit log has no record seq {seq}, the manifest's chain head"]
    if record["hash"] != head.get("hash"):
        return [
            f"audit record seq {seq} has hash {record['hash']}, not the manifest's "
            f"{head.get('hash')}: the manifest is not from this collector's audit log"
        ]
    if record["action"] != EXPORT_ACTION:
        return [f"audit record seq {seq} is a {record['action']!r}, not an export"]
    logged = manifest_from_record(record)
    changed = sorted(k for k in logged.keys() | manifest.keys() if logged.get(k) != manifest.get(k))
    if changed:
        return [
            f"the manifest differs from the audit log's record of export seq {seq} in: "
            + ", ".join(changed)
        ]
    return []

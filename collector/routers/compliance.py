"""Compliance: the audit log, its chain check, and verifiable exports.

``GET /api/v1/audit/export`` answers with the export file as the body and its
manifest, base64 of the manifest file's exact bytes, in the
``X-Tokentrail-Manifest`` header. A browser that saves only the body fetches
the manifest from ``GET /api/v1/audit/exports/{export_id}/manifest``; both
come from the export's own audit record, so they are always identical.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.params import time_window
from collector.runtime import Runtime
from ingest.audit_chain import ANCHOR_FILE, check_chain, read_anchor
from ingest.export import (
    EXPORT_ACTION,
    FORMATS,
    KINDS,
    ExportError,
    count_rows,
    encode,
    export_table,
    manifest_bytes,
    manifest_from_record,
    record_details,
)
from ingest.store import query_rows

router = APIRouter(prefix="/api/v1", tags=["compliance"])
MAX_LIMIT = 1000
MANIFEST_HEADER = "X-Tokentrail-Manifest"
EXPORT_ID_HEADER = "X-Tokentrail-Export-Id"


@router.get("/audit/log", summary="Audit log records, newest first")
def audit_log(
    request: Request,
    _caller: Caller("compliance"),
    start: str | None = Query(
        None, alias="from", description="ISO 8601 or unix seconds; default 30 days before to"
    ),
    end: str | None = Query(None, alias="to", description="ISO 8601 or unix seconds; default now"),
    actor: str = Query("", description="key name that acted"),
    action: str = Query("", description="e.g. calls.read, audit.export, key.create"),
    obj: str = Query("", alias="object", description="what was acted on"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    frm, to = time_window(start, end, timedelta(days=30))
    values = {"actor": actor, "action": action, "object": obj}
    where = ["ts >= {start:DateTime64(6)}", "ts < {end:DateTime64(6)}"]
    where += [f"`{name}` = {{{name}:String}}" for name, value in values.items() if value]
    table = runtime.store.query_arrow(
        f"SELECT * FROM audit_log WHERE {' AND '.join(where)} "
        "ORDER BY seq DESC LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
        {
            **{k: v for k, v in values.items() if v},
            "start": frm,
            "end": to,
            "limit": limit + 1,
            "offset": offset,
        },
    )
    return {
        "rows": json_rows(table.slice(0, limit)),
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if table.num_rows > limit else None,
    }


@router.get("/audit/verify", summary="Check the audit log's hash chain")
def audit_verify(
    request: Request,
    _caller: Caller("compliance"),
    seq: int | None = Query(None, ge=1, description="also return the record with this seq"),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    records = runtime.audit.records()
    anchor = read_anchor(runtime.settings.data_dir / ANCHOR_FILE)
    report = check_chain(records, anchor).as_dict()
    record = next((r for r in records if int(r["seq"]) == seq), None) if seq else None
    report["record"] = None
    if record is not None:
        report["record"] = {
            **record,
            "ts": record["ts"].isoformat(timespec="milliseconds"),
            "seq": int(record["seq"]),
        }
    return report


def _filters(**given: str) -> dict[str, str]:
    return {name: value for name, value in given.items() if value}


@router.get("/audit/export", summary="Export calls, tool calls or the audit log with a manifest")
def audit_export(
    request: Request,
    caller: Caller("compliance"),
    start: str | None = Query(
        None, alias="from", description="ISO 8601 or unix seconds; default 30 days before to"
    ),
    end: str | None = Query(None, alias="to", description="ISO 8601 or unix seconds; default now"),
    fmt: str = Query("jsonl", alias="format", description="csv, jsonl or parquet"),
    kind: str = Query("calls", description="calls, tools or audit"),
    content: bool = Query(False, description="include (redacted) content; admin keys only"),
    team: str = "",
    project: str = "",
    app: str = "",
    provider: str = "",
    model: str = "",
    status: str = "",
    tool_name: str = "",
    actor: str = "",
    role: str = "",
    action: str = "",
) -> Response:
    runtime: Runtime = request.app.state.runtime
    if fmt not in FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if kind not in KINDS:
        raise HTTPException(400, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if content and caller.role != "admin":
        raise HTTPException(403, "exports with content need an admin key")
    frm, to = time_window(start, end, timedelta(days=30))
    filters = _filters(
        team=team,
        project=project,
        app=app,
        provider=provider,
        model=model,
        status=status,
        tool_name=tool_name,
        actor=actor,
        role=role,
        action=action,
    )
    try:
        table = export_table(
            runtime.store, kind, frm, to, filters, content, runtime.settings.export_max_rows
        )
        data = encode(table, fmt)
        rows = count_rows(data, fmt)
    except ExportError as exc:
        raise HTTPException(400, str(exc)) from None
    export_id = secrets.token_hex(8)
    details = record_details(
        export_id, kind, fmt, frm, to, filters, content, data, rows, caller.key_id
    )
    # The export's own record is the chain head its manifest names.
    record = runtime.audit.append(caller.name, caller.role, EXPORT_ACTION, export_id, details)
    manifest = manifest_bytes(manifest_from_record(record))
    extension = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[fmt]
    return Response(
        data,
        media_type=FORMATS[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="tokentrail-{kind}-{export_id}.'
            f'{extension}"',
            MANIFEST_HEADER: base64.b64encode(manifest).decode(),
            EXPORT_ID_HEADER: export_id,
            "Access-Control-Expose-Headers": f"{MANIFEST_HEADER}, {EXPORT_ID_HEADER}",
        },
    )


def _export_records(runtime: Runtime, export_id: str = "") -> list[dict[str, Any]]:
    condition = "action = {action:String}" + (" AND object = {id:String}" if export_id else "")
    return query_rows(
        runtime.store,
        f"SELECT * FROM audit_log WHERE {condition} ORDER BY seq DESC LIMIT 1000",
        {"action": EXPORT_ACTION, **({"id": export_id} if export_id else {})},
    )


@router.get("/audit/exports", summary="Past exports (newest 1000), each with its manifest")
def audit_exports(request: Request, _caller: Caller("compliance")) -> dict[str, Any]:
    records = _export_records(request.app.state.runtime)
    return {"rows": [manifest_from_record(record) for record in records]}


@router.get("/audit/exports/{export_id}/manifest", summary="An export's manifest file")
def export_manifest(export_id: str, request: Request, _caller: Caller("compliance")) -> Response:
    records = _export_records(request.app.state.runtime, export_id)
    if not records:
        raise HTTPException(404, f"no export with id {export_id!r}")
    return Response(
        manifest_bytes(manifest_from_record(records[0])),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="tokentrail-{export_id}.manifest.json"'
        },
    )


@router.get("/audit/forwarding", summary="Forwarding to OTLP / SIEM targets: counters")
def forwarding(request: Request, _caller: Caller("compliance")) -> dict[str, Any]:
    forwarder = request.app.state.runtime.forwarder
    return forwarder.status() if forwarder is not None else {"targets": []}

"""Admin: API keys. Every key change goes to the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from collector.auth import ROLES, Caller
from collector.jsonrows import json_rows
from collector.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["admin"])


class NewKey(BaseModel):
    role: str = Field(description=f"one of {', '.join(ROLES)}")
    name: str = Field(description="who uses the key, e.g. 'proxy' or 'finance-team'")


@router.post("/keys", status_code=201, summary="Create an API key (shown once)")
def create_key(body: NewKey, request: Request, caller: Caller()) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    try:
        key, principal = runtime.keys.create(body.role, body.name, created_by=caller.name)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    runtime.audit.append(
        caller.name,
        caller.role,
        "key.create",
        principal.key_id,
        {"role": principal.role, "name": principal.name},
    )
    return {"key": key, "key_id": principal.key_id, "role": principal.role, "name": principal.name}


@router.get("/keys", summary="List API keys (never the keys themselves)")
def list_keys(request: Request, _caller: Caller()) -> dict[str, Any]:
    import pyarrow as pa

    rows = request.app.state.runtime.keys.listing()
    return {"rows": json_rows(pa.Table.from_pylist(rows)) if rows else []}


@router.delete("/keys/{key_id}", summary="Revoke an API key")
def revoke_key(key_id: str, request: Request, caller: Caller()) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    if not runtime.keys.revoke(key_id):
        raise HTTPException(404, f"no active key with id {key_id!r}")
    runtime.audit.append(caller.name, caller.role, "key.revoke", key_id, {})
    return {"key_id": key_id, "revoked": True}

"""API keys and roles.

A key is ``tt_<key_id>_<secret>``: the id finds the stored record, and only
SHA-256 of the whole key is stored, compared in constant time. Keys are shown
once, when created. ``require(role, ...)`` is the FastAPI dependency every
route uses; admin may do everything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pyarrow as pa
from fastapi import Depends, HTTPException, Request

from ingest.store import Store, query_rows

ROLES = ("ingest", "finance", "engineer", "router", "compliance", "admin")

KEYS_SCHEMA = pa.schema(
    [
        ("key_id", pa.string()),
        ("name", pa.string()),
        ("role", pa.string()),
        ("key_hash", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("created_by", pa.string()),
        ("revoked_at", pa.timestamp("ms", tz="UTC")),
        ("version", pa.uint64()),
    ]
)


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Keys live in the store; this caches them so a request costs no query."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._keys: dict[str, dict] = {}
        self.reload()

    def reload(self) -> None:
        rows = query_rows(
            self.store,
            "SELECT key_id, name, role, key_hash, created_at, created_by, revoked_at "
            "FROM api_keys FINAL ORDER BY created_at",
        )
        with self._lock:
            self._keys = {row["key_id"]: row for row in rows}

    def create(self, role: str, name: str, created_by: str) -> tuple[str, Principal]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name.strip():
            raise ValueError("a key needs a name, e.g. the team or service that uses it")
        key_id = secrets.token_hex(6)
        key = f"tt_{key_id}_{secrets.token_urlsafe(32)}"
        row = {
            "key_id": key_id,
            "name": name.strip(),
            "role": role,
            "key_hash": hash_key(key),
            "created_at": datetime.now(UTC),
            "created_by": created_by,
            "revoked_at": None,
            "version": 1,
        }
        self.store.insert_arrow("api_keys", pa.Table.from_pylist([row], schema=KEYS_SCHEMA))
        with self._lock:
            self._keys[key_id] = row
        return key, Principal(key_id, row["name"], role)

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            row = self._keys.get(key_id)
        if row is None or row["revoked_at"] is not None:
            return False
        revoked = {**row, "revoked_at": datetime.now(UTC), "version": 2}
        self.store.insert_arrow("api_keys", pa.Table.from_pylist([revoked], schema=KEYS_SCHEMA))
        with self._lock:
            self._keys[key_id] = revoked
        return True

    def authenticate(self, key: str) -> Principal | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "tt":
            return None
        with self._lock:
            row = self._keys.get(parts[1])
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(str(row["key_hash"]), hash_key(key)):
            return None
        return Principal(row["key_id"], row["name"], row["role"])

    def listing(self) -> list[dict]:
        with self._lock:
            rows = list(self._keys.values())
        return [
            {
                k: row[k]
                for k in ("key_id", "name", "role", "created_at", "created_by", "revoked_at")
            }
            for row in rows
        ]


def ensure_admin_key(keys: KeyRing, path: Path) -> str | None:
    """On first start (no valid key in ``path``) create an admin key and write
    it with mode 0600. Returns the new key, or None when one was there."""
    if path.exists() and keys.authenticate(path.read_text().strip()) is not None:
        return None
    key, _ = keys.create("admin", "admin (created on first start)", created_by="collector")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return key


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require(*roles: str):
    """Dependency: the caller's key must have one of ``roles`` (or admin)."""
    allowed = set(roles) | {"admin"}

    def check(request: Request) -> Principal:
        token = _bearer(request)
        if not token:
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = request.app.state.keys.authenticate(token)
        if principal is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if principal.role not in allowed:
            raise HTTPException(
                403,
                f"a {principal.role} key may not use this endpoint; it needs one of: "
                + ", ".join(sorted(allowed)),
            )
        request.state.principal = principal
        return principal

    return check


def Caller(*roles: str):  # noqa: N802 - reads as a type in route signatures
    return Annotated[Principal, Depends(require(*roles))]

"""Audit exports: file + manifest from a real collector, verified offline and
against the audit chain; any one-byte change to either file fails verification."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from ingest.export import (
    chain_problems,
    count_rows,
    manifest_bytes,
    manifest_digest,
    manifest_path_for,
    sha256_hex,
    verify_files,
)
from tests.compliance_helpers import MARKER, PERIOD, api, seed_calls
from tests.conftest import ROOT, CollectorProcess

CONTENT_COLUMNS = {"input_content", "output_content", "arguments", "result"}


@pytest.fixture(scope="module")
def seeded(collector: CollectorProcess) -> dict[str, str]:
    seed_calls(collector, teams=("exp-a", "exp-b"), per_team=3)
    return {
        "compliance": collector.create_key("compliance", "auditor"),
        "finance": collector.create_key("finance"),
        "engineer": collector.create_key("engineer"),
    }


def export(collector: CollectorProcess, key: str, **params: str):
    return api(collector, "GET", "/api/v1/audit/export", key, params={**PERIOD, **params})


def save(response, path: Path) -> Path:
    path.write_bytes(response.content)
    manifest_path_for(path).write_bytes(base64.b64decode(response.headers["X-Tokentrail-Manifest"]))
    return path


def verification(collector: CollectorProcess, key: str, manifest: dict) -> dict:
    seq = manifest["audit_chain_head"]["seq"]
    return api(collector, "GET", "/api/v1/audit/verify", key, params={"seq": seq}).json()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize(
    ("kind", "filters", "rows"),
    [
        ("calls", {"team": "exp-a"}, 3),
        ("tools", {"team": "exp-b"}, 3),
        ("audit", {"action": "key.create"}, None),
    ],
)
def test_export_verifies_offline_and_against_the_chain(
    collector: CollectorProcess,
    seeded: dict,
    tmp_path: Path,
    fmt: str,
    kind: str,
    filters: dict,
    rows: int | None,
) -> None:
    key = seeded["compliance"]
    response = export(collector, key, format=fmt, kind=kind, **filters)
    assert response.status_code == 200, response.text
    path = save(response, tmp_path / f"export.{fmt}")
    manifest, problems = verify_files(path)
    assert problems == []
    assert chain_problems(manifest, verification(collector, key, manifest)) == []
    assert manifest["kind"] == kind and manifest["format"] == fmt
    assert manifest["filters"] == filters and manifest["created_by"]["actor"] == "auditor"
    assert manifest["period"] == {
        "from": "2020-01-01T00:00:00+00:00",
        "to": "2030-01-01T00:00:00+00:00",
    }
    if rows is not None:
        assert manifest["row_count"] == rows == count_rows(path.read_bytes(), fmt)
    else:  # the key.create records so far (the first start's admin key and seeded keys)
        assert manifest["row_count"] >= 4
    # A compliance key never gets content: no content column, no content text.
    assert not CONTENT_COLUMNS & set(columns_of(path, fmt))
    assert MARKER.encode() not in path.read_bytes()


def columns_of(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return pq.read_schema(path).names
    if fmt == "csv":
        return path.read_text().splitlines()[0].split(",")
    return list(json.loads(path.read_bytes().splitlines()[0]))


def test_export_is_its_own_audit_record(collector: CollectorProcess, seeded: dict) -> None:
    key = seeded["compliance"]
    response = export(collector, key, format="jsonl", kind="audit")
    manifest_raw = base64.b64decode(response.headers["X-Tokentrail-Manifest"])
    manifest = orjson.loads(manifest_raw)
    head = manifest["audit_chain_head"]
    record = verification(collector, key, manifest)["record"]
    assert record["action"] == "audit.export" and record["object"] == manifest["export_id"]
    details = json.loads(record["details"])
    assert details["sha256"] == sha256_hex(response.content) == manifest["file_sha256"]
    # The audit export holds the log as it was just before its own record.
    seqs = [json.loads(line)["seq"] for line in response.content.splitlines()]
    assert seqs == list(range(1, head["seq"]))
    # A browser that saved only the body gets the identical manifest by id.
    again = api(collector, "GET", f"/api/v1/audit/exports/{manifest['export_id']}/manifest", key)
    assert again.status_code == 200 and again.content == manifest_raw
    listed = api(collector, "GET", "/api/v1/audit/exports", key).json()["rows"]
    assert manifest in listed
    missing = api(collector, "GET", "/api/v1/audit/exports/nope/manifest", key)
    assert missing.status_code == 404


def flipped_copies(data: bytes, stride: int = 1):
    for position in range(0, len(data), stride):
        for bit in (0x01, 0x20):  # a low bit, and a case/whitespace bit
            changed = bytearray(data)
            changed[position] ^= bit
            yield position, bytes(changed)


@pytest.mark.parametrize(("fmt", "stride"), [("jsonl", 1), ("csv", 1), ("parquet", 7)])
def test_any_one_byte_change_fails(
    collector: CollectorProcess, seeded: dict, tmp_path: Path, fmt: str, stride: int
) -> None:
    response = export(collector, seeded["compliance"], format=fmt, team="exp-a")
    path = save(response, tmp_path / f"export.{fmt}")
    manifest_path = manifest_path_for(path)
    original_file, original_manifest = path.read_bytes(), manifest_path.read_bytes()
    assert verify_files(path)[1] == []
    survivors = []
    for position, changed in flipped_copies(original_manifest):
        manifest_path.write_bytes(changed)
        if not verify_files(path)[1]:
            survivors.append(("manifest", position))
    manifest_path.write_bytes(original_manifest)
    for position, changed in flipped_copies(original_file, stride):
        path.write_bytes(changed)
        problems = verify_files(path)[1]
        if not problems:
            survivors.append(("file", position))
        elif position == 0:
            assert "the file was changed" in problems[0]
    assert survivors == []


def run_cli(*args: str, key: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    return subprocess.run(
        [sys.executable, "-m", "tokentrail.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "TOKENTRAIL_API_KEY": key},
    )


def test_cli_export_then_verify_and_a_forged_manifest(
    collector: CollectorProcess, seeded: dict, tmp_path: Path
) -> None:
    key, url = seeded["compliance"], ["--url", collector.url]
    out = tmp_path / "calls.csv"
    made = run_cli(
        "audit",
        "export",
        "--from",
        "2020-01-01",
        "--to",
        "2030-01-01",
        "--format",
        "csv",
        "--out",
        str(out),
        "--filter",
        "team=exp-b",
        *url,
        key=key,
    )
    assert made.returncode == 0, made.stderr
    assert "wrote 3 rows" in made.stdout and manifest_path_for(out).exists()
    good = run_cli("audit", "verify", str(out), *url, key=key)
    assert good.returncode == 0 and good.stdout.startswith("OK"), good.stderr

    # One flipped byte: exit 1 and a sentence naming what failed.
    data = bytearray(out.read_bytes())
    data[-5] ^= 0x01
    out.write_bytes(bytes(data))
    bad = run_cli("audit", "verify", str(out), "--offline", key=key)
    assert bad.returncode == 1 and "the file was changed" in bad.stderr

    # A forger drops a row and rewrites the manifest consistently: the file and
    # manifest agree offline, but the audit log's record of the export does not.
    lines = out.read_bytes().splitlines(keepends=True)[:-1]
    forged_data = b"".join(lines)
    out.write_bytes(forged_data)
    manifest = orjson.loads(manifest_path_for(out).read_bytes())
    manifest.update(
        row_count=len(lines) - 1, file_bytes=len(forged_data), file_sha256=sha256_hex(forged_data)
    )
    manifest["manifest_sha256"] = manifest_digest(manifest)
    manifest_path_for(out).write_bytes(manifest_bytes(manifest))
    offline = run_cli("audit", "verify", str(out), "--offline", key=key)
    assert offline.returncode == 0, offline.stderr
    online = run_cli("audit", "verify", str(out), *url, key=key)
    assert online.returncode == 1
    assert "differs from the audit log's record" in online.stderr
    assert "file_sha256" in online.stderr and "row_count" in online.stderr


def test_export_refusals(collector: CollectorProcess, seeded: dict) -> None:
    key = seeded["compliance"]
    cases = [
        ({"format": "xml"}, 400, "format must be one of"),
        ({"kind": "spans"}, 400, "kind must be one of"),
        ({"kind": "audit", "team": "x"}, 400, "cannot filter by team"),
        ({"kind": "calls", "tool_name": "x"}, 400, "cannot filter by tool_name"),
        ({"content": "true"}, 403, "admin"),
        ({"from": "yesterday"}, 400, "not a time"),
    ]
    for params, status, message in cases:
        response = export(collector, key, **params)
        assert response.status_code == status and message in response.text, params
    assert export(collector, seeded["finance"]).status_code == 403
    assert export(collector, seeded["engineer"]).status_code == 403


def test_admin_export_with_content_is_redacted(collector: CollectorProcess, seeded: dict) -> None:
    response = export(collector, collector.admin_key, team="exp-a", content="true")
    rows = [json.loads(line) for line in response.content.splitlines()]
    assert len(rows) == 3 and all(MARKER in row["input_content"] for row in rows)
    assert all("dave@corp.example" not in row["input_content"] for row in rows)
    manifest = orjson.loads(base64.b64decode(response.headers["X-Tokentrail-Manifest"]))
    assert manifest["content"] is True

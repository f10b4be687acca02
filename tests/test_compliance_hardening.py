"""Hardening: secrets on disk are 0600, keys are compared in constant time,
oversized bodies get a clear 413."""

from __future__ import annotations

import gzip
import hmac
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.auth import KeyRing, hash_key
from ingest.migrate import migrate
from ingest.store import ChdbStore
from proxy_addon.launch import CA_KEY_FILES, mitmdump_args
from tests.conftest import ROOT, CollectorProcess, collector_env, free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_admin_key_is_0600(collector: CollectorProcess) -> None:
    assert mode(collector.data_dir / "admin.key") == 0o600


def test_proxy_ca_private_key_is_0600(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TOKENTRAIL_API_KEY": "unused"}
    log = (tmp_path / "proxy.log").open("wb")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tokentrail.cli", "proxy", "--data-dir", str(data_dir),
         "--port", str(port), "--collector-url", f"http://127.0.0.1:{free_port()}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    confdir = data_dir / "proxy" / "mitmproxy"
    try:
        deadline = time.monotonic() + 60
        # mitmproxy writes the key files first, the public certificate last.
        while not (confdir / "mitmproxy-ca-cert.pem").exists():
            assert proxy.poll() is None and time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.1)
        for name in CA_KEY_FILES:
            assert mode(confdir / name) == 0o600, name
        assert b"PRIVATE KEY" not in (confdir / "mitmproxy-ca-cert.pem").read_bytes()
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(30)

    # A key made by another tool (or copied in) is tightened on the next start.
    os.chmod(confdir / "mitmproxy-ca.pem", 0o644)
    mitmdump_args(data_dir, "127.0.0.1", port, "http://127.0.0.1:1", [])
    assert mode(confdir / "mitmproxy-ca.pem") == 0o600


def test_keys_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    keys = KeyRing(store)
    key, principal = keys.create("finance", "f", created_by="test")
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    forged = f"tt_{principal.key_id}_{'x' * 43}"
    assert keys.authenticate(forged) is None and keys.authenticate(key) == principal
    assert compared == [(hash_key(key), hash_key(forged)), (hash_key(key), hash_key(key))]
    store.close()


def test_oversized_bodies_get_a_clear_413(tmp_path: Path) -> None:
    proc = CollectorProcess(
        tmp_path / "data", free_port(), collector_env(TOKENTRAIL_MAX_REQUEST_BYTES="10000")
    )
    proc.start()
    try:
        key = proc.create_key("ingest")
        json_type = {"Content-Type": "application/json"}
        big = proc.post("/v1/traces", key, content=b" " * 20_000, headers=json_type)
        assert big.status_code == 413 and "larger than 10000 bytes" in big.text
        bomb = gzip.compress(b" " * 1_000_000)  # small on the wire, large inflated
        inflated = proc.post(
            "/v1/traces", key, content=bomb, headers={**json_type, "Content-Encoding": "gzip"}
        )
        assert inflated.status_code in (400, 413) and "10000" in inflated.text
        assert proc.get("/healthz").status_code == 200
    finally:
        proc.stop()

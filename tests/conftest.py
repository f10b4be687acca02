"""Shared fixtures: a real collector process on a free loopback port.

Tests talk to it the way users do — HTTP, the OTel SDK exporter, the CLI —
so a passing test means the shipped command works.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CollectorProcess:
    data_dir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"collector-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokentrail.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"collector did not become healthy:\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, headers=self.headers(key), timeout=30)

    def post(self, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}{path}",
            headers={**self.headers(key), **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )

    def create_key(self, role: str, name: str = "test") -> str:
        response = self.post("/api/v1/keys", json={"role": role, "name": name})
        response.raise_for_status()
        return response.json()["key"]

    def wait_for(self, check: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll until ``check()`` is truthy: writes land in the store in batches."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.1)

    def calls(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/api/v1/calls", **params)
        response.raise_for_status()
        return response.json()["rows"]


def collector_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    # gRPC off unless a test asks: every test collector would race for port 4317.
    env.update(
        {
            "TOKENTRAIL_BATCH_MAX_SECONDS": "0.1",
            "TOKENTRAIL_GRPC_PORT": "0",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector per test module (starting one takes about a second)."""
    proc = CollectorProcess(
        tmp_path_factory.mktemp("collector") / "data", free_port(), collector_env()
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture()
def fresh_collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector of the test's own, for tests that stop and restart it."""
    proc = CollectorProcess(tmp_path / "data", free_port(), collector_env())
    proc.start()
    yield proc
    proc.stop()

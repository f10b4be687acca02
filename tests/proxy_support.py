"""The capture proxy as tests run it: a real ``tokentrail proxy`` (mitmdump with
TLS interception) in its own process, plus the throwaway certificates and the
simulated provider over HTTPS it talks to. Shared by tests/test_proxy_e2e.py
and tests/faults/ (import the fixtures into the test module or conftest)."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.simulator import make_test_certificate, start_simulator
from tests.conftest import ROOT

# Only whole lines: one still being written must not be read as a shorter one.
STATS_LINE = re.compile(r"tokentrail stats ((?:\w+=-?\d+ ?)+)\n")


@dataclass
class ProxyProcess:
    data_dir: Path
    port: int
    collector_url: str
    api_key: str
    upstream_ca: Path
    extra: tuple[str, ...] = ()
    # mitmproxy options (e.g. tokentrail_stats_seconds) written to its config.yaml,
    # which mitmdump reads from its confdir at start.
    options: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def confdir(self) -> Path:
        return self.data_dir / "proxy" / "mitmproxy"

    @property
    def ca_file(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"proxy-{self.port}.log"

    def start(self) -> None:
        env = {
            "TOKENTRAIL_API_KEY": self.api_key,
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.data_dir),
            # The log shows each line as it is written (the stats lines are read live).
            "PYTHONUNBUFFERED": "1",
        }
        if self.options:
            self.confdir.mkdir(parents=True, exist_ok=True)
            (self.confdir / "config.yaml").write_text(
                "".join(f"{k}: {json.dumps(v)}\n" for k, v in self.options.items())
            )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokentrail.cli",
                "proxy",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--collector-url",
                self.collector_url,
                "--upstream-ca",
                str(self.upstream_ca),
                *self.extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    if self.ca_file.exists():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"proxy did not start:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT shuts mitmdump down cleanly; ``sig=signal.SIGKILL`` is a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(
            proxy=self.url, verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=30
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stats_lines(self) -> list[dict[str, int]]:
        """Every ``tokentrail stats k=v ...`` line the proxy logged, oldest first
        (one per ``tokentrail_stats_seconds``; a restarted proxy counts from 0)."""
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(errors="replace")
        return [
            {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
            for match in STATS_LINE.finditer(text)
        ]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    return make_test_certificate(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def sim(certs: tuple[str, str, str]) -> Iterator[Any]:
    certfile, keyfile, _ = certs
    with start_simulator(certfile=certfile, keyfile=keyfile) as running:
        yield running

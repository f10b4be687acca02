"""bench/proxy.py's processes: simulator, collector, bare mitmdump(s) and ``tokentrail
proxy`` in one temp dir, always torn down; the run's ``Deadline``, ``log`` and clean child
environment (bench/load_stack.py reuses them); ``wait_recorded``, the zero-loss check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Deadline, log, stop_process_group
from bench.procfs import free_port
from demo.simulator import make_test_certificate

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("direct", "mitmdump", "tokentrail")
# --streaming-baseline: bare mitmdump plus the least addon that streams SSE responses
# through (as tokentrail must, for time to first token) instead of buffering them.
STREAMING = "mitmdump-stream"
STREAMING_ADDON = """\
class StreamEventStreams:
    def responseheaders(self, flow):
        if "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True


addons = [StreamEventStreams()]
"""
# --indexed-baseline: the master `tokentrail proxy` runs (mitmdump's, with mitmproxy's
# hooks indexed per event: proxy_addon/master.py) without the capture addon, so the
# capture's own cost can be told from what the faster master saves.
INDEXED = "mitmdump-indexed"
BASELINES = (STREAMING, INDEXED)
REQUEST_TIMEOUT_S = 30.0


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without TOKENTRAIL_* settings or proxy variables, plus ``extra``."""
    proxy_vars = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKENTRAIL_") and k.lower() not in proxy_vars
    }
    # The children run this checkout's code, also from a venv installed elsewhere.
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra})
    return env


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        proc = self.proc
        stop_process_group(proc, self.stop_signal)  # its own process group: exactly it


class Stack:
    """The simulator, collector and both proxies, in a temp dir; always torn down."""

    def __init__(
        self,
        keep_dir: bool = False,
        streaming_baseline: bool = False,
        indexed_baseline: bool = False,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tokentrail-bench-proxy-"))
        self.keep_dir = keep_dir
        self.streaming_baseline = streaming_baseline
        self.indexed_baseline = indexed_baseline
        self.targets: tuple[str, ...] = (
            TARGETS
            + ((STREAMING,) if streaming_baseline else ())
            + ((INDEXED,) if indexed_baseline else ())
        )
        self.services: list[Service] = []
        self.urls: dict[str, str] = {}
        self.verify: dict[str, ssl.SSLContext] = {}
        self.pids: dict[str, int] = {}
        self.admin_key = ""
        self.collector_url = ""
        self.tokentrail_data = self.tmp / "proxy-data"

    def spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
        quiet_stdout: bool = False,
    ) -> Service:
        log_path = self.tmp / f"{name}.log"
        handle = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if quiet_stdout else handle,
                stderr=handle,
                start_new_session=True,
            )
        finally:
            handle.close()  # the child holds its own descriptor
        service = Service(name, proc, log_path, stop_signal)
        self.services.append(service)
        return service

    def close(self) -> None:
        # Proxies first (the tokentrail one drains its spool to the live collector).
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()
        if self.keep_dir:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the pieces ----------------------------------------------------------
    def start(self, deadline: Deadline) -> dict[str, float]:
        took: dict[str, float] = {}
        t = time.perf_counter()
        certfile, keyfile, sim_ca = make_test_certificate(self.tmp / "certs")
        self.sim_ca = sim_ca
        sim_port = free_port()
        sim = self.spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "demo.simulator",
                "--port",
                str(sim_port),
                "--certfile",
                certfile,
                "--keyfile",
                keyfile,
            ],
            child_env(),
            # uvicorn's access log (one line per request) goes nowhere.
            quiet_stdout=True,
        )
        self.urls["direct"] = f"https://127.0.0.1:{sim_port}"
        self.verify["direct"] = ssl.create_default_context(cafile=sim_ca)
        self.pids["simulator"] = sim.pid
        with httpx.Client(verify=self.verify["direct"], trust_env=False, timeout=2) as client:
            self._wait(sim, deadline, lambda: client.get(self.urls["direct"] + "/health"))
        took["simulator"] = time.perf_counter() - t

        t = time.perf_counter()
        self._start_collector(deadline)
        took["collector"] = time.perf_counter() - t

        t = time.perf_counter()
        self._start_mitmdump("mitmdump", [], deadline)
        took["mitmdump"] = time.perf_counter() - t
        if self.streaming_baseline:
            t = time.perf_counter()
            script = self.tmp / "stream_event_streams.py"
            script.write_text(STREAMING_ADDON)
            self._start_mitmdump(STREAMING, ["-s", str(script)], deadline)
            took[STREAMING] = time.perf_counter() - t
        if self.indexed_baseline:
            t = time.perf_counter()
            master = [sys.executable, "-m", "proxy_addon.master"]
            self._start_mitmdump(INDEXED, [], deadline, command=master)
            took[INDEXED] = time.perf_counter() - t

        t = time.perf_counter()
        ingest_key = self._create_key("ingest", "bench-proxy")
        tt_port = free_port()
        proxy = self.spawn(
            "tokentrail-proxy",
            [
                sys.executable,
                "-m",
                "tokentrail.cli",
                "proxy",
                "--data-dir",
                str(self.tokentrail_data),
                "--port",
                str(tt_port),
                "--collector-url",
                self.collector_url,
                "--upstream-ca",
                sim_ca,
            ],
            child_env(TOKENTRAIL_API_KEY=ingest_key, HOME=str(self.tmp)),
            stop_signal=signal.SIGINT,
        )
        self._wait_proxy(
            "tokentrail", proxy, tt_port, self.tokentrail_data / "proxy" / "mitmproxy", deadline
        )
        took["tokentrail"] = time.perf_counter() - t
        return took

    def _start_mitmdump(
        self,
        target: str,
        extra: list[str],
        deadline: Deadline,
        command: list[str] | None = None,
    ) -> None:
        """The venv's bare mitmdump (or ``command`` taking its arguments): regular
        mode, TLS interception, its own confdir."""
        confdir = self.tmp / f"{target}-confdir"
        confdir.mkdir()
        port = free_port()
        mitmdump = Path(sys.executable).with_name("mitmdump")
        if command is None and not mitmdump.exists():
            raise RuntimeError(f"no mitmdump beside {sys.executable}")
        service = self.spawn(
            target,
            [
                *(command or [str(mitmdump)]),
                "--listen-host",
                "127.0.0.1",
                "--mode",
                f"regular@{port}",
                *extra,
                "--set",
                f"confdir={confdir}",
                "--set",
                f"ssl_verify_upstream_trusted_ca={self.sim_ca}",
                "--set",
                "flow_detail=0",
                "--set",
                "termlog_verbosity=warn",
                # As `tokentrail proxy` sets it, so the only difference is the addon.
                "--set",
                "connection_strategy=lazy",
            ],
            child_env(HOME=str(self.tmp)),
            stop_signal=signal.SIGINT,
        )
        self._wait_proxy(target, service, port, confdir, deadline)

    def _start_collector(self, deadline: Deadline) -> None:
        data_dir = self.tmp / "collector-data"
        port = free_port()
        script = Path(sys.executable).with_name("tokentrail")
        head = [str(script)] if script.exists() else [sys.executable, "-m", "tokentrail.cli"]
        collector = self.spawn(
            "collector",
            head
            + ["serve", "--data-dir", str(data_dir), "--port", str(port)]
            + ["--log-level", "warning"],
            child_env(),
        )
        self.collector_url = f"http://127.0.0.1:{port}"
        self.pids["collector"] = collector.pid
        with httpx.Client(trust_env=False, timeout=2) as client:
            self._wait(collector, deadline, lambda: client.get(self.collector_url + "/healthz"))
        key_path = data_dir / "admin.key"
        while not key_path.exists():
            deadline.check("waiting for admin.key")
            time.sleep(0.05)
        self.admin_key = key_path.read_text().strip()

    def _create_key(self, role: str, name: str) -> str:
        response = httpx.post(
            self.collector_url + "/api/v1/keys",
            json={"role": role, "name": name},
            headers={"Authorization": f"Bearer {self.admin_key}"},
            trust_env=False,
            timeout=30,
        )
        response.raise_for_status()
        return response.json()["key"]

    @staticmethod
    def _wait(service: Service, deadline: Deadline, probe: Callable[[], httpx.Response]) -> None:
        while True:
            service.check_alive()
            deadline.check(f"waiting for the {service.name}")
            with contextlib.suppress(httpx.HTTPError):
                if probe().status_code == 200:
                    return
            time.sleep(0.1)

    def _wait_proxy(
        self, target: str, service: Service, port: int, confdir: Path, deadline: Deadline
    ) -> None:
        ca = confdir / "mitmproxy-ca-cert.pem"
        while True:
            service.check_alive()
            deadline.check(f"waiting for the {service.name}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    if ca.exists():
                        break
            except OSError:
                pass
            time.sleep(0.1)
        self.urls[target] = f"http://127.0.0.1:{port}"
        self.verify[target] = ssl.create_default_context(cafile=str(ca))
        self.pids[target] = service.pid

    def client(self, target: str) -> httpx.Client:
        """A keep-alive client that reaches the simulator via ``target``."""
        kwargs: dict[str, Any] = {}
        if target != "direct":
            kwargs["proxy"] = self.urls[target]
        return httpx.Client(
            verify=self.verify[target], trust_env=False, timeout=REQUEST_TIMEOUT_S, **kwargs
        )

    def spool_files(self) -> int:
        return len(list((self.tokentrail_data / "proxy" / "spool").glob("*.otlp")))

    def spend(self) -> dict[str, int] | None:
        """Calls and error calls the collector stored (all of them come from our proxy)."""
        now = int(time.time())
        try:
            response = httpx.get(
                self.collector_url + "/api/v1/spend",
                params={"from": now - 86_400, "to": now + 3_600},
                headers={"Authorization": f"Bearer {self.admin_key}"},
                trust_env=False,
                timeout=30,
            )
            response.raise_for_status()
            rows = response.json()["rows"]
            return {
                "calls": int(sum(row["calls"] for row in rows)),
                "error_calls": int(sum(row.get("error_calls") or 0 for row in rows)),
            }
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return None


# --------------------------------------------------------------- collector check


def wait_recorded(stack: Stack, expected: int, deadline: Deadline) -> dict[str, Any]:
    """Poll the spend API until ``expected`` calls are stored (or no progress for 30 s)."""
    started = time.perf_counter()
    last: dict[str, int] | None = None
    last_change = time.monotonic()
    while True:
        spend = stack.spend()
        if spend != last:
            last, last_change = spend, time.monotonic()
        calls = spend["calls"] if spend else 0
        spooled = stack.spool_files()
        if calls >= expected and spooled == 0:
            break
        if time.monotonic() - last_change > 30 and spooled == 0:
            log(f"  no progress for 30 s: {calls} of {expected} calls stored")
            break
        if deadline.left() <= 0:
            log(f"  timed out waiting for the collector: {calls} of {expected} calls stored")
            break
        time.sleep(0.25)
    return {
        "expected_calls": expected,
        "recorded_calls": last["calls"] if last else None,
        "error_calls": last["error_calls"] if last else None,
        "spool_files_left": stack.spool_files(),
        "drain_s": time.perf_counter() - started,
        "all_recorded": bool(last and last["calls"] == expected),
    }

"""The collector bench/ingest.py measures: a ``tokentrail serve`` subprocess and its CPU.

``Collector`` runs it on free loopback ports with its own temp data dir and
always cleans up; ``PySpy`` optionally records it; the thread and child-process
CPU readers split its CPU time between Python, the store and the decode
workers. ``Deadline`` and ``log`` are the run-wide budget and progress output
every stage of bench/ingest.py shares.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Deadline, stop_process_group
from bench.procfs import child_pids, free_port, proc_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


def collector_command(data_dir: Path, port: int, grpc_port: int = 0) -> list[str]:
    # The venv's console script, not ``uv run``: the pid we watch (RSS, CPU,
    # py-spy) must be the collector's Python process, not a launcher.
    script = Path(sys.executable).with_name("tokentrail")
    head = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from tokentrail.cli import app; app()"]
    )
    return head + [
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--grpc-port",  # 0: off, so no bench collector takes the default 4317
        str(grpc_port),
        "--log-level",
        "warning",
    ]


def children_cpu_seconds(pid: int) -> dict[int, float]:
    return {c: cpu for c in child_pids(pid) if (cpu := proc_cpu_seconds(c)) is not None}


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) for every thread of the process.

    Python 3.11 threads keep the process's name; chDB's native threads carry
    their own (e.g. a pipeline executor), which separates Python from the store.
    """
    out: dict[str, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            except OSError:
                continue
            cpu = proc_cpu_seconds(pid, task)
            if cpu is not None:
                out[task] = (name, cpu)
    return out


def cpu_by_thread_name(
    before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two ``thread_cpu`` snapshots, summed by thread name."""
    totals: dict[str, float] = {}
    for task, (name, cpu) in after.items():
        spent = cpu - before.get(task, (name, 0.0))[1]
        if spent > 0:
            totals[name] = totals.get(name, 0.0) + spent
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


class Collector:
    """A ``tokentrail serve`` subprocess with its own temp data dir; always cleaned up."""

    def __init__(self, keep_dir: bool = False, grpc: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tokentrail-bench-"))
        self.data_dir = self.tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.keep_dir = keep_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.store_bytes = 0
        self.log_path = self.tmp / "collector.log"
        self._log = None

    def start(self, deadline: Deadline) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            collector_command(self.data_dir, self.port, self.grpc_port),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: we stop exactly it
        )
        with httpx.Client(timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"collector exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                deadline.check("waiting for the collector's /healthz")
                try:
                    if client.get(self.url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        key_path = self.data_dir / "admin.key"
        while not key_path.exists():  # written before the app serves, but be sure
            deadline.check("waiting for admin.key")
            time.sleep(0.05)
        self.key = key_path.read_text().strip()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def health(self, client: httpx.Client) -> dict[str, Any]:
        response = client.get(self.url + "/healthz")
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None:
            stop_process_group(proc)  # SIGTERM: uvicorn runs the lifespan close
        if self._log is not None:
            self._log.close()
        # Disk use of the embedded store once the collector has shut down
        # (its parts merged as far as ClickHouse got): spans, llm_calls, tool_calls.
        chdb = self.data_dir / "chdb"
        self.store_bytes = sum(f.stat().st_size for f in chdb.rglob("*") if f.is_file())
        if not self.keep_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)

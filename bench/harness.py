"""What every bench shares: stderr progress lines, one wall-clock budget per
run, and py-spy attached to a process under test."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Deadline:
    """One wall-clock budget for the whole run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"gave up after {self.seconds:.0f} s ({what})")


def machine_basics() -> dict[str, Any]:
    """The machine facts every bench prints beside its figures."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    return {
        "nproc": affinity,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
    }


def stop_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group ``proc`` leads (started with
    ``start_new_session``), then SIGKILL it if it has not exited in 20 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class PySpy:
    """py-spy recording ``pid`` until ``stop``; ``gil`` samples only the GIL holder.
    The output format follows the file's suffix (.svg, .json, else collapsed text)."""

    def __init__(self, out: Path, pid: int, gil: bool = False, rate_hz: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise RuntimeError("py-spy is not installed (uv pip install py-spy)")
        self.out = out
        self.format = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--threads"]
            + ["--format", self.format, "--output", str(out), "--nonblocking"]
            + (["--gil"] if gil else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(1.0)  # let it attach before the traffic starts
        if self.proc.poll() is not None:
            assert self.proc.stderr is not None
            raise RuntimeError(f"py-spy failed: {self.proc.stderr.read().decode()[-500:]}")

    def stop(self) -> None:
        stop_process_group(self.proc, signal.SIGINT)  # py-spy writes its output on SIGINT

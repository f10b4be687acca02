"""``tokentrail up``: the real command, its children and their shutdown.

``up --demo`` in a fresh data dir fills every page (checked in headless
Chromium, signed in automatically) and SIGINT stops the whole group; a child
that dies takes the group down with a report."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.dashboards_support import (
    ARTIFACTS,
    assert_no_exception,
    browser_fixture,  # noqa: F401 - the browser fixture
    main_text,
    metric,
    new_page,
    open_page,
    openapi_paths,
    screenshot,
    wait_loaded,
)
from tokentrail.supervisor import Supervisor

TEAMS = {"payments", "support", "search", "growth"}
# Fast demo for tests: more traffic, an early outage, frequent analytics runs.
DEMO_ENV = {
    "TOKENTRAIL_DEMO_RATE": "10",
    "TOKENTRAIL_DEMO_OUTAGES": "anthropic:8:40",
    "TOKENTRAIL_DEMO_RATE_LIMIT_PROBABILITY": "0.05",
    "TOKENTRAIL_DEMO_JOBS_EVERY_S": "8",
    "TOKENTRAIL_GRPC_PORT": "0",
    "TOKENTRAIL_BATCH_MAX_SECONDS": "0.2",
}
# What each page needs from the collector to show its own data (else it says so).
NEEDS = {
    "routing": "/api/v1/routing/weights",
    "audit": "/api/v1/audit/log",
}


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Up:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = tmp_path / "data"
        self.ports = {"port": free_port(), "proxy": free_port(), "dashboards": free_port()}
        self.log_path = tmp_path / "up.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokentrail.cli",
                "up",
                *args,
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.ports["port"]),
                "--proxy-port",
                str(self.ports["proxy"]),
                "--dashboards-port",
                str(self.ports["dashboards"]),
            ],
            cwd=ROOT,
            env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    @property
    def collector(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    @property
    def dashboards(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboards']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            assert self.process.poll() is None, f"up exited early:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log()[-4000:]}"
            time.sleep(0.3)

    def get(self, path: str, **params: Any) -> Any:
        key = (self.data_dir / "admin.key").read_text().strip()
        response = httpx.get(
            f"{self.collector}{path}",
            params=params,
            timeout=30,
            headers={"Authorization": f"Bearer {key}"},
        )
        response.raise_for_status()
        return response.json()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture()
def demo(tmp_path: Path) -> Iterator[Up]:
    up = Up(tmp_path, "--demo", env=DEMO_ENV)
    try:
        yield up
    finally:
        up.kill()


def test_up_demo_fills_every_page_and_sigint_stops_everything(
    demo: Up,
    browser: Any,
) -> None:
    demo.wait_for_log(r"\[up\] Ctrl-C stops everything")
    demo.wait_for_log(r"\[traffic\] demo traffic: ")
    log = demo.log()
    for name in ("collector", "simulator", "proxy", "dashboards", "traffic"):
        assert f"[{name}] " in log, name
    assert f"dashboards  {demo.dashboards}" in log and f"collector   {demo.collector}" in log
    assert f"admin key   {(demo.data_dir / 'admin.key').resolve()}" in log
    key_file = demo.data_dir / "proxy.key"
    assert key_file.stat().st_mode & 0o777 == 0o600

    deadline = time.monotonic() + 60
    while {r["team"] for r in demo.get("/api/v1/spend", group_by="team")["rows"]} != TEAMS:
        assert time.monotonic() < deadline, demo.get("/api/v1/spend", group_by="team")
        time.sleep(1)

    page = new_page(browser)
    page.goto(demo.dashboards)  # the demo opens signed in: no key in the URL, no form
    page.wait_for_url(f"{demo.dashboards}/spend")
    timings = {"spend": wait_loaded(page, "Spend")}
    assert "key" not in page.url and page.get_by_label("API key").count() == 0
    assert_no_exception(page)
    assert metric(page, "Total spend") != "$0.0000"
    assert "No calls in this period" not in main_text(page)
    screenshot(page, "up", "spend")
    available = openapi_paths(demo.collector)
    for name in ("traces", "reliability", "cache", "routing", "audit"):
        served = name not in NEEDS or NEEDS[name] in available
        timings[name] = page_with_data(page, name, served)
        screenshot(page, "up", name)
    (ARTIFACTS / "up" / "timings.json").write_text(json.dumps(timings, indent=2))

    children = descendants(demo.process.pid)
    assert len(children) >= 5
    started = time.monotonic()
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(20) == 0
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], demo.log()[-3000:]
    assert "[up] stopped" in demo.log()


def page_with_data(page: Any, name: str, served: bool, timeout: float = 60) -> float:
    """Open a page and reload it until it shows data (analytics fill in as jobs run)."""
    open_page(page, name)
    deadline = time.monotonic() + timeout
    while True:
        reported = wait_loaded(page, name.capitalize())
        assert_no_exception(page)
        text = main_text(page)
        if not served:
            assert "not available on this collector yet" in text
            return reported
        empty = (
            "No calls in this period",
            "No traces match",
            "No routes yet",
            "No recommendation",
            "No audit records",
            "yet: the",
        )
        if not any(phrase in text for phrase in empty):
            return reported
        assert time.monotonic() < deadline, f"{name} shows no data:\n{text[:2000]}"
        time.sleep(3)
        page.reload()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_up_reports_a_dead_child_and_stops_the_rest(tmp_path: Path) -> None:
    up = Up(tmp_path, env={"TOKENTRAIL_GRPC_PORT": "0"})
    try:
        up.wait_for_log(r"\[up\] Ctrl-C stops everything")
        children = descendants(up.process.pid)
        proxy = next(pid for pid in children if "tokentrail.cli proxy" in cmdline(pid))
        os.kill(proxy, signal.SIGKILL)
        assert up.process.wait(30) == 1
    finally:
        up.kill()
    log = up.log()
    assert "[up] proxy exited with code -9; stopped everything" in log, log[-3000:]
    assert not [pid for pid in children if alive(pid)]
    assert "[up] stopping collector" in log and "[up] stopping dashboards" in log


def test_a_signal_that_lands_while_up_is_writing_does_not_hang_it() -> None:
    """A double Ctrl-C (or uv forwarding a signal) can interrupt ``up`` in the
    middle of writing a line; the handler then writes too, on the same thread."""
    supervisor = Supervisor(out=io.StringIO())

    def second_signal_inside_say() -> None:
        with supervisor._write_lock:  # the main thread, interrupted inside say()
            supervisor.on_signal(signal.SIGTERM)
            supervisor.on_signal(signal.SIGINT)

    thread = threading.Thread(target=second_signal_inside_say, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the signal handler waited for its own thread's lock"
    assert supervisor.stopping.is_set()
    assert supervisor.out.getvalue().count("stopping everything") == 1  # type: ignore[attr-defined]

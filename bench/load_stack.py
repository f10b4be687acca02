"""The processes bench/load.py runs and watches: simulator, collector, N proxies.

``LoadStack`` extends bench/proxy.py's ``Stack`` (temp dir, process groups,
collector start, key creation, readiness waits): the simulator runs in its own
process without a request log, and every ``tokentrail proxy`` worker gets its
own data dir (its own CA and spool). ``Sampler`` reads /proc every second
(RSS of each process tree, its kernel peak, CPU time) and each proxy's spool
size every ~10 s. ``StoreCheck`` asks the collector, with the admin key,
through the read-only SQL endpoint, how often each id is in ``llm_calls``.
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.proxy import Deadline, Stack, child_env, free_port, proc_cpu_seconds
from demo.simulator import make_test_certificate

SQL_PAGE = 10_000  # the SQL endpoint's default row cap


class LoadStack(Stack):
    """Simulator + collector + ``proxies`` capture proxies, in a temp dir."""

    def __init__(self, proxies: int, keep_dir: bool = False) -> None:
        super().__init__(keep_dir=keep_dir)
        self.proxy_count = proxies
        self.proxy_names = [f"proxy-{i + 1}" for i in range(proxies)]
        self.proxy_data = {name: self.tmp / f"{name}-data" for name in self.proxy_names}
        self.log_paths: dict[str, Path] = {}

    def start(self, deadline: Deadline) -> dict[str, float]:
        took: dict[str, float] = {}
        t = time.perf_counter()
        certfile, keyfile, self.sim_ca = make_test_certificate(self.tmp / "certs")
        sim_port = free_port()
        sim = self.spawn(
            "simulator",
            [sys.executable, "-m", "demo.simulator", "--port", str(sim_port)]
            + ["--certfile", certfile, "--keyfile", keyfile, "--no-record"]
            + ["--log-level", "warning"],
            child_env(),
        )
        self.urls["direct"] = f"https://127.0.0.1:{sim_port}"
        self.pids["simulator"] = sim.pid
        verify = ssl.create_default_context(cafile=self.sim_ca)
        with httpx.Client(verify=verify, trust_env=False, timeout=2) as client:
            self._wait(sim, deadline, lambda: client.get(self.urls["direct"] + "/health"))
        took["simulator"] = time.perf_counter() - t

        t = time.perf_counter()
        self._start_collector(deadline)
        took["collector"] = time.perf_counter() - t
        self.ingest_key = self._create_key("ingest", "bench-load")

        for name in self.proxy_names:
            t = time.perf_counter()
            data_dir, port = self.proxy_data[name], free_port()
            proxy = self.spawn(
                name,
                [sys.executable, "-m", "tokentrail.cli", "proxy", "--data-dir", str(data_dir)]
                + ["--port", str(port), "--collector-url", self.collector_url]
                + ["--upstream-ca", self.sim_ca],
                child_env(TOKENTRAIL_API_KEY=self.ingest_key, HOME=str(self.tmp)),
                stop_signal=signal.SIGINT,  # mitmdump shuts down cleanly and drains its spool
            )
            self._wait_proxy(name, proxy, port, data_dir / "proxy" / "mitmproxy", deadline)
            took[name] = time.perf_counter() - t
        self.log_paths = {s.name: s.log_path for s in self.services}
        return took

    def proxy_ca(self, name: str) -> str:
        return str(self.proxy_data[name] / "proxy" / "mitmproxy" / "mitmproxy-ca-cert.pem")

    def spool_bytes(self, name: str) -> int:
        folder = self.proxy_data[name] / "proxy" / "spool"
        total = 0
        for path in folder.rglob("*") if folder.exists() else ():
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:
                continue  # sent and removed while we looked
        return total

    def check_services(self) -> None:
        for service in self.services:
            service.check_alive()

    def last_stats_line(self, name: str) -> str | None:
        """The proxy's last ``tokentrail stats`` log line (it logs one a minute)."""
        try:
            lines = self.log_paths[name].read_text(errors="replace").splitlines()
        except (OSError, KeyError):
            return None
        found = [line for line in lines if "tokentrail stats" in line]
        return found[-1].split("tokentrail stats", 1)[1].strip() if found else None


# --------------------------------------------------------------- /proc sampling


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except (OSError, ValueError):
                continue
    return found


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class ProcessWatch:
    pid: int
    tree: bool = True  # with its descendants (not for this process: it started them all)
    peak_rss_kb: int = 0  # the largest sampled RSS of the whole tree
    peak_anon_kb: int = 0  # the same for anonymous memory (RSS minus mapped files)
    peak_anon_at: float = 0.0  # time.monotonic() of that peak: during the load or after?
    cpu_start: float | None = None
    cpu_last: float | None = None
    rss_kb: int = 0

    def pids(self) -> list[int]:
        return tree_pids(self.pid) if self.tree else [self.pid]

    def sample(self) -> None:
        pids = self.pids()
        self.rss_kb = sum(status_kb(p, "VmRSS") for p in pids)
        self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb)
        anon = sum(status_kb(p, "RssAnon") for p in pids)
        if anon > self.peak_anon_kb:
            self.peak_anon_kb, self.peak_anon_at = anon, time.monotonic()

    def cpu(self) -> float | None:
        return sum(filter(None, (proc_cpu_seconds(p) for p in self.pids()))) or None

    def peak_mb(self) -> float:
        # The kernel's high-water mark catches a peak between two samples.
        return max(self.peak_rss_kb, status_kb(self.pid, "VmHWM")) / 1024


@dataclass
class Sampler:
    """Samples RSS every second, spool size and CPU every ``every`` seconds, in a thread."""

    stack: LoadStack
    watches: dict[str, ProcessWatch]
    progress: Any  # called with one timeline row every ``every`` seconds
    every: float = 10.0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    peak_spool_bytes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self.started = time.monotonic()
        for watch in self.watches.values():
            watch.cpu_start = watch.cpu_last = watch.cpu()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        last_row = time.monotonic()
        while not self._stop.wait(1.0):
            for watch in self.watches.values():
                watch.sample()
            now = time.monotonic()
            if now - last_row >= self.every:
                self.timeline.append(self._row(now - last_row))
                self.progress(self.timeline[-1])
                last_row = now

    def _row(self, span_s: float) -> dict[str, Any]:
        cpu_percent: dict[str, float | None] = {}
        for name, watch in self.watches.items():
            cpu = watch.cpu()
            if cpu is None or watch.cpu_last is None:
                cpu_percent[name] = None
            else:
                cpu_percent[name] = round(100 * (cpu - watch.cpu_last) / span_s, 1)
            watch.cpu_last = cpu
        spool = {name: self.stack.spool_bytes(name) for name in self.stack.proxy_names}
        for name, size in spool.items():
            self.peak_spool_bytes[name] = max(self.peak_spool_bytes.get(name, 0), size)
        return {
            "t_s": round(time.monotonic() - self.started, 1),
            "rss_mb": {n: round(w.rss_kb / 1024, 1) for n, w in self.watches.items()},
            "cpu_percent": cpu_percent,
            "spool_bytes": spool,
            "load_avg_1m": os.getloadavg()[0],
        }

    def cpu_percent_overall(self, seconds: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, watch in self.watches.items():
            cpu = watch.cpu()
            ok = cpu is not None and watch.cpu_start is not None and seconds > 0
            out[name] = round(100 * (cpu - watch.cpu_start) / seconds, 1) if ok else None
        return out


# --------------------------------------------------------------- the store


class StoreCheck:
    """How many ``llm_calls`` rows each id has, through POST /api/v1/sql (admin key)."""

    def __init__(self, collector_url: str, admin_key: str) -> None:
        self.client = httpx.Client(
            base_url=collector_url,
            headers={"Authorization": f"Bearer {admin_key}"},
            trust_env=False,
            timeout=60,
        )

    def close(self) -> None:
        self.client.close()

    def sql(self, sql: str, **params: str | int) -> list[dict[str, Any]]:
        response = self.client.post("/api/v1/sql", json={"sql": sql, "params": params})
        if response.status_code != 200:
            raise RuntimeError(f"SQL endpoint: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()["rows"]

    def stored(self, team: str) -> dict[str, int]:
        rows = self.sql(
            "SELECT countIf(source = 'proxy') AS calls, countIf(source = 'otlp') AS spans "
            "FROM llm_calls WHERE team = {team:String}",
            team=team,
        )
        return {"calls": int(rows[0]["calls"]), "spans": int(rows[0]["spans"])}

    def counts(self, team: str, source: str, column: str) -> dict[str, int]:
        """Every ``column`` value (provider_request_id or span_id) of the team's rows from
        ``source`` with its row count, paged by key so no page hits the row cap."""
        if column not in ("provider_request_id", "span_id"):
            raise ValueError(f"not an id column: {column}")
        found: dict[str, int] = {}
        after = ""
        while True:
            rows = self.sql(
                f"SELECT {column} AS id, count() AS n FROM llm_calls "
                "WHERE team = {team:String} AND source = {source:String} AND "
                f"{column} > {{after:String}} GROUP BY id ORDER BY id LIMIT {SQL_PAGE}",
                team=team,
                source=source,
                after=after,
            )
            found.update((str(row["id"]), int(row["n"])) for row in rows)
            if len(rows) < SQL_PAGE:
                return found
            after = max(str(row["id"]) for row in rows)


def zero_loss(ok_ids: list[str], stored: dict[str, int]) -> dict[str, Any]:
    """Every id the client saw succeed is stored exactly once."""
    seen: dict[str, int] = {}
    for rid in ok_ids:
        seen[rid] = seen.get(rid, 0) + 1
    missing = [rid for rid in seen if rid not in stored]
    duplicated = [rid for rid in seen if stored.get(rid, 0) > 1]
    return {
        "expected": len(ok_ids),
        "client_duplicates": sum(n - 1 for n in seen.values()),
        "stored_once": sum(1 for rid in seen if stored.get(rid) == 1),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "missing_examples": missing[:5],
        "duplicated_examples": duplicated[:5],
        "ok": not missing and not duplicated and len(seen) == len(ok_ids),
    }

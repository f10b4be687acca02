"""The fault tests' stack and bookkeeping.

A ``Stack`` is one real collector (``tokentrail serve``, with a faults file),
one real capture proxy (``tokentrail proxy``, mitmdump with TLS interception)
in front of the simulated provider over HTTPS, and the load generator
(demo/loadgen.py) sending model calls through the proxy and OTLP spans to the
collector. After a scenario ``settle`` waits until the store stops changing and
``Tally`` compares what the clients saw succeed with the ``llm_calls`` rows:
model calls by ``provider_request_id``, OTLP spans by ``span_id``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from demo.loadgen import LoadGenerator, LoadReport
from tests.conftest import CollectorProcess
from tests.proxy_support import ProxyProcess

# A modest load: the faults, not the throughput, are under test.
CALLS_PER_SECOND = 25.0
SPANS_PER_SECOND = 200.0


@dataclass
class Stack:
    collector: CollectorProcess
    proxy: ProxyProcess
    sim: Any  # demo.simulator.RunningSimulator
    ca_bundle: Path  # the proxy's CA (clients) + the simulator's CA
    ingest_key: str
    faults_file: Path

    def load(
        self, team: str, spans_per_second: float = SPANS_PER_SECOND, **options: Any
    ) -> LoadGenerator:
        """A load generator for this stack (not started); ``options`` go to LoadGenerator."""
        return LoadGenerator(
            proxy_url=self.proxy.url,
            ca_file=str(self.ca_bundle),
            provider_base_url=self.sim.url,
            collector_url=self.collector.url,
            ingest_key=self.ingest_key,
            calls_per_second=CALLS_PER_SECOND,
            spans_per_second=spans_per_second,
            max_retries=5,
            team=team,
            **options,
        )

    def upstream_attempts(self) -> int:
        """Requests the simulated provider received since the stack started
        (every one came through the proxy)."""
        return len(self.sim.requests)

    def where_calls(self, response_ids: list[str], fault_at: float) -> list[str]:
        """For a failure message: when (seconds after the fault, wall clock) and how
        the simulator answered each of these response ids."""
        found = []
        records = self.sim.requests
        for response_id in response_ids:
            needle = response_id.encode()
            record = next((r for r in records if needle in bytes(r.response_body)), None)
            if record is None:
                found.append(f"{response_id}: not in the simulator's log")
                continue
            retry = record.headers.get("x-stainless-retry-count", "?")
            found.append(
                f"{response_id}: {record.path} stream={record.stream} retry={retry} "
                f"received {record.received_at - fault_at:+.3f}s after the fault"
            )
        return found

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Atomically replace the faults file; the collector sees it on its next store call."""
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.faults_file)

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.collector.url}/healthz", timeout=30)
        response.raise_for_status()  # a 500 says so, rather than failing to parse
        return response.json()

    def metric(self, name: str) -> float:
        text = self.collector.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(f"{name} not in /metrics")


# The fixture's factory: make_stack(spool_max_mb=512, **TOKENTRAIL_settings) -> Stack.
MakeStack = Callable[..., Stack]


def stored_calls(collector: CollectorProcess, team: str) -> pa.Table:
    """Every llm_calls row of the team (source, span_id, provider_request_id)."""
    response = httpx.post(
        f"{collector.url}/api/v1/sql",
        headers={**collector.headers(), "Accept": "application/vnd.apache.arrow.stream"},
        json={
            "sql": "SELECT source, span_id, provider_request_id FROM llm_calls "
            "WHERE team = {team:String}",
            "params": {"team": team},
        },
        timeout=60,
    )
    response.raise_for_status()
    assert response.headers["X-Tokentrail-Truncated"] == "false", "raise TOKENTRAIL_SQL_MAX_ROWS"
    return pa.ipc.open_stream(response.content).read_all()


def settle(stack: Stack, team: str, quiet_s: float = 4.0, timeout_s: float = 120.0) -> pa.Table:
    """The team's rows once nothing is waiting anywhere and the count held still
    for ``quiet_s``: the collector's writer queue is empty and the proxy has
    nothing journaled or spooled (exports are sent in batches, so all matter)."""
    deadline = time.monotonic() + timeout_s
    last_count, quiet_since = -1, time.monotonic()
    while True:
        rows = stored_calls(stack.collector, team)
        queued = stack.health()["writer"]["queued_rows"]
        now = time.monotonic()
        if rows.num_rows != last_count or queued or not proxy_idle(stack.proxy):
            last_count, quiet_since = rows.num_rows, now
        elif now - quiet_since >= quiet_s:
            return rows
        if now > deadline:
            return rows  # the tally then says what is missing
        time.sleep(0.5)


# Stats of the proxy that count calls or bytes still on their way to the collector.
BACKLOG_STATS = ("journal_pending", "journal_bytes_behind", "spool_bytes")


def proxy_backlog(stats: dict[str, int]) -> bool:
    """Whether a stats line shows calls journaled but not yet exported (spooled or
    dropped) or exports spooled but not yet sent."""
    assert "spool_bytes" in stats, f"no spool_bytes in the proxy's stats: {stats}"
    exported = sum(stats.get(k, 0) for k in ("captured", "dropped_calls", "failed_to_parse"))
    # After a restart the exporter also counts calls the last proxy journaled.
    return stats.get("journaled", 0) > exported or any(stats.get(k, 0) for k in BACKLOG_STATS)


def proxy_idle(proxy: ProxyProcess) -> bool:
    """The proxy's last stats line (one a second) shows no backlog."""
    lines = proxy.stats_lines()
    return bool(lines) and not proxy_backlog(lines[-1])


def wait_proxy_quiet(proxy: ProxyProcess, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """Until the proxy's counters held still for ``quiet_s`` with no call journaled
    but not yet exported (its spool may stay full: the collector may be down)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] = {}
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        lines = proxy.stats_lines()
        stats = lines[-1] if lines else {"spool_bytes": 0}
        current = {k: v for k, v in stats.items() if k != "spool_bytes"}
        # The spool stays full while the collector is down; everything else must settle.
        if current != last or proxy_backlog({**stats, "spool_bytes": 0}):
            last, quiet_since = current, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.5)


@dataclass
class Tally:
    """What the clients saw succeed against what the store holds."""

    scenario: str
    report: LoadReport
    rows: pa.Table
    upstream_attempts: int  # requests the simulated provider answered in the scenario
    dropped_calls: int = 0  # calls the proxy's spool bound dropped, from its stats line
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sources = self.rows.column("source").to_pylist()
        response_ids = self.rows.column("provider_request_id").to_pylist()
        span_ids = self.rows.column("span_id").to_pylist()
        by_source = list(zip(sources, response_ids, span_ids, strict=True))
        self.call_counts = Counter(r for source, r, _ in by_source if source == "proxy")
        self.span_counts = Counter(i for source, _, i in by_source if source == "otlp")
        # A row stored twice has its span_id twice, whatever the client saw.
        self.duplicated_rows = sum(n - 1 for n in Counter(span_ids).values() if n > 1)
        ok_calls, ok_spans = self.report.ok_response_ids, self.report.ok_span_ids
        self.calls_missing = [i for i in ok_calls if self.call_counts[i] == 0]
        self.calls_duplicated = {i: n for i in ok_calls if (n := self.call_counts[i]) > 1}
        self.spans_missing = [i for i in ok_spans if self.span_counts[i] == 0]
        self.spans_duplicated = {i: n for i in ok_spans if (n := self.span_counts[i]) > 1}
        self.calls_once = len(ok_calls) - len(self.calls_missing) - len(self.calls_duplicated)
        # Attempts the provider answered but the client did not take as its success
        # (the SDK retried them: a connection cut, a proxy killed mid-call), and the
        # rows stored for such attempts (an attempt is a row too, when captured).
        self.unseen_attempts = self.upstream_attempts - len(ok_calls)
        ok_set = set(ok_calls)
        self.unseen_rows = sum(n for i, n in self.call_counts.items() if i not in ok_set)
        self.spans_once = len(ok_spans) - len(self.spans_missing) - len(self.spans_duplicated)

    def summary(self) -> str:
        r = self.report
        notes = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"[fault {self.scenario}] load {r.duration_s:.0f}s sent={r.sent} "
            f"ok_calls={len(r.ok_response_ids)} failed_calls={len(r.failed_calls)} "
            f"ok_spans={len(r.ok_span_ids)} failed_spans={r.failed_spans} | "
            f"llm_calls rows={self.rows.num_rows} proxy={sum(self.call_counts.values())} "
            f"otlp={sum(self.span_counts.values())} | upstream attempts="
            f"{self.upstream_attempts} unseen by clients={self.unseen_attempts} "
            f"stored unseen={self.unseen_rows} | "
            f"calls once={self.calls_once} missing={len(self.calls_missing)} "
            f"duplicated={len(self.calls_duplicated)} dropped_by_spool={self.dropped_calls} | "
            f"spans once={self.spans_once} missing={len(self.spans_missing)} "
            f"duplicated={len(self.spans_duplicated)} | duplicate rows={self.duplicated_rows}"
            + (f" | {notes}" if notes else "")
        )

    def details(self) -> str:
        """The summary plus examples, for the assertion message."""
        return (
            f"{self.summary()}\n"
            f"failed calls (first 5): {self.report.failed_calls[:5]}\n"
            f"missing calls (first 5): {self.calls_missing[:5]}\n"
            f"duplicated calls (first 5): {list(self.calls_duplicated.items())[:5]}\n"
            f"missing spans (first 5): {self.spans_missing[:5]}\n"
            f"duplicated spans (first 5): {list(self.spans_duplicated.items())[:5]}"
        )

    def show(self) -> None:
        print(self.summary(), flush=True)

"""bench/ingest.py's end-to-end stage: OTLP clients against a real collector.

``send_all`` feeds every body through ``concurrency`` keep-alive OTLP/HTTP
connections or OTLP/gRPC channels, waiting out the collector's "store is
behind" refusals; ``bench_collector`` wraps that in a collector's lifetime and
reads how fast the spans were accepted and stored, at what CPU and memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.harness import Deadline, PySpy, log
from bench.ingest_collector import (
    Collector,
    children_cpu_seconds,
    cpu_by_thread_name,
    thread_cpu,
)
from bench.ingest_stages import rate
from bench.procfs import proc_cpu_seconds, proc_status_kb

TARGET_SPANS_PER_S = 20_000
# Each chat span is stored as one ``spans`` row and one ``llm_calls`` row.
ROWS_PER_SPAN = 2
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class RefusedBusy(Exception):
    """The collector said the store is behind (HTTP 429/503, gRPC RESOURCE_EXHAUSTED)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy, retry after {retry_after} s")
        self.retry_after = retry_after


@contextlib.contextmanager
def http_sender(collector: Collector) -> Iterator[Callable[[bytes], None]]:
    """``send(body)`` over one keep-alive OTLP/HTTP connection."""
    headers = {
        "Authorization": f"Bearer {collector.key}",
        "Content-Type": "application/x-protobuf",
    }
    with httpx.Client(
        base_url=collector.url, headers=headers, timeout=httpx.Timeout(120.0)
    ) as client:

        def send(body: bytes) -> None:
            try:
                response = client.post("/v1/traces", content=body)
            except httpx.HTTPError as exc:
                raise RuntimeError(f"failed: {exc!r}") from exc
            if response.status_code in (429, 503):
                raise RefusedBusy(float(response.headers.get("retry-after", "1")))
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")

        yield send


@contextlib.contextmanager
def grpc_sender(collector: Collector) -> Iterator[Callable[[bytes], None]]:
    """``send(body)`` over one OTLP/gRPC channel (raw bytes, as an exporter sends them)."""
    channel = grpc.insecure_channel(
        collector.grpc_address, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)]
    )
    export = channel.unary_unary(GRPC_EXPORT)
    metadata = [("authorization", f"Bearer {collector.key}")]

    def send(body: bytes) -> None:
        try:
            export(body, metadata=metadata, timeout=120)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise RefusedBusy(1.0) from exc
            raise RuntimeError(f"gRPC {exc.code().name}: {exc.details()}") from exc

    try:
        yield send
    finally:
        channel.close()


def send_all(
    collector: Collector,
    bodies: list[bytes],
    concurrency: int,
    deadline: Deadline,
    transport: str = "http",
) -> dict[str, Any]:
    """Send every body with ``concurrency`` clients; a refusal because the store
    is behind (429/503 Retry-After, RESOURCE_EXHAUSTED) is waited out and resent."""
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    state: dict[str, Any] = {"retries": 0, "error": None, "last_ok": None}
    latencies: list[float] = []
    sender = grpc_sender if transport == "grpc" else http_sender

    def worker() -> None:
        with sender(collector) as send:
            while state["error"] is None:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                while True:
                    if deadline.left() <= 0:
                        state["error"] = "timed out while sending"
                        return
                    t = time.perf_counter()
                    try:
                        send(bodies[i])
                    except RefusedBusy as busy:  # the store is behind: back off, resend
                        with lock:
                            state["retries"] += 1
                        time.sleep(min(busy.retry_after, 1.0))
                        continue
                    except RuntimeError as exc:
                        state["error"] = f"request {i} {exc}"
                        return
                    done = time.perf_counter()
                    with lock:
                        latencies.append(done - t)
                        state["last_ok"] = done
                    break

    threads = [
        threading.Thread(target=worker, name=f"bench-client-{n}", daemon=True)
        for n in range(concurrency)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short joins keep Ctrl-C responsive
                if deadline.left() <= 0:
                    state["error"] = state["error"] or "timed out while sending"
    except BaseException:
        # Ctrl-C / SIGTERM: stop the clients before the collector is stopped,
        # so its graceful shutdown is not kept busy by new requests.
        state["error"] = state["error"] or "interrupted"
        raise
    if state["error"]:
        raise RuntimeError(state["error"])
    latencies.sort()
    return {
        "started": started,
        "last_ok": state["last_ok"],
        "retries_busy": state["retries"],
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "latency_max_ms": 1000 * latencies[-1] if latencies else None,
    }


def bench_collector(
    bodies: list[bytes],
    spans: int,
    concurrency: int,
    deadline: Deadline,
    py_spy: Path | None,
    py_spy_gil: bool,
    keep_dir: bool,
    transport: str = "http",
) -> dict[str, Any]:
    """End to end through a real collector, over OTLP/HTTP or OTLP/gRPC."""
    collector = Collector(keep_dir=keep_dir, grpc=transport == "grpc")
    spy: PySpy | None = None
    try:
        t = time.perf_counter()
        collector.start(deadline)
        startup_s = time.perf_counter() - t
        log(f"  collector pid {collector.pid} on {collector.url} (up in {startup_s:.1f} s)")
        with httpx.Client(timeout=30) as client:
            before = collector.health(client)["writer"]
            rss_idle_kb = proc_status_kb(collector.pid, "VmRSS")
            if py_spy is not None:
                spy = PySpy(py_spy, collector.pid, gil=py_spy_gil)
            cpu0 = proc_cpu_seconds(collector.pid)
            workers0 = children_cpu_seconds(collector.pid)
            threads0 = thread_cpu(collector.pid)
            client0 = proc_cpu_seconds("self")
            sent = send_all(collector, bodies, concurrency, deadline, transport)
            started, last_ok = sent["started"], sent["last_ok"]
            accepted_s = last_ok - started
            log(f"  {len(bodies)} requests accepted in {accepted_s:.2f} s; waiting for the store")
            expected = before["stored_rows"] + ROWS_PER_SPAN * spans
            stored_at = None
            writer: dict[str, Any] = {}
            while True:
                writer = collector.health(client)["writer"]
                if writer["stored_rows"] >= expected and writer["queued_rows"] == 0:
                    stored_at = time.perf_counter()
                    break
                if writer["stored_rows"] >= writer["accepted_rows"] and not writer["queued_rows"]:
                    break  # everything accepted is stored, yet short of expected
                if deadline.left() <= 0:
                    log(f"  timed out waiting for the store: {writer}")
                    break
                time.sleep(0.05)
            cpu1 = proc_cpu_seconds(collector.pid)
            workers1 = children_cpu_seconds(collector.pid)
            workers_peak_kb = [proc_status_kb(c, "VmHWM") or 0 for c in workers1]
            threads1 = thread_cpu(collector.pid)
            client1 = proc_cpu_seconds("self")
            if spy is not None:
                spy.stop()
                spy = None
            peak_kb = proc_status_kb(collector.pid, "VmHWM")
            calls = verify_calls(collector, client)
    finally:
        if spy is not None:
            spy.stop()
        collector.stop()

    stored_rows = writer.get("stored_rows", 0) - before["stored_rows"]
    elapsed_stored = (stored_at - started) if stored_at else None
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    return {
        "collector_startup_s": startup_s,
        "accepted_s": accepted_s,
        "stored_s": elapsed_stored,
        "accepted_spans_per_s": rate(spans, accepted_s),
        "stored_spans_per_s": rate(spans, elapsed_stored) if elapsed_stored else None,
        "expected_rows": ROWS_PER_SPAN * spans,
        "accepted_rows": writer.get("accepted_rows", 0) - before["accepted_rows"],
        "stored_rows": stored_rows,
        "stored_spans": stored_rows // ROWS_PER_SPAN,
        "all_stored": stored_at is not None and stored_rows >= ROWS_PER_SPAN * spans,
        "llm_calls_in_store": calls,
        "unpriced_calls": writer.get("unpriced_calls"),
        "store_failures": writer.get("store_failures"),
        "transport": transport,
        "retries_busy": sent["retries_busy"],
        "request_latency_p50_ms": sent["latency_p50_ms"],
        "request_latency_max_ms": sent["latency_max_ms"],
        "collector_cpu_s": cpu,
        "collector_cpu_cores": cpu / elapsed_stored if cpu and elapsed_stored else None,
        "collector_cpu_by_thread_s": cpu_by_thread_name(threads0, threads1),
        "client_cpu_s": (client1 - client0) if client0 is not None and client1 else None,
        "collector_rss_idle_mb": rss_idle_kb / 1024 if rss_idle_kb else None,
        "collector_peak_rss_mb": peak_kb / 1024 if peak_kb else None,
        "store_mb_per_million_calls": collector.store_bytes / 2**20 / (calls or spans) * 1e6,
        # The decode workers (collector/decode_pool.py), each its own process.
        "decode_workers": len(workers1),
        "decode_workers_cpu_s": sum(cpu - workers0.get(c, 0.0) for c, cpu in workers1.items()),
        "decode_workers_peak_rss_mb": [kb / 1024 for kb in workers_peak_kb],
    }


def verify_calls(collector: Collector, client: httpx.Client) -> int | None:
    """Independent count of stored llm_calls rows via the spend API (None if unavailable)."""
    try:
        response = client.get(
            collector.url + "/api/v1/spend",
            params={"from": int(time.time()) - 3 * 86_400, "to": int(time.time()) + 3_600},
            headers={"Authorization": f"Bearer {collector.key}"},
        )
        response.raise_for_status()
        return int(sum(row["calls"] for row in response.json()["rows"]))
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None

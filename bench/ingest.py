"""Ingest throughput, side by side: raw protobuf parse → decode → pipeline → HTTP.

Run:  uv run python bench/ingest.py [--spans N] [--batch B] [--concurrency C] [--json]
                                   [--dialect genai|openinference|openllmetry|mix] [--grpc]

One run measures, over the same pre-built OTLP request bodies (chat spans with
exactly 20 attributes each, named as ``--dialect`` names them: the GenAI
semantic conventions, OpenInference, OpenLLMetry, or all three in turn; see
bench/spans.py):

1. raw parse   ``ExportTraceServiceRequest.FromString`` plus touching every
               span's ids and every attribute's key and value (the least a
               receiver must do);
2. decode      ``ingest.otlp.decode_protobuf`` (the collector's receive stage);
3. pipeline    ``ingest.pipeline.process_spans`` on decoded spans
               (normalize → price → redact → Arrow), with a per-stage split;
4. HTTP        a real ``tokentrail serve`` subprocess on a free loopback port
               and a temp data dir, fed by C keep-alive clients through
               ``POST /v1/traces``: accepted spans/s (until the last 200) and
               stored spans/s (until ``/healthz`` shows every row stored);
   or gRPC     with ``--grpc``, the same through OTLP/gRPC ``TraceService/Export``
               (C channels, raw protobuf bodies).

The machine is shared and noisy, so the script prints rates and ratios and
never asserts on timings; it exits non-zero only when data went missing or the
run could not complete. Everything is bounded by ``--timeout`` and the
collector subprocess and temp dir are removed on any exit (Ctrl-C included).

Options for digging further: ``--profile`` prints a cProfile of decode +
pipeline in this process; ``--py-spy FILE`` attaches py-spy (if installed in
the venv) to the collector during the HTTP phase (``.txt`` = collapsed
stacks, ``.svg`` = flamegraph, ``.json`` = speedscope).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path, where this file would
# shadow the project's ``ingest`` package: import from the project root instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (  # noqa: E402
    AnyValue,
    ArrayValue,
    KeyValue,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402

from bench.procfs import child_pids, free_port, proc_cpu_seconds, proc_status_kb  # noqa: E402
from bench.spans import ATTRIBUTES_PER_SPAN, CHOICES, span_fields  # noqa: E402

TARGET_SPANS_PER_S = 20_000
# Each chat span is stored as one ``spans`` row and one ``llm_calls`` row.
ROWS_PER_SPAN = 2
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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


# --------------------------------------------------------------- bodies


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(
            key=key,
            value=AnyValue(
                array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value])
            ),
        )
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_bodies(
    spans: int, batch: int, content: bool, dialect: str = "genai", seed: int = 7
) -> list[bytes]:
    """Serialized ExportTraceServiceRequest bodies, ``batch`` spans each (the last
    may be short); one scope per instrumentation, as an app with several has."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    bodies: list[bytes] = []
    # Categorical attributes repeat: build their KeyValues once and let the
    # C++/upb side copy them (extend), which keeps 200k spans quick to build.
    kv_cache: dict[tuple[str, str], KeyValue] = {}
    trace_id = b""
    root_id = b""
    done = 0
    while done < spans:
        n = min(batch, spans - done)
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [
                _kv("service.name", f"checkout-api-{len(bodies) % 3}"),
                _kv("service.version", "2.14.1"),
                _kv("deployment.environment.name", "production"),
                _kv("telemetry.sdk.name", "opentelemetry"),
                _kv("telemetry.sdk.language", "python"),
                _kv("telemetry.sdk.version", "1.38.0"),
            ]
        )
        scopes: dict[str, Any] = {}
        for j in range(n):
            i = done + j
            if i % 4 == 0:  # an agent turn: ~4 model calls under one root span
                trace_id = rng.randbytes(16)
                root_id = rng.randbytes(8)
            fields = span_fields(dialect, rng, i, content)
            ss = scopes.get(fields["scope"])
            if ss is None:
                ss = scopes[fields["scope"]] = rs.scope_spans.add()
                ss.scope.name = fields["scope"]
            start = now_ns - rng.randrange(3_600 * 10**9)
            kvs = []
            for key, value in fields["attributes"]:
                if isinstance(value, str) and len(value) < 40:
                    kv = kv_cache.get((key, value))
                    if kv is None:
                        kv = kv_cache[(key, value)] = _kv(key, value)
                    kvs.append(kv)
                else:
                    kvs.append(_kv(key, value))
            failed = fields["failed"]
            sp = Span(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent_span_id=root_id,
                name=fields["name"],
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(150, 9_000) * 10**6,
                status=Status(
                    code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_UNSET
                ),
            )
            sp.attributes.extend(kvs)
            ss.spans.append(sp)
        bodies.append(req.SerializeToString())
        done += n
    return bodies


# --------------------------------------------------------------- in-process stages


def rate(spans: int, seconds: float) -> float:
    return spans / seconds if seconds > 0 else float("inf")


def bench_raw_parse(bodies: list[bytes]) -> tuple[int, float]:
    """FromString + touch every span id and every attribute key/value."""
    from_string = ExportTraceServiceRequest.FromString
    count = 0
    started = time.perf_counter()
    for body in bodies:
        req = from_string(body)
        for rs in req.resource_spans:
            for kv in rs.resource.attributes:
                kv.key, kv.value.WhichOneof("value")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id, sp.span_id, sp.parent_span_id  # noqa: B018
                    for kv in sp.attributes:
                        v = kv.value
                        w = v.WhichOneof("value")
                        kv.key, getattr(v, w)  # noqa: B018
                    count += 1
    return count, time.perf_counter() - started


def bench_decode(bodies: list[bytes]) -> tuple[int, float]:
    from ingest.otlp import decode_protobuf

    count = 0
    started = time.perf_counter()
    for body in bodies:
        count += len(decode_protobuf(body)["spans"])
    return count, time.perf_counter() - started


# Names process_spans looks up in its module at call time; wrapping them there
# gives a per-stage split without duplicating the pipeline's logic.
STAGES = (
    ("normalize", "normalize_spans"),
    ("price", "price_rows"),
    ("redact", "redact_rows"),
    ("arrow spans (+redact attrs)", "spans_table"),
    ("arrow llm/tool rows", "rows_table"),
)


@contextlib.contextmanager
def stage_timers(module: Any) -> Iterator[dict[str, float]]:
    totals: dict[str, float] = {}
    saved: dict[str, Any] = {}

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t

        return wrapper

    for label, name in STAGES:
        fn = getattr(module, name, None)
        if callable(fn):
            saved[name] = fn
            setattr(module, name, timed(label, fn))
    try:
        yield totals
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def pipeline_config() -> Any:
    """As collector/runtime.py builds it, with default prices and redaction."""
    from ingest.pipeline import PipelineConfig
    from ingest.pricing import PriceBook
    from ingest.redact import RedactionRules

    return PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())


def bench_pipeline(bodies: list[bytes]) -> tuple[int, float, dict[str, float], int]:
    """process_spans per body on already-decoded spans (decode untimed)."""
    import ingest.pipeline as pipeline
    from ingest.otlp import decode_protobuf

    config = pipeline_config()
    # Warm the per-PriceBook lookup cache and imports outside the timing.
    pipeline.process_spans(decode_protobuf(bodies[0])["spans"][:50], config)
    count = rows = 0
    elapsed = 0.0
    with stage_timers(pipeline) as stages:
        for body in bodies:
            spans = decode_protobuf(body)["spans"]
            started = time.perf_counter()
            batch = pipeline.process_spans(spans, config)
            elapsed += time.perf_counter() - started
            count += len(spans)
            rows += batch.rows
    return count, elapsed, dict(stages), rows


def profile_in_process(bodies: list[bytes], top: int = 30) -> str:
    """cProfile of decode + process_spans, top functions by own time."""
    from ingest.otlp import decode_protobuf
    from ingest.pipeline import process_spans

    config = pipeline_config()
    profiler = cProfile.Profile()
    profiler.enable()
    for body in bodies:
        process_spans(decode_protobuf(body)["spans"], config)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------- collector


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
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # graceful: uvicorn runs the lifespan close
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        # Disk use of the embedded store once the collector has shut down
        # (its parts merged as far as ClickHouse got): spans, llm_calls, tool_calls.
        chdb = self.data_dir / "chdb"
        self.store_bytes = sum(f.stat().st_size for f in chdb.rglob("*") if f.is_file())
        if not self.keep_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)


class PySpy:
    """Optional: py-spy attached to the collector for the HTTP phase."""

    def __init__(self, out: Path, pid: int, gil: bool = False, rate_hz: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise RuntimeError("py-spy is not installed (uv pip install py-spy)")
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate_hz),
                "--threads",
                "--format",
                fmt,
                "--output",
                str(out),
                "--nonblocking",
            ]
            + (["--gil"] if gil else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(1.0)  # let it attach before the traffic starts
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy failed: {self.proc.stderr.read().decode()[-500:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


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


# --------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        from google.protobuf.internal import api_implementation

        backend = api_implementation.Type()
    except Exception:  # noqa: BLE001 - informational only
        backend = "unknown"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "nproc": affinity,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "protobuf_backend": backend,
        "load_avg_1m": os.getloadavg()[0],
    }


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(result: dict[str, Any]) -> None:
    r = result["rates"]
    raw = r["raw_parse"]
    cfg = result["config"]
    transport = cfg["transport"]
    name = {"http": "HTTP", "grpc": "gRPC"}[transport]
    rows = [
        ("raw parse (FromString + touch attrs)", r["raw_parse"]),
        ("decode_protobuf", r["decode"]),
        ("process_spans (decoded input)", r["pipeline"]),
        ("decode + process_spans (derived)", r["decode_plus_pipeline"]),
        (f"{name} accepted (until last OK)", r.get(f"{transport}_accepted")),
        (f"{name} stored (until stored)", r.get(f"{transport}_stored")),
    ]
    print()
    print(
        f"Tokentrail ingest: {cfg['spans']:,} {cfg['dialect']} spans, "
        f"{cfg['batch']} spans/request, {cfg['concurrency']} {name} clients, "
        f"{ATTRIBUTES_PER_SPAN} attributes/span" + (", with content" if cfg["content"] else "")
    )
    print(f"{'stage':<40}{'spans/s':>12}{'x raw parse':>13}")
    print("-" * 65)
    for label, value in rows:
        ratio = "-" if value is None or not raw else f"{value / raw:.3f}"
        print(f"{label:<40}{fmt_rate(value):>12}{ratio:>13}")
    print("-" * 65)
    stages = result.get("pipeline_stages_s") or {}
    total = sum(stages.values())
    if stages:
        print("process_spans split (share of its time):")
        for label, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<36}{100 * seconds / total:>6.1f} %  ({seconds:.2f} s)")
    http = result.get(transport)
    if http:
        print(
            f"{name}: accepted in {http['accepted_s']:.2f} s, stored in "
            + (f"{http['stored_s']:.2f} s" if http["stored_s"] else "- (not all stored)")
            + f"; rows stored {http['stored_rows']:,}/{http['expected_rows']:,}"
            + f"; llm_calls via API {http['llm_calls_in_store']}"
            + f"; busy retries {http['retries_busy']}"
        )
        print(
            f"      embedded store on disk: {http['store_mb_per_million_calls']:,.0f} MB"
            " per million calls (spans + llm_calls + tool_calls rows)"
        )
        print(
            f"      request latency p50 {http['request_latency_p50_ms']:.0f} ms, "
            f"max {http['request_latency_max_ms']:.0f} ms; collector CPU "
            + (
                f"{http['collector_cpu_s']:.1f} s ({http['collector_cpu_cores']:.2f} cores)"
                if http["collector_cpu_cores"]
                else "-"
            )
            + f"; peak RSS {http['collector_peak_rss_mb'] or 0:,.0f} MB"
            + f" (idle {http['collector_rss_idle_mb'] or 0:,.0f} MB)"
            + f"; {http['decode_workers']} child processes (decode workers + tracker): CPU"
            + f" {http['decode_workers_cpu_s']:.1f} s, peak RSS"
            + f" {', '.join(f'{mb:,.0f}' for mb in http['decode_workers_peak_rss_mb']) or '-'} MB"
        )
        threads = http.get("collector_cpu_by_thread_s") or {}
        if threads:
            print(
                "      collector CPU by thread name: "
                + ", ".join(f"{name} {sec:.1f} s" for name, sec in list(threads.items())[:6])
                + (
                    f"; this client process {http['client_cpu_s']:.1f} s"
                    if http["client_cpu_s"]
                    else ""
                )
            )
    ratio = result["ratios"].get(f"{transport}_stored_over_raw_parse")
    print(f"{name} stored / raw parse: " + ("-" if ratio is None else f"{ratio:.3f}"))
    met = result["target_met"]
    print(
        f"target {TARGET_SPANS_PER_S:,} spans/s stored end to end: "
        + ("n/a" if met is None else ("met" if met else "NOT met"))
    )
    m = result["machine"]
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, "
        f"protobuf {m['protobuf_backend']}, load avg {m['load_avg_1m']:.2f} at start, "
        f"{result['load_avg_1m_end']:.2f} at end"
    )
    print(f"(bodies: {result['body_mb']:.0f} MB, built in {result['build_s']:.1f} s)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(args.timeout)
    transport = "grpc" if args.grpc else "http"
    log(f"building {args.spans:,} {args.dialect} spans in requests of {args.batch} ...")
    t = time.perf_counter()
    bodies = build_bodies(args.spans, args.batch, args.content, args.dialect)
    build_s = time.perf_counter() - t
    body_mb = sum(map(len, bodies)) / 1e6
    deadline.check("building bodies")

    log("raw parse ...")
    n, raw_s = bench_raw_parse(bodies)
    assert n == args.spans, (n, args.spans)
    deadline.check("raw parse")
    log("decode_protobuf ...")
    n, decode_s = bench_decode(bodies)
    assert n == args.spans, f"decode_protobuf kept {n} of {args.spans} spans"
    deadline.check("decode")
    log("process_spans ...")
    n, pipeline_s, stages, rows = bench_pipeline(bodies)
    deadline.check("pipeline")

    result: dict[str, Any] = {
        "config": {
            "spans": args.spans,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "requests": len(bodies),
            "attributes_per_span": ATTRIBUTES_PER_SPAN,
            "content": args.content,
            "dialect": args.dialect,
            "transport": transport,
            "env": {k: v for k, v in os.environ.items() if k.startswith("TOKENTRAIL_")},
        },
        "machine": machine(),
        "build_s": build_s,
        "body_mb": body_mb,
        "seconds": {"raw_parse": raw_s, "decode": decode_s, "pipeline": pipeline_s},
        "pipeline_rows": rows,
        "pipeline_stages_s": stages,
    }
    rates: dict[str, float | None] = {
        "raw_parse": rate(args.spans, raw_s),
        "decode": rate(args.spans, decode_s),
        "pipeline": rate(args.spans, pipeline_s),
        "decode_plus_pipeline": rate(args.spans, decode_s + pipeline_s),
        f"{transport}_accepted": None,
        f"{transport}_stored": None,
    }
    result["rates"] = rates

    if args.profile:
        log("cProfile of decode + process_spans ...")
        result["profile"] = profile_in_process(bodies, args.profile_top)

    if not args.no_http:
        log(f"{transport}: starting a collector, then {args.concurrency} clients ...")
        e2e = bench_collector(
            bodies,
            args.spans,
            args.concurrency,
            deadline,
            Path(args.py_spy).resolve() if args.py_spy else None,
            args.py_spy_gil,
            args.keep_data_dir,
            transport,
        )
        result[transport] = e2e
        rates[f"{transport}_accepted"] = e2e["accepted_spans_per_s"]
        rates[f"{transport}_stored"] = e2e["stored_spans_per_s"]
    accepted, stored = rates[f"{transport}_accepted"], rates[f"{transport}_stored"]
    result["ratios"] = {
        "decode_over_raw_parse": rates["decode"] / rates["raw_parse"],
        "decode_plus_pipeline_over_raw_parse": rates["decode_plus_pipeline"] / rates["raw_parse"],
        f"{transport}_accepted_over_raw_parse": (
            accepted / rates["raw_parse"] if accepted else None
        ),
        f"{transport}_stored_over_raw_parse": stored / rates["raw_parse"] if stored else None,
    }
    result["load_avg_1m_end"] = os.getloadavg()[0]
    result["target_spans_per_s"] = TARGET_SPANS_PER_S
    result["target_met"] = None if args.no_http else bool(stored and stored >= TARGET_SPANS_PER_S)
    result["ok"] = bool(args.no_http or result[transport]["all_stored"])
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=200_000, help="total spans (default 200000)")
    p.add_argument("--batch", type=int, default=1000, help="spans per request (default 1000)")
    p.add_argument("--concurrency", type=int, default=4, help="HTTP clients (default 4)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--timeout", type=float, default=300, help="abort after this many seconds")
    p.add_argument(
        "--content",
        action="store_true",
        help="some of the 20 attributes are prompt and answer (exercises redaction)",
    )
    p.add_argument(
        "--dialect",
        choices=CHOICES,
        default="genai",
        help="how the spans name their attributes; mix = the three in turn (default genai)",
    )
    p.add_argument("--grpc", action="store_true", help="send over OTLP/gRPC instead of OTLP/HTTP")
    p.add_argument("--no-http", action="store_true", help="skip the end-to-end collector run")
    p.add_argument("--profile", action="store_true", help="cProfile decode + process_spans")
    p.add_argument("--profile-top", type=int, default=25, help="functions per cProfile listing")
    p.add_argument(
        "--py-spy",
        metavar="FILE",
        help="record the collector with py-spy during the HTTP phase (.txt/.svg/.json)",
    )
    p.add_argument(
        "--py-spy-gil", action="store_true", help="py-spy samples only the GIL holder (--gil)"
    )
    p.add_argument(
        "--keep-data-dir", action="store_true", help="keep the collector's temp data dir"
    )
    args = p.parse_args(argv)
    if args.spans < 1 or args.batch < 1 or args.concurrency < 1:
        p.error("--spans, --batch and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminated(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanup in bench_http

    signal.signal(signal.SIGTERM, terminated)
    # Ctrl-C must unwind through the cleanup even where SIGINT was inherited
    # as ignored (e.g. started in the background by a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run(args)
    except KeyboardInterrupt:
        log("interrupted; collector stopped and temp dir removed")
        return 130
    except (TimeoutError, RuntimeError) as exc:
        log(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
        if "profile" in result:
            print("\n" + result["profile"])
    if not result["ok"]:
        log("error: not every span was stored")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

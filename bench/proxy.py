"""Proxy overhead, side by side: direct → bare mitmdump → ``tokentrail proxy``.

Run:  uv run python bench/proxy.py [--requests N] [--concurrent-requests M]
                                   [--concurrency C] [--rounds R] [--json]

One run sends the same request mix — OpenAI chat completions (plain, and
streamed with ``include_usage``) and Anthropic messages (plain and streamed),
in equal shares, small prompts — to the simulated provider over HTTPS three
ways:

1. direct       straight to the simulator (``python -m demo.simulator`` in its
                own process, so it never shares a GIL with the client);
2. mitmdump     through the venv's bare ``mitmdump`` (regular mode, TLS
                interception on, no addon, its own temp confdir; the client
                trusts its CA, it trusts the simulator's CA);
3. tokentrail   through ``tokentrail proxy`` (the same mitmdump with the
                capture addon), exporting to a real ``tokentrail serve``
                collector on a temp data dir with an ``ingest`` key.

Latency is per request, measured by httpx from sending to having read the
whole response, with one keep-alive client per worker: sequentially (one
client) and concurrently (C clients). To spread the shared machine's noise
evenly, each phase runs in R rounds, and each round sends its slice of the
mix to all three targets in a freshly shuffled order; latencies are pooled per
target. The script prints p50/p99 per target, the latency each proxy ADDS
(its p50/p99 minus direct's), the ratio tokentrail-added / mitmdump-added
(target: at most 1.15), the proxies' CPU time per request, and checks that
the collector stored one ``llm_calls`` row per request sent through
``tokentrail proxy`` (``GET /api/v1/spend``, after the spool drained).

It never asserts on timings; it exits non-zero only when a request failed, a
call went unrecorded, or the run could not complete. Everything is bounded by
``--timeout``; every subprocess and the temp dir are removed on any exit
(Ctrl-C included). ``--py-spy FILE`` records the tokentrail proxy with py-spy
during the measured phases (``.txt`` = collapsed stacks, summarised for
``proxy_addon/``; ``.svg`` = flamegraph; ``.json`` = speedscope; py-spy itself
slows the proxy, so judge the ratios on a run without it).

Bare mitmdump buffers a streamed (SSE) response and sends it whole, while
``tokentrail proxy`` must pass each chunk on as it arrives (time to first
token); ``--streaming-baseline`` adds a fourth target, ``mitmdump-stream``
(bare mitmdump plus a five-line addon that streams SSE responses), to tell
the cost of streaming itself from the cost of the capture addon.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path; import from the project root.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.procfs import child_pids, free_port, proc_cpu_seconds  # noqa: E402
from demo.simulator import make_test_certificate  # noqa: E402

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
# Ours may add at most 15% to the latency bare mitmdump adds.
TARGET_RATIO = 1.15
KINDS = ("openai_chat", "openai_chat_stream", "anthropic_messages", "anthropic_messages_stream")
REQUEST_TIMEOUT_S = 30.0


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


# --------------------------------------------------------------- processes


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
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, self.stop_signal)  # its own process group: exactly it
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class Stack:
    """The simulator, collector and both proxies, in a temp dir; always torn down."""

    def __init__(self, keep_dir: bool = False, streaming_baseline: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tokentrail-bench-proxy-"))
        self.keep_dir = keep_dir
        self.streaming_baseline = streaming_baseline
        self.targets: tuple[str, ...] = TARGETS + ((STREAMING,) if streaming_baseline else ())
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

    def _start_mitmdump(self, target: str, extra: list[str], deadline: Deadline) -> None:
        """The venv's bare mitmdump: regular mode, TLS interception, its own confdir."""
        confdir = self.tmp / f"{target}-confdir"
        confdir.mkdir()
        port = free_port()
        mitmdump = Path(sys.executable).with_name("mitmdump")
        if not mitmdump.exists():
            raise RuntimeError(f"no mitmdump beside {sys.executable}")
        service = self.spawn(
            target,
            [
                str(mitmdump),
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


# --------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    headers: dict[str, str]
    body: bytes


def build_request(kind: str, i: int) -> Request:
    """One small request of ``kind``; the prompt is unique per request index."""
    prompt = f"Bench request {i}: say hello in five words."
    headers = {
        "content-type": "application/json",
        "x-tokentrail-team": "bench",
        "x-tokentrail-route": kind,
    }
    if kind.startswith("openai"):
        body: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
        }
        if kind.endswith("stream"):
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers["authorization"] = "Bearer sk-bench-openai-key"
        path = "/v1/chat/completions"
    else:
        body = {
            "model": "claude-3-5-haiku-20241022",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
        }
        if kind.endswith("stream"):
            body["stream"] = True
        headers |= {"x-api-key": "sk-ant-bench-key", "anthropic-version": "2023-06-01"}
        path = "/v1/messages"
    return Request(kind, path, headers, json.dumps(body).encode())


def build_plan(count: int, start: int, rng: random.Random) -> list[Request]:
    """``count`` requests, the kinds in equal shares (±1) and shuffled."""
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    return [build_request(kind, start + i) for i, kind in enumerate(kinds)]


def response_problem(request: Request, response: httpx.Response) -> str | None:
    """Why the response is not a complete, successful answer (None if it is)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    content = response.content
    if request.kind.endswith("stream"):
        end = b"data: [DONE]" if request.kind.startswith("openai") else b"message_stop"
        return None if end in content else f"stream without {end.decode()}"
    try:
        usage = json.loads(content).get("usage")
    except ValueError:
        return "body is not JSON"
    return None if usage else "no usage in the response"


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, kind: str, latency: float | None, error: str | None) -> None:
        self.sent += 1
        if error is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{kind}: {error}")
        elif latency is not None:
            self.latencies.append(latency)
            self.by_kind.setdefault(kind, []).append(latency)

    def merge(self, other: Outcome) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        self.latencies.extend(other.latencies)
        for kind, values in other.by_kind.items():
            self.by_kind.setdefault(kind, []).extend(values)


def send(client: httpx.Client, base: str, request: Request) -> tuple[float | None, str | None]:
    """(latency in s, None) or (None, what went wrong); the whole body is read."""
    started = time.perf_counter()
    try:
        response = client.post(base + request.path, content=request.body, headers=request.headers)
    except httpx.HTTPError as exc:
        return None, repr(exc)[:200]
    latency = time.perf_counter() - started
    problem = response_problem(request, response)
    return (None, problem) if problem else (latency, None)


def run_sequential(
    client: httpx.Client, base: str, requests: list[Request], deadline: Deadline, what: str
) -> Outcome:
    outcome = Outcome()
    for request in requests:
        deadline.check(what)
        outcome.add(request.kind, *send(client, base, request))
    return outcome


def run_pool(
    clients: list[httpx.Client],
    base: str,
    requests: list[Request],
    deadline: Deadline,
    what: str,
    static: bool = False,
) -> Outcome:
    """``len(clients)`` workers, one client each, until ``requests`` are all sent.

    Workers pull the next request as they finish one (a closed loop); with
    ``static`` worker w sends requests w, w + C, ... (warm-up: every client
    gets its connection).
    """
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    outcomes = [Outcome() for _ in clients]
    stop = threading.Event()

    def worker(w: int) -> None:
        client, outcome = clients[w], outcomes[w]
        mine = iter(range(w, len(requests), len(clients))) if static else None
        while not stop.is_set():
            if mine is not None:
                i = next(mine, None)
            else:
                with lock:
                    i = next(cursor, None)
            if i is None:
                return
            if deadline.left() <= 0:
                stop.set()
                return
            request = requests[i]
            outcome.add(request.kind, *send(client, base, request))

    threads = [
        threading.Thread(target=worker, args=(w,), name=f"bench-client-{w}", daemon=True)
        for w in range(len(clients))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short joins keep Ctrl-C responsive
    except BaseException:
        stop.set()
        raise
    deadline.check(what)
    total = Outcome()
    for outcome in outcomes:
        total.merge(outcome)
    return total


def slices(items: list[Request], rounds: int) -> list[list[Request]]:
    n = len(items)
    return [items[r * n // rounds : (r + 1) * n // rounds] for r in range(rounds)]


def run_phase(
    stack: Stack,
    name: str,
    plan: list[Request],
    warmup: list[Request],
    concurrency: int,
    rounds: int,
    rng: random.Random,
    deadline: Deadline,
) -> dict[str, Any]:
    """Warm up every target, then send ``plan`` to each, round by round, in shuffled order."""
    targets = stack.targets
    clients = {t: [stack.client(t) for _ in range(concurrency)] for t in targets}
    totals = {t: Outcome() for t in targets}
    warm = {t: Outcome() for t in targets}
    round_p50: list[dict[str, float | None]] = []
    orders: list[list[str]] = []

    def go(target: str, requests: list[Request], static: bool = False) -> Outcome:
        what = f"{name} phase, {target}"
        base = stack.urls["direct"]
        if concurrency == 1:
            return run_sequential(clients[target][0], base, requests, deadline, what)
        return run_pool(clients[target], base, requests, deadline, what, static=static)

    try:
        for target in rng.sample(targets, len(targets)):
            warm[target] = go(target, warmup, static=True)
        for r, chunk in enumerate(slices(plan, rounds)):
            order = rng.sample(targets, len(targets))
            orders.append(order)
            this_round: dict[str, float | None] = {}
            for target in order:
                outcome = go(target, chunk)
                totals[target].merge(outcome)
                this_round[target] = percentile(sorted(outcome.latencies), 0.5)
            round_p50.append(this_round)
            log(
                f"  {name} round {r + 1}/{rounds} ({len(chunk)} requests per target), p50 ms: "
                + ", ".join(f"{t} {ms(this_round[t])}" for t in targets)
            )
    finally:
        for target_clients in clients.values():
            for client in target_clients:
                client.close()
    return summarize_phase(
        targets, plan, warmup, concurrency, rounds, totals, warm, round_p50, orders
    )


# --------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks of sorted ``values``."""
    if not values:
        return None
    k = (len(values) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.2f}"


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def latency_stats(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50_ms": to_ms(percentile(ordered, 0.5)),
        "p90_ms": to_ms(percentile(ordered, 0.9)),
        "p99_ms": to_ms(percentile(ordered, 0.99)),
        "mean_ms": to_ms(sum(ordered) / len(ordered)) if ordered else None,
        "max_ms": to_ms(ordered[-1]) if ordered else None,
    }


def added_over_direct(stats: dict[str, Any], direct: dict[str, Any], key: str) -> float | None:
    if stats[key] is None or direct[key] is None:
        return None
    return stats[key] - direct[key]


def summarize_phase(
    names: tuple[str, ...],
    plan: list[Request],
    warmup: list[Request],
    concurrency: int,
    rounds: int,
    totals: dict[str, Outcome],
    warm: dict[str, Outcome],
    round_p50: list[dict[str, float | None]],
    orders: list[list[str]],
) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for target in names:
        outcome = totals[target]
        targets[target] = {
            **latency_stats(outcome.latencies),
            "requests": outcome.sent,
            "ok": outcome.sent - outcome.failed,
            "failed": outcome.failed,
            "warmup_requests": warm[target].sent,
            "warmup_failed": warm[target].failed,
            "errors": outcome.errors + warm[target].errors,
            "p50_ms_by_kind": {
                kind: to_ms(percentile(sorted(outcome.by_kind.get(kind, [])), 0.5))
                for kind in KINDS
            },
        }
    direct = targets["direct"]
    proxies = [t for t in names if t != "direct"]
    added = {
        proxy: {q: added_over_direct(targets[proxy], direct, f"{q}_ms") for q in ("p50", "p99")}
        for proxy in proxies
    }
    added_by_kind = {
        proxy: {
            kind: added_over_direct(
                targets[proxy]["p50_ms_by_kind"], direct["p50_ms_by_kind"], kind
            )
            for kind in KINDS
        }
        for proxy in proxies
    }
    per_round = []
    for p in round_p50:
        if None in p.values():
            continue
        per_round.append(ratio(p["tokentrail"] - p["direct"], p["mitmdump"] - p["direct"]))
    per_round_ok = sorted(r for r in per_round if r is not None)
    summary: dict[str, Any] = {
        "requests_per_target": len(plan),
        "warmup_per_target": len(warmup),
        "concurrency": concurrency,
        "rounds": rounds,
        "round_orders": orders,
        "targets": targets,
        "added_ms": added,
        "added_p50_ms_by_kind": added_by_kind,
        # The judged ratio: what ours adds over what bare mitmdump adds.
        "ratio": {q: ratio(added["tokentrail"][q], added["mitmdump"][q]) for q in ("p50", "p99")},
        "ratio_p50_per_round": {
            "min": per_round_ok[0] if per_round_ok else None,
            "median": percentile(per_round_ok, 0.5),
            "max": per_round_ok[-1] if per_round_ok else None,
        },
        "all_ok": all(
            totals[t].failed == 0 and warm[t].failed == 0 and totals[t].sent == len(plan)
            for t in names
        ),
    }
    if STREAMING in added:
        summary["ratio_vs_streaming_baseline"] = {
            q: ratio(added["tokentrail"][q], added[STREAMING][q]) for q in ("p50", "p99")
        }
    return summary


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


# --------------------------------------------------------------- py-spy


class PySpy:
    """Optional: py-spy attached to the tokentrail proxy for the measured phases."""

    def __init__(self, out: Path, pid: int, rate_hz: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise RuntimeError("py-spy is not installed (uv pip install py-spy)")
        self.out = out
        self.format = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--threads"]
            + ["--format", self.format, "--output", str(out), "--nonblocking"],
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


# Frames that are the process's entry point, not addon work.
ENTRY_FRAMES = ("proxy_addon/launch.py", "proxy_addon/mitmdump_script.py")
# Leaf frames of a thread that waits (py-spy does not always know it is idle).
IDLE_LEAVES = ("Condition.wait (", "Event.wait (", "EpollSelector.select (", "select (")


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any] | None:
    """Busy samples per ``proxy_addon`` function (inclusive and deepest) from collapsed stacks.

    Stacks whose leaf is a wait are idle and not counted; the entry point
    (``launch.py``, on every main-thread stack) is not addon work.
    """
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    total = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    threads: dict[str, int] = {}
    addon_total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        total += count
        thread = next((f for f in frames[:2] if f.startswith("thread")), "")
        threads[thread] = threads.get(thread, 0) + count
        # Lines differ within a function: count each function once per stack.
        ours = [
            frame.rsplit(":", 1)[0] + ")"
            for frame in frames
            if "proxy_addon/" in frame and not any(e in frame for e in ENTRY_FRAMES)
        ]
        for frame in set(ours):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if ours:
            addon_total += count
            own[ours[-1]] = own.get(ours[-1], 0) + count

    def best(counts: dict[str, int]) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [{"frame": k, "samples": v, "share": v / total if total else 0} for k, v in ordered]

    return {
        "samples": total,
        "addon_samples": addon_total,
        "addon_share": addon_total / total if total else 0,
        "threads": best(threads),
        "addon_inclusive": best(inclusive),
        "addon_deepest": best(own),
    }


# --------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        from importlib.metadata import version

        mitmproxy_version = version("mitmproxy")
    except Exception:  # noqa: BLE001 - informational only
        mitmproxy_version = "unknown"
    return {
        "nproc": affinity,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "mitmproxy": mitmproxy_version,
        "openssl": ssl.OPENSSL_VERSION,
        "load_avg_1m": os.getloadavg()[0],
    }


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_phase(title: str, phase: dict[str, Any]) -> None:
    targets = phase["targets"]
    print(
        f"\n{title}: {phase['concurrency']} client(s), {phase['requests_per_target']} requests "
        f"per target (+{phase['warmup_per_target']} warm-up), {phase['rounds']} rounds"
    )
    print(f"{'':<28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'ok':>8}{'failed':>8}")
    print("-" * 74)
    for target, t in targets.items():
        print(
            f"{target:<28}{fmt(t['p50_ms']):>10}{fmt(t['p99_ms']):>10}{fmt(t['mean_ms']):>10}"
            f"{t['ok']:>8}{t['failed'] + t['warmup_failed']:>8}"
        )
    for proxy, a in phase["added_ms"].items():
        print(f"{'added by ' + proxy:<28}{fmt(a['p50']):>10}{fmt(a['p99']):>10}")
    r = phase["ratio"]
    print(f"{'tokentrail/mitmdump':<28}{fmt(r['p50'], 3):>10}{fmt(r['p99'], 3):>10}   (added)")
    if "ratio_vs_streaming_baseline" in phase:
        r = phase["ratio_vs_streaming_baseline"]
        print(f"{'tokentrail/' + STREAMING:<28}{fmt(r['p50'], 3):>10}{fmt(r['p99'], 3):>10}")
    pr = phase["ratio_p50_per_round"]
    print(
        f"  per-round p50 ratio: min {fmt(pr['min'], 2)}, median {fmt(pr['median'], 2)}, "
        f"max {fmt(pr['max'], 2)}"
    )
    by_kind = phase["added_p50_ms_by_kind"]
    print(f"  added p50 ms by kind ({' / '.join(by_kind)}):")
    for kind in KINDS:
        print(f"    {kind:<28}" + " / ".join(fmt(by_kind[p][kind]) for p in by_kind))
    for target, t in targets.items():
        for error in t["errors"]:
            print(f"  {target} error: {error}")


def print_report(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print(
        "Tokentrail proxy overhead: direct vs bare mitmdump vs tokentrail proxy "
        f"(mix: {', '.join(KINDS)}; seed {cfg['seed']})"
    )
    print_phase("sequential", result["sequential"])
    print_phase("concurrent", result["concurrent"])
    cpu = result["cpu"]
    print(
        "\nproxy CPU per request: "
        + ", ".join(f"{p} {fmt(v, 3)} ms" for p, v in cpu["ms_per_request"].items())
        + f" (tokentrail/mitmdump x{fmt(cpu['tokentrail_over_mitmdump'], 2)}); collector "
        f"{fmt(cpu['collector_s'], 1)} s, simulator {fmt(cpu['simulator_s'], 1)} s in all"
    )
    c = result["collector"]
    print(
        f"collector: {c['recorded_calls']} llm_calls rows for {c['expected_calls']} requests "
        f"through tokentrail ({c['error_calls']} error calls; spool drained in "
        f"{c['drain_s']:.1f} s) -> " + ("all recorded" if c["all_recorded"] else "MISSING ROWS")
    )
    t = result["target"]
    print(
        f"target: tokentrail adds at most {TARGET_RATIO:.2f}x what bare mitmdump adds -> "
        + ("met" if t["met"] else "NOT met")
        + " ("
        + ", ".join(f"{k} {fmt(v, 3)}" for k, v in t["ratios"].items())
        + ")"
    )
    m = result["machine"]
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, "
        f"mitmproxy {m['mitmproxy']}, {m['openssl']}, load avg {m['load_avg_1m']:.2f} at "
        f"start, {result['load_avg_1m_end']:.2f} at end; wall {result['wall_s']:.0f} s"
    )
    spy = result.get("py_spy")
    if spy and spy.get("summary"):
        s = spy["summary"]
        print(
            f"\npy-spy ({spy['file']}): {s['samples']} samples, "
            f"{100 * s['addon_share']:.1f} % with proxy_addon on the stack"
        )
        for row in s["addon_inclusive"]:
            print(f"  {100 * row['share']:5.1f} %  {row['frame']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(args.timeout)
    wall = time.perf_counter()
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "config": {
            "requests": args.requests,
            "warmup": args.warmup,
            "concurrent_requests": args.concurrent_requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seed": args.seed,
            "kinds": list(KINDS),
            "target_ratio": TARGET_RATIO,
        },
        "machine": machine(),
    }
    stack = Stack(keep_dir=args.keep_dir, streaming_baseline=args.streaming_baseline)
    spy: PySpy | None = None
    try:
        log("starting simulator, collector, mitmdump(s) and tokentrail proxy ...")
        result["startup_s"] = stack.start(deadline)
        log(
            "  "
            + ", ".join(f"{k} {v:.1f} s" for k, v in result["startup_s"].items())
            + f"; pids {stack.pids}"
        )
        # The proxy's exporter process (parse, encode, send) counts as the proxy's.
        exporters = child_pids(stack.pids["tokentrail"])
        watched = {**stack.pids, **{f"exporter-{i}": pid for i, pid in enumerate(exporters)}}
        cpu0 = {name: proc_cpu_seconds(pid) for name, pid in watched.items()}
        if args.py_spy:
            spy = PySpy(Path(args.py_spy).resolve(), stack.pids["tokentrail"])

        seq_plan = build_plan(args.requests, 0, rng)
        seq_warm = build_plan(args.warmup, 1_000_000, rng)
        log(f"sequential: {args.requests} requests per target ...")
        result["sequential"] = run_phase(
            stack, "sequential", seq_plan, seq_warm, 1, args.rounds, rng, deadline
        )
        con_plan = build_plan(args.concurrent_requests, 2_000_000, rng)
        con_warm = build_plan(args.concurrency, 3_000_000, rng)
        log(f"concurrent: {args.concurrency} clients, {args.concurrent_requests} requests ...")
        result["concurrent"] = run_phase(
            stack,
            "concurrent",
            con_plan,
            con_warm,
            args.concurrency,
            args.rounds,
            rng,
            deadline,
        )
        if spy is not None:
            spy.stop()
            result["py_spy"] = {
                "file": args.py_spy,
                "summary": summarize_collapsed(spy.out) if spy.format == "raw" else None,
            }
            spy = None

        expected = sum(
            result[phase]["targets"]["tokentrail"][key]
            for phase in ("sequential", "concurrent")
            for key in ("requests", "warmup_requests")
        )
        log(f"waiting for the collector to store {expected} calls ...")
        result["collector"] = wait_recorded(stack, expected, deadline)
        cpu1 = {name: proc_cpu_seconds(pid) for name, pid in watched.items()}
    finally:
        if spy is not None:
            spy.stop()
        stack.close()

    spent = {
        name: (cpu1[name] - cpu0[name])
        if cpu0.get(name) is not None and cpu1.get(name) is not None
        else None
        for name in cpu0
    }
    per_request = {}
    for proxy in stack.targets[1:]:
        sent = sum(
            result[phase]["targets"][proxy][key]
            for phase in ("sequential", "concurrent")
            for key in ("requests", "warmup_requests")
        )
        per_request[proxy] = 1000 * spent[proxy] / sent if spent[proxy] is not None else None
        if proxy == "tokentrail" and per_request[proxy] is not None:
            exporter_s = sum(v or 0.0 for k, v in spent.items() if k.startswith("exporter-"))
            per_request["tokentrail+exporter"] = per_request[proxy] + 1000 * exporter_s / sent
    result["cpu"] = {
        "ms_per_request": per_request,
        "tokentrail_over_mitmdump": ratio(per_request["tokentrail"], per_request["mitmdump"]),
        "collector_s": spent.get("collector"),
        "simulator_s": spent.get("simulator"),
        "seconds_by_process": spent,
    }
    ratios = {
        f"{phase}_{q}": result[phase]["ratio"][q]
        for phase in ("sequential", "concurrent")
        for q in ("p50", "p99")
    }
    result["target"] = {
        "max_ratio": TARGET_RATIO,
        "ratios": ratios,
        "met_by_metric": {k: v is not None and v <= TARGET_RATIO for k, v in ratios.items()},
        "met": all(v is not None and v <= TARGET_RATIO for v in ratios.values()),
    }
    result["all_requests_ok"] = result["sequential"]["all_ok"] and result["concurrent"]["all_ok"]
    result["ok"] = result["all_requests_ok"] and result["collector"]["all_recorded"]
    result["load_avg_1m_end"] = os.getloadavg()[0]
    result["wall_s"] = time.perf_counter() - wall
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--requests", type=int, default=300, help="sequential requests per target (default 300)"
    )
    p.add_argument(
        "--warmup", type=int, default=30, help="sequential warm-up requests per target (30)"
    )
    p.add_argument(
        "--concurrent-requests",
        type=int,
        default=1000,
        help="concurrent requests per target (default 1000)",
    )
    p.add_argument("--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument(
        "--rounds", type=int, default=5, help="rounds per phase, targets shuffled in each (5)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed for the mix and the target order")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--timeout", type=float, default=600, help="abort after this many seconds")
    p.add_argument(
        "--py-spy",
        metavar="FILE",
        help="record the tokentrail proxy with py-spy during the phases (.txt/.svg/.json)",
    )
    p.add_argument(
        "--streaming-baseline",
        action="store_true",
        help=f"also measure {STREAMING}: bare mitmdump that streams SSE responses through "
        "instead of buffering them (as tokentrail does)",
    )
    p.add_argument("--keep-dir", action="store_true", help="keep the temp dir (logs, data)")
    args = p.parse_args(argv)
    if min(args.requests, args.concurrent_requests, args.concurrency, args.rounds) < 1:
        p.error("--requests, --concurrent-requests, --concurrency and --rounds must be positive")
    if args.warmup < 0:
        p.error("--warmup must not be negative")
    args.rounds = min(args.rounds, args.requests, args.concurrent_requests)
    return args


def run_bench(
    execute: Callable[[], dict[str, Any]],
    as_json: bool,
    print_report: Callable[[dict[str, Any]], None],
    verdict: Callable[[dict[str, Any]], int],
) -> int:
    """Run a bench with its cleanup guaranteed, print the result, return the exit code."""

    def terminated(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the bench's cleanup

    signal.signal(signal.SIGTERM, terminated)
    # Ctrl-C must unwind through the cleanup even where SIGINT was inherited as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = execute()
    except KeyboardInterrupt:
        log("interrupted; processes stopped and temp dir removed")
        return 130
    except (TimeoutError, RuntimeError, OSError, httpx.HTTPError) as exc:
        log(f"error: {exc}")
        return 1
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
    return verdict(result)


def proxy_verdict(result: dict[str, Any]) -> int:
    if not result["all_requests_ok"]:
        log("error: not every request succeeded")
        return 1
    if not result["collector"]["all_recorded"]:
        log("error: the collector did not record one llm_calls row per tokentrail request")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), args.json, print_report, proxy_verdict)


if __name__ == "__main__":
    sys.exit(main())

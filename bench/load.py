"""Sustained load through the capture proxy, zero loss and memory bounds.

    uv run python bench/load.py [--seconds 300] [--rate 200] [--stream-share 0.5]
                                [--span-rate 100] [--proxies N] [--json]

On loopback, in a temp dir, it starts the simulated provider over TLS (its own
process, no request log), a fresh collector (``tokentrail serve``), N
``tokentrail proxy`` workers (real mitmdump, TLS interception; each with its
own data dir, CA and spool) and, in this process, the load generator
(``demo/loadgen.py``): OpenAI and Anthropic calls, plain and streamed, over
HTTPS through the proxies' TLS interception, open-loop at ``--rate`` calls/s
split across the proxies, plus GenAI OTLP spans at ``--span-rate`` straight to
the collector. ``--client`` picks who makes the calls: ``raw`` (default) sends
the SDKs' requests as bytes on asyncio protocols, because the ``sdk`` client's
CPU (about 7 ms a call) would otherwise be most of what the run measures. A
direct-to-simulator baseline runs in parallel for the whole time at
``--baseline-rate``, under the same machine load, so the latency the proxy
ADDS is proxied minus direct.

Memory phase: during the run it also sends ``--large-streams`` streamed answers
of ``--large-stream-mb`` each through the proxy and ``--large-span-batches``
OTLP requests of ``--large-span-batch`` spans each.

It prints (``--json``: as JSON) throughput achieved, p50/p99 client latency via
the proxy and direct and their difference, peak RSS of every process (its whole
process tree, sampled from /proc each second, and the kernel's VmHWM), CPU % and
CPU ms per call of each, the proxies' spool size every 10 s, and the zero-loss
check: after the spool drained, every response id the clients saw succeed is in
``llm_calls`` exactly once, and every span id the collector acknowledged
likewise (read through the collector's read-only SQL endpoint with the admin
key). Exit 1 if a call or span was lost or stored twice, a call failed at the
client, or the collector or a proxy (each a whole process tree) went above
``--rss-bound-mb`` (500) of private memory — RSS minus mapped files, since the
collector maps chDB's ~550 MB engine library, file-backed and shared; both
figures are printed. The reasons are printed. Speed is reported, never judged.
Everything is bounded by ``--timeout``; processes and the temp dir are removed
on any exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path; import from the project root.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.load_report import (  # noqa: E402
    cpu_per_call,
    difference,
    print_report,
    problems,
    quotient,
    stats_ms,
)
from bench.load_stack import LoadStack, ProcessWatch, Sampler, StoreCheck, zero_loss  # noqa: E402
from bench.proxy import Deadline, log, machine, run_bench  # noqa: E402
from demo.loadgen import CLIENTS, LoadGenerator, LoadReport  # noqa: E402

TEAM = "load"
DRAIN_IDLE_S = 60  # give up waiting for the store after this long without progress


def extras_at(count: int, seconds: float, offset: float) -> list[float]:
    """When to send ``count`` extras: spread evenly, ``offset`` of a slot in."""
    return [seconds * (i + offset) / count for i in range(count)]


class Run:
    """One bench run: the stack, the generators, the timeline and the checks."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = Deadline(args.timeout)
        self.stack = LoadStack(args.proxies, keep_dir=args.keep_dir)
        self.proxied: dict[str, LoadGenerator] = {}
        self.baseline: LoadGenerator | None = None
        self.sampler: Sampler | None = None
        self.large: list[concurrent.futures.Future[Any]] = []
        self.batches: list[concurrent.futures.Future[bool]] = []
        self.load_started = 0.0

    def generators(self) -> list[LoadGenerator]:
        return [*self.proxied.values(), *([self.baseline] if self.baseline else [])]

    def start(self) -> dict[str, float]:
        args, stack = self.args, self.stack
        took = stack.start(self.deadline)
        common = {
            "provider_base_url": stack.urls["direct"],
            "stream_share": args.stream_share,
            "output_tokens": args.output_tokens,
            "response_delay_ms": args.delay_ms,
            "token_delay_ms": args.token_delay_ms,
            "client": args.client,
        }
        for i, name in enumerate(stack.proxy_names):
            self.proxied[name] = LoadGenerator(
                proxy_url=stack.urls[name],
                ca_file=stack.proxy_ca(name),
                collector_url=stack.collector_url if i == 0 else None,
                ingest_key=stack.ingest_key,
                calls_per_second=args.rate / args.proxies,
                spans_per_second=args.span_rate if i == 0 else 0.0,
                concurrency=max(1, args.concurrency // args.proxies),
                team=TEAM,
                seed=args.seed + i,
                **common,
            )
        self.baseline = LoadGenerator(
            proxy_url=None,
            ca_file=stack.sim_ca,
            collector_url=None,
            ingest_key=None,
            calls_per_second=args.baseline_rate,
            concurrency=max(1, args.concurrency // 4),
            team=TEAM + "-baseline",
            seed=args.seed + 100,
            **common,
        )
        watched = ["collector", *stack.proxy_names, "simulator"]
        watches = {name: ProcessWatch(stack.pids[name]) for name in watched}
        for name in stack.proxy_names:  # the proxy's own process, without its exporter
            watches[f"{name}.mitmdump"] = ProcessWatch(stack.pids[name], tree=False)
        watches["loadgen"] = ProcessWatch(os.getpid(), tree=False)
        self.sampler = Sampler(stack, watches, self._progress)
        self.sampler.start()
        for generator in self.generators():
            generator.start()
        self.load_started = time.monotonic()
        return took

    def _progress(self, row: dict[str, Any]) -> None:
        reports = [g.report() for g in self.proxied.values()]
        ok = sum(len(r.latencies_ms) for r in reports)
        failed = sum(len(r.failed_calls) for r in reports)
        spans = len(reports[0].ok_span_ids) if reports else 0
        log(
            f"  {row['t_s']:6.0f} s  ok {ok} failed {failed} in flight "
            f"{sum(r.in_flight for r in reports)} spans {spans} | RSS MB "
            + " ".join(f"{k} {v:.0f}" for k, v in row["rss_mb"].items())
            + " | CPU % "
            + " ".join(f"{k} {v if v is not None else '-'}" for k, v in row["cpu_percent"].items())
            + f" | spool {sum(row['spool_bytes'].values()):,} B | load {row['load_avg_1m']:.1f}"
        )

    def drive(self) -> None:
        """Keep the load on for ``--seconds``, firing the memory-phase extras on time."""
        args = self.args
        first = next(iter(self.proxied.values()))
        gens = list(self.proxied.values())
        extras: list[tuple[float, str, int]] = [
            (t, "stream", i) for i, t in enumerate(extras_at(args.large_streams, args.seconds, 0.5))
        ] + [
            (t, "spans", i)
            for i, t in enumerate(extras_at(args.large_span_batches, args.seconds, 0.75))
        ]
        extras.sort()
        size = int(args.large_stream_mb * 1_000_000)
        while (elapsed := time.monotonic() - self.load_started) < args.seconds:
            self.stack.check_services()
            self.deadline.check("load phase")
            while extras and extras[0][0] <= elapsed:
                _, what, i = extras.pop(0)
                if what == "stream":
                    self.large.append(gens[i % len(gens)].send_large_stream(size))
                else:
                    self.batches.append(first.send_span_batch(args.large_span_batch))
            time.sleep(min(1.0, max(0.05, args.seconds - elapsed)))

    def stop_load(self) -> tuple[LoadReport, list[LoadReport], LoadReport | None]:
        reports = [g.stop() for g in self.generators()]
        for future in self.large + self.batches:
            # A failure is counted from the reports below.
            with contextlib.suppress(Exception):
                future.result(timeout=max(1.0, self.deadline.left()))
        proxied = reports[: len(self.proxied)]
        baseline = reports[-1] if self.baseline else None
        merged = LoadReport(
            ok_response_ids=[i for r in proxied for i in r.ok_response_ids],
            failed_calls=[f for r in proxied for f in r.failed_calls],
            ok_span_ids=[i for r in proxied for i in r.ok_span_ids],
            failed_spans=sum(r.failed_spans for r in proxied),
            latencies_ms=[x for r in proxied for x in r.latencies_ms],
            sent=sum(r.sent for r in proxied),
            duration_s=max(r.duration_s for r in proxied),
            large_stream_ms=[x for r in proxied for x in r.large_stream_ms],
            large_stream_bytes=sum(r.large_stream_bytes for r in proxied),
            max_schedule_lag_ms=max(r.max_schedule_lag_ms for r in proxied),
        )
        return merged, proxied, baseline

    def wait_stored(self, store: StoreCheck, calls: int, spans: int) -> dict[str, Any]:
        """Poll until the store holds the expected rows, the spools are empty and the
        count has held still for 3 s (or no progress for DRAIN_IDLE_S, or the deadline)."""
        started = time.monotonic()
        last: dict[str, int] | None = None
        changed = time.monotonic()
        while True:
            stored = store.stored(TEAM)
            spooled = sum(self.stack.spool_bytes(n) for n in self.stack.proxy_names)
            if stored != last:
                last, changed = stored, time.monotonic()
            still = time.monotonic() - changed
            complete = stored["calls"] >= calls and stored["spans"] >= spans
            if (complete and spooled == 0 and still >= 3) or still > DRAIN_IDLE_S:
                break
            if self.deadline.left() <= 0:
                log("  timed out waiting for the store")
                break
            time.sleep(1.0)
        return {"stored": last, "spool_bytes_left": spooled, "drain_s": time.monotonic() - started}

    def close(self) -> None:
        for generator in self.generators():
            try:
                generator.stop(drain_s=5)
            except Exception as exc:  # noqa: BLE001 - cleanup must reach the processes
                log(f"  stopping a generator: {exc}")
        if self.sampler is not None:
            self.sampler.stop()
        self.stack.close()


def execute(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    result: dict[str, Any] = {"config": vars(args).copy(), "machine": machine()}
    wall = time.perf_counter()
    try:
        log(f"starting simulator, collector and {args.proxies} proxy worker(s) ...")
        result["startup_s"] = run.start()
        log(f"load: {args.seconds:g} s at {args.rate:g} calls/s, {args.span_rate:g} spans/s ...")
        run.drive()
        merged, proxied, baseline = run.stop_load()
        assert run.sampler is not None
        duration = merged.duration_s
        result["cpu_percent"] = run.sampler.cpu_percent_overall(duration)
        result["cpu_ms_per_call"] = cpu_per_call(
            result["cpu_percent"], args.proxies, merged, baseline, duration
        )
        store = StoreCheck(run.stack.collector_url, run.stack.admin_key)
        try:
            log(
                f"waiting for {len(merged.ok_response_ids)} calls and {len(merged.ok_span_ids)} "
                "spans in llm_calls ..."
            )
            result["drain"] = run.wait_stored(
                store, len(merged.ok_response_ids), len(merged.ok_span_ids)
            )
            result["zero_loss"] = {
                "calls": zero_loss(
                    merged.ok_response_ids, store.counts(TEAM, "proxy", "provider_request_id")
                ),
                "spans": zero_loss(merged.ok_span_ids, store.counts(TEAM, "otlp", "span_id")),
            }
        finally:
            store.close()
        run.sampler.stop()
        result["proxy_stats"] = {n: run.stack.last_stats_line(n) for n in run.stack.proxy_names}
        result.update(summarize(args, run, merged, proxied, baseline))
    finally:
        run.close()
    result["load_avg_1m_end"] = os.getloadavg()[0]
    result["wall_s"] = time.perf_counter() - wall
    result["problems"] = problems(result)
    result["ok"] = not result["problems"]
    return result


def summarize(
    args: argparse.Namespace,
    run: Run,
    merged: LoadReport,
    proxied: list[LoadReport],
    baseline: LoadReport | None,
) -> dict[str, Any]:
    assert run.sampler is not None
    duration = merged.duration_s
    via = stats_ms(merged.latencies_ms)
    direct = stats_ms(baseline.latencies_ms if baseline else [])
    watches = run.sampler.watches
    bounded = ["collector", *run.stack.proxy_names]
    peak = {name: round(w.peak_mb(), 1) for name, w in watches.items()}
    anon = {name: round(w.peak_anon_kb / 1024, 1) for name, w in watches.items()}
    # Seconds after the load started: past the run's length is the drain and the
    # zero-loss queries, not the load.
    anon_at = {name: round(w.peak_anon_at - run.load_started, 1) for name, w in watches.items()}
    regular_ok = len(merged.latencies_ms)
    batches_ok = sum(1 for f in run.batches if f.done() and f.result())
    scheduled_spans = len(merged.ok_span_ids) - batches_ok * args.large_span_batch
    return {
        "throughput": {
            "duration_s": duration,
            "sent": merged.sent,
            "ok": regular_ok,
            "failed": len(merged.failed_calls),
            "failed_examples": merged.failed_calls[:5],
            "sent_per_s": merged.sent / duration if duration else None,
            "ok_per_s": regular_ok / duration if duration else None,
            "target_per_s": args.rate,
            "max_schedule_lag_ms": merged.max_schedule_lag_ms,
            "per_proxy_ok": {
                n: len(r.latencies_ms) for n, r in zip(run.proxied, proxied, strict=True)
            },
            "spans_ok": len(merged.ok_span_ids),
            "spans_failed": merged.failed_spans,
            # The scheduled spans' rate (the large batches come on top).
            "spans_per_s": scheduled_spans / duration if duration else None,
        },
        "latency": {
            "via_proxy": via,
            "direct": direct,
            "baseline_failed": len(baseline.failed_calls) if baseline else None,
            "added_p50_ms": difference(via["p50_ms"], direct["p50_ms"]),
            "added_p99_ms": difference(via["p99_ms"], direct["p99_ms"]),
            "ratio_p50": quotient(via["p50_ms"], direct["p50_ms"]),
            "ratio_p99": quotient(via["p99_ms"], direct["p99_ms"]),
        },
        "large": {
            "streams_sent": len(run.large),
            "streams_ok": len(merged.large_stream_ms),
            "stream_mb_each": args.large_stream_mb,
            "stream_text_bytes": merged.large_stream_bytes,
            "stream_ms": stats_ms(merged.large_stream_ms),
            "span_batches_sent": len(run.batches),
            "span_batches_ok": batches_ok,
            "spans_per_batch": args.large_span_batch,
        },
        "memory": {
            "bound_mb": args.rss_bound_mb,
            "peak_rss_mb": peak,
            # RSS minus mapped files: the collector maps chDB's ~550 MB library.
            "peak_anon_mb": anon,
            "peak_anon_at_s": anon_at,
            # The bound is on private memory: the collector maps chDB's ~550 MB
            # engine library, whose pages are file-backed, shared and reclaimable.
            "within_bound": {n: anon[n] <= args.rss_bound_mb for n in bounded},
        },
        "spool": {
            "peak_bytes": dict(run.sampler.peak_spool_bytes),
            "timeline": [
                {"t_s": r["t_s"], "bytes": r["spool_bytes"]} for r in run.sampler.timeline
            ],
        },
        "timeline": run.sampler.timeline,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300, help="load duration (300)")
    p.add_argument("--rate", type=float, default=200, help="model calls/s through the proxy")
    p.add_argument("--stream-share", type=float, default=0.5, help="share streamed (0.5)")
    p.add_argument("--span-rate", type=float, default=100, help="OTLP spans/s (100)")
    p.add_argument("--proxies", type=int, default=1, help="proxy workers (1)")
    p.add_argument("--concurrency", type=int, default=128, help="max calls in flight (128)")
    p.add_argument("--baseline-rate", type=float, help="direct calls/s (default rate/10)")
    p.add_argument("--output-tokens", type=int, default=24, help="answer length (24 tokens)")
    p.add_argument("--delay-ms", type=int, default=20, help="simulated provider latency (20)")
    p.add_argument("--token-delay-ms", type=int, default=2, help="between stream events (2)")
    p.add_argument("--large-streams", type=int, default=4, help="large streamed answers (4)")
    p.add_argument("--large-stream-mb", type=float, default=10, help="size of each (10 MB)")
    p.add_argument("--large-span-batches", type=int, default=3, help="large OTLP requests (3)")
    p.add_argument("--large-span-batch", type=int, default=10_000, help="spans in each")
    p.add_argument(
        "--rss-bound-mb", type=float, default=500, help="collector/proxy private-memory bound"
    )
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="raw (default): the SDKs' requests as bytes on asyncio protocols, ~0.6 ms CPU a "
        "call; http: the same via plain httpx, ~2.5 ms; sdk: the openai/anthropic SDKs, ~7 ms",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--timeout", type=float, help="abort after this long (seconds + 600)")
    p.add_argument("--keep-dir", action="store_true", help="keep the temp dir (logs, data)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.proxies < 1 or args.concurrency < 1:
        p.error("--seconds, --rate, --proxies and --concurrency must be positive")
    if not 0 <= args.stream_share <= 1:
        p.error("--stream-share must be between 0 and 1")
    if min(args.span_rate, args.large_streams, args.large_span_batches) < 0:
        p.error("--span-rate and the --large-* counts must not be negative")
    if args.baseline_rate is None:
        args.baseline_rate = max(1.0, args.rate / 10)
    if args.timeout is None:
        args.timeout = args.seconds + 600
    return args


def load_verdict(result: dict[str, Any]) -> int:
    for problem in result["problems"]:
        log(f"FAILED: {problem}")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: execute(args), args.json, print_report, load_verdict)


if __name__ == "__main__":
    sys.exit(main())

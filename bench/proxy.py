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

``tokentrail proxy`` runs mitmdump's master with mitmproxy's hooks indexed
per event (``proxy_addon/master.py``), which is cheaper than stock mitmdump.
``--indexed-baseline`` adds ``mitmdump-indexed``, that master without the
capture addon: tokentrail over it is what the capture itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path; import from the project root.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.harness import Deadline, PySpy, log  # noqa: E402
from bench.procfs import child_pids, proc_cpu_seconds  # noqa: E402
from bench.procfs import free_port as free_port  # noqa: E402 - for bench/load_stack.py
from bench.proxy_pyspy import summarize_collapsed  # noqa: E402
from bench.proxy_report import (  # noqa: E402
    TARGET_RATIO,
    machine,
    ms,
    percentile,
    print_report,
    ratio,
    summarize_phase,
    within_target,
)
from bench.proxy_stack import INDEXED, STREAMING, Stack, wait_recorded  # noqa: E402
from bench.proxy_stack import child_env as child_env  # noqa: E402 - for bench/load_stack.py
from bench.proxy_traffic import (  # noqa: E402
    KINDS,
    Outcome,
    Request,
    build_plan,
    run_pool,
    run_sequential,
    slices,
)


def run_phase(
    stack: Stack,
    name: str,
    plan: list[Request],
    warmup: list[Request],
    concurrency: int,
    rounds: int,
    rng: random.Random,
    deadline: Deadline,
    background: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Warm up every target, then send ``plan`` to each, round by round, in shuffled order.

    ``background`` (name → pid: tokentrail's exporter, the collector) is charged
    per target window: CPU it used while that target's slice ran. Work our
    proxy defers (the exporter yields the cores while they are busy) shows
    up in whichever window it runs in, including the other targets'."""
    targets = stack.targets
    background = background or {}
    window_cpu = {t: {name: 0.0 for name in background} for t in targets}
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
                before = {name: proc_cpu_seconds(pid) for name, pid in background.items()}
                outcome = go(target, chunk)
                for name, pid in background.items():
                    now, then = proc_cpu_seconds(pid), before[name]
                    if now is not None and then is not None:
                        window_cpu[target][name] += now - then
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
    summary = summarize_phase(
        targets, plan, warmup, concurrency, rounds, totals, warm, round_p50, orders
    )
    summary["background_cpu_s_by_window"] = window_cpu
    return summary


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
    stack = Stack(
        keep_dir=args.keep_dir,
        streaming_baseline=args.streaming_baseline,
        indexed_baseline=args.indexed_baseline,
    )
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
        background = {k: v for k, v in watched.items() if k.startswith("exporter-")}
        background["collector"] = stack.pids["collector"]

        seq_plan = build_plan(args.requests, 0, rng)
        seq_warm = build_plan(args.warmup, 1_000_000, rng)
        log(f"sequential: {args.requests} requests per target ...")
        result["sequential"] = run_phase(
            stack, "sequential", seq_plan, seq_warm, 1, args.rounds, rng, deadline, background
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
            background,
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
    met = {
        f"{phase}_{q}": within_target(
            result[phase]["added_ms"]["tokentrail"][q], result[phase]["added_ms"]["mitmdump"][q]
        )
        for phase in ("sequential", "concurrent")
        for q in ("p50", "p99")
    }
    result["target"] = {
        "max_ratio": TARGET_RATIO,
        "ratios": ratios,
        "met_by_metric": met,
        "met": all(met.values()),
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
    p.add_argument(
        "--indexed-baseline",
        action="store_true",
        help=f"also measure {INDEXED}: the master tokentrail proxy runs (mitmproxy's hooks "
        "indexed per event) without the capture addon, to tell the capture's own cost",
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

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
2. decode      ``ingest.otlp.decode_protobuf`` (the collector's receive stage:
               the C decoder when built), beside ``decode_protobuf_upb`` (the
               upb reference it falls back to);
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
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path, where this file would
# shadow the project's ``ingest`` package: import from the project root instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The stages live in sibling modules (bodies, in-process stages, the collector
# process, the end-to-end clients, the report); their names stay importable here.
from bench.harness import Deadline, PySpy, log  # noqa: E402
from bench.ingest_bodies import _kv, build_bodies  # noqa: E402
from bench.ingest_collector import (  # noqa: E402
    Collector,
    children_cpu_seconds,
    collector_command,
    cpu_by_thread_name,
    thread_cpu,
)
from bench.ingest_e2e import (  # noqa: E402
    GRPC_EXPORT,
    ROWS_PER_SPAN,
    TARGET_SPANS_PER_S,
    RefusedBusy,
    bench_collector,
    grpc_sender,
    http_sender,
    send_all,
    verify_calls,
)
from bench.ingest_report import fmt_rate, machine, print_table  # noqa: E402
from bench.ingest_stages import (  # noqa: E402
    STAGES,
    bench_decode,
    bench_pipeline,
    bench_raw_parse,
    native_decoder_built,
    pipeline_config,
    profile_in_process,
    rate,
    stage_timers,
)
from bench.spans import ATTRIBUTES_PER_SPAN, CHOICES  # noqa: E402

__all__ = [
    "GRPC_EXPORT",
    "ROWS_PER_SPAN",
    "STAGES",
    "TARGET_SPANS_PER_S",
    "Collector",
    "Deadline",
    "PySpy",
    "RefusedBusy",
    "_kv",
    "bench_collector",
    "bench_decode",
    "bench_pipeline",
    "bench_raw_parse",
    "build_bodies",
    "children_cpu_seconds",
    "collector_command",
    "cpu_by_thread_name",
    "fmt_rate",
    "grpc_sender",
    "http_sender",
    "log",
    "machine",
    "main",
    "parse_args",
    "pipeline_config",
    "print_table",
    "profile_in_process",
    "rate",
    "run",
    "send_all",
    "stage_timers",
    "thread_cpu",
    "verify_calls",
]


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
    log("decode_protobuf (upb reference) ...")
    n, upb_s = bench_decode(bodies, reference=True)
    assert n == args.spans, f"decode_protobuf_upb kept {n} of {args.spans} spans"
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
        "native_decoder": native_decoder_built(),
        "seconds": {
            "raw_parse": raw_s,
            "decode_upb": upb_s,
            "decode": decode_s,
            "pipeline": pipeline_s,
        },
        "pipeline_rows": rows,
        "pipeline_stages_s": stages,
    }
    rates: dict[str, float | None] = {
        "raw_parse": rate(args.spans, raw_s),
        "decode_upb": rate(args.spans, upb_s),
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

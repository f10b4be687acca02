"""bench/ingest.py's text report: the rates table, the collector's figures, the machine."""

from __future__ import annotations

from typing import Any

from bench.harness import machine_basics
from bench.ingest_e2e import TARGET_SPANS_PER_S
from bench.spans import ATTRIBUTES_PER_SPAN


def machine() -> dict[str, Any]:
    try:
        from google.protobuf.internal import api_implementation

        backend = api_implementation.Type()
    except Exception:  # noqa: BLE001 - informational only
        backend = "unknown"
    return {**machine_basics(), "protobuf_backend": backend}


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
        ("decode_protobuf_upb (reference)", r.get("decode_upb")),
        (
            "decode_protobuf (C decoder)" if result.get("native_decoder") else "decode_protobuf",
            r["decode"],
        ),
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

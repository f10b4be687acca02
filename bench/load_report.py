"""bench/load.py's numbers: latency statistics, the pass/fail reasons, the text report."""

from __future__ import annotations

from typing import Any

from bench.proxy import percentile
from demo.loadgen import LoadReport


def stats_ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50_ms": percentile(ordered, 0.5),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else None,
        "count": len(ordered),
    }


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def quotient(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def cpu_per_call(
    cpu_percent: dict[str, float | None],
    proxies: int,
    merged: LoadReport,
    baseline: LoadReport | None,
    duration: float,
) -> dict[str, float | None]:
    """CPU ms per call of each process: each proxy over its share of the proxied
    calls, the collector over the proxied calls, the simulator and this process
    (load generator) over all calls including the direct baseline; "all" is the
    whole stack's CPU over the proxied calls. The collector and the generator also
    carry the OTLP spans, which are not counted as calls."""
    proxied = len(merged.latencies_ms) / duration if duration else 0.0
    every = proxied + (len(baseline.latencies_ms) / duration if baseline and duration else 0.0)
    out: dict[str, float | None] = {}
    total = 0.0
    for name, percent in cpu_percent.items():
        if name.startswith("proxy-"):
            rate = proxied / proxies
        else:
            rate = proxied if name == "collector" else every
        if percent is None or rate <= 0:
            out[name] = None
            continue
        out[name] = round(percent * 10 / rate, 2)
        total += 0.0 if "." in name else percent
    out["all"] = round(total * 10 / proxied, 2) if proxied else None
    return out


def problems(result: dict[str, Any]) -> list[str]:
    """Why the run failed (empty: it passed)."""
    found: list[str] = []
    for what, check in result.get("zero_loss", {}).items():
        if not check["ok"]:
            found.append(
                f"{what}: {check['missing']} of {check['expected']} missing from llm_calls, "
                f"{check['duplicated']} stored more than once "
                f"(e.g. {check['missing_examples'][:2] + check['duplicated_examples'][:2]})"
            )
    t = result.get("throughput", {})
    if t.get("failed"):
        found.append(f"{t['failed']} calls failed at the client, e.g. {t['failed_examples'][:2]}")
    if t.get("spans_failed"):
        found.append(f"{t['spans_failed']} spans were not acknowledged by the collector")
    large = result.get("large", {})
    if large.get("streams_ok") != large.get("streams_sent"):
        found.append(f"{large['streams_ok']} of {large['streams_sent']} large streams completed")
    if large.get("span_batches_ok") != large.get("span_batches_sent"):
        found.append(
            f"{large['span_batches_ok']} of {large['span_batches_sent']} large span batches "
            "were acknowledged"
        )
    memory = result.get("memory", {})
    for name, within in memory.get("within_bound", {}).items():
        if not within:
            found.append(
                f"{name} peaked at {memory['peak_anon_mb'][name]:.0f} MB of private memory"
                f" (RSS minus mapped files), above the {memory['bound_mb']} MB bound"
            )
    return found


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_report(r: dict[str, Any]) -> None:
    c, t, lat = r["config"], r["throughput"], r["latency"]
    print(
        f"Tokentrail load: {c['seconds']:g} s at {c['rate']:g} calls/s "
        f"({100 * c['stream_share']:.0f} % streamed) through {c['proxies']} proxy worker(s), "
        f"{c['span_rate']:g} spans/s; direct baseline at {c['baseline_rate']:g} calls/s; "
        f"{c.get('client', 'sdk')} client"
    )
    print(
        f"throughput   sent {t['sent']:,} ({fmt(t['sent_per_s'])}/s), ok {t['ok']:,} "
        f"({fmt(t['ok_per_s'])}/s of {t['target_per_s']:g}), failed {t['failed']}; "
        f"schedule lag max {fmt(t['max_schedule_lag_ms'], 0)} ms"
    )
    print(
        f"spans        ok {t['spans_ok']:,} ({fmt(t['spans_per_s'])}/s scheduled, plus the large "
        f"batches), failed {t['spans_failed']}"
    )
    print(f"{'latency ms':<13}{'p50':>9}{'p99':>9}{'max':>9}")
    for label, s in (("via proxy", lat["via_proxy"]), ("direct", lat["direct"])):
        print(f"  {label:<11}{fmt(s['p50_ms']):>9}{fmt(s['p99_ms']):>9}{fmt(s['max_ms']):>9}")
    print(
        f"  {'added':<11}{fmt(lat['added_p50_ms']):>9}{fmt(lat['added_p99_ms']):>9}"
        f"   (via/direct x{fmt(lat['ratio_p50'], 2)} p50, x{fmt(lat['ratio_p99'], 2)} p99)"
    )
    g = r["large"]
    print(
        f"large        {g['streams_ok']}/{g['streams_sent']} streams of {g['stream_mb_each']:g} MB "
        f"(p50 {fmt(g['stream_ms']['p50_ms'], 0)} ms); {g['span_batches_ok']}/"
        f"{g['span_batches_sent']} OTLP requests of {g['spans_per_batch']:,} spans acknowledged"
    )
    m = r["memory"]
    print(
        "peak RSS MB  "
        + ", ".join(f"{k} {v:,.0f}" for k, v in m["peak_rss_mb"].items())
        + f"  (bound {m['bound_mb']:g} MB of private memory for collector and proxies: "
        + ("within" if all(m["within_bound"].values()) else "EXCEEDED")
        + ")"
    )
    at = m.get("peak_anon_at_s", {})
    print(
        "  anonymous  "
        + ", ".join(f"{k} {v:,.0f} (at {at.get(k, 0):.0f} s)" for k, v in m["peak_anon_mb"].items())
        + f"  (the load ran {c['seconds']:g} s)"
    )
    print("CPU %        " + ", ".join(f"{k} {fmt(v, 0)}" for k, v in r["cpu_percent"].items()))
    print(
        "CPU ms/call  "
        + ", ".join(f"{k} {fmt(v, 2)}" for k, v in r["cpu_ms_per_call"].items())
        + "  (proxies and collector per proxied call; simulator and generator per call"
        " incl. the direct baseline; all: the whole stack per proxied call)"
    )
    spool = r["spool"]
    series = " ".join(f"{sum(p['bytes'].values()) // 1024}" for p in spool["timeline"])
    print(f"spool KiB    every 10 s: {series or '-'}; peak {spool['peak_bytes']}")
    for what, z in r["zero_loss"].items():
        print(
            f"zero loss    {what}: {z['stored_once']:,} of {z['expected']:,} stored exactly once, "
            f"{z['missing']} missing, {z['duplicated']} duplicated"
        )
    d = r["drain"]
    print(f"drain        {d['drain_s']:.1f} s after the load stopped; stored {d['stored']}")
    for name, line in r["proxy_stats"].items():
        print(f"{name} stats {line or '(no stats line yet: the proxy logs one a minute)'}")
    mm = r["machine"]
    print(
        f"machine      {mm['nproc']} CPUs, {mm['cpu_model']}, load avg {mm['load_avg_1m']:.2f} "
        f"at start, {r['load_avg_1m_end']:.2f} at end; wall {r['wall_s']:.0f} s"
    )

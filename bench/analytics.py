"""Analytics at scale: 10 million calls, a full job run, an incremental run, the spend API.

Run:  uv run python bench/analytics.py [--calls N] [--days D] [--json]

1. generates N calls (default 10,000,000) over the last D days (default 30)
   straight into a temporary embedded store, in ClickHouse SQL (``numbers()``
   and hash functions, no Python rows): eight teams, 400 users, apps and
   routes with three candidate models each, real list prices, prompt-cache
   reads and writes, gateway cache hits, repeated and nearly repeated
   questions, 2% errors (429, 5xx, timeouts), a 30-minute outage of one
   model, SDK retries and fallbacks to another model in the same trace;
2. times a full run of every job (``JobRunner.run(full=True)``);
3. adds the calls of one more hour, ingested now, and times an incremental
   run of every job (only the windows with new calls are recomputed);
4. starts a real collector on the store and times ``GET /api/v1/spend`` for
   a 30-day breakdown by team (first call and median of five).

Targets on the 2-core reference machine: full run under 60 s, incremental
under 5 s, spend API under 1 s. Timings are printed, never asserted; the
script exits non-zero only when a job fails or the spend API disagrees with
the sum of the generated costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path, where this file would
# shadow the project's ``analytics`` package: import from the project root instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().as_posix() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from analytics.config import AnalyticsConfig, Budget, RouteSpec  # noqa: E402
from analytics.runner import JobRunner  # noqa: E402
from bench.procfs import free_port  # noqa: E402
from collector.routers.finance import spend_query  # noqa: E402
from ingest.pricing import PriceBook, price_call  # noqa: E402
from ingest.store import ChdbStore, query_rows  # noqa: E402

TARGET_FULL_S = 60.0
TARGET_INCREMENTAL_S = 5.0
TARGET_SPEND_S = 1.0

MODELS = (  # (provider, model, typical latency ms)
    ("openai", "gpt-4o-mini", 900),
    ("openai", "gpt-4o", 1800),
    ("anthropic", "claude-3-5-haiku-latest", 1100),
    ("anthropic", "claude-sonnet-4-0", 2600),
    ("google", "gemini-2.0-flash", 700),
    ("mistral", "mistral-small-latest", 800),
)
TEAMS = ("payments", "search", "support", "growth", "risk", "platform", "data", "mobile")
ROUTES = ("chat", "summarize", "classify", "extract", "rag", "code")
# Each route's three candidates (indexes into MODELS), used 60/30/10.
ROUTE_MODELS = ((0, 2, 4), (0, 3, 5), (4, 0, 2), (2, 0, 5), (1, 3, 4), (3, 1, 0))
OUTAGE_MODEL = 2  # claude-3-5-haiku fails for 30 minutes three days ago
VOCABULARY = (
    "account invoice refund password reset export report dashboard budget team project "
    "user api key limit error timeout latency region billing plan upgrade downgrade cancel "
    "order shipping delivery address payment card bank transfer tax receipt summary weekly "
    "monthly daily chart query filter search index document policy contract renewal trial "
    "discount coupon support ticket escalation priority customer agent model prompt cache "
    "token cost spend forecast alert webhook integration slack email phone schedule meeting"
).split()

# Every value is computed from the row number with hash functions: the same
# N gives the same calls. Follow-ups (number % 50 = 1) repeat the request of
# the row before, a failure, 2 s later: half as an SDK retry of the same
# model, half as a fallback to the route's next model.
GENERATE_SQL = """
INSERT INTO llm_calls (ts, trace_id, span_id, source, provider, operation, request_model,
    response_model, http_status, status, error_type, is_stream, duration_ms, ttft_ms,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    cost_usd, cost_source, price_version, team, project, user_id, app, route,
    api_key_fingerprint, attempt, retry_of, gateway_cache, request_hash, input_content,
    attributes {ingested_column})
SELECT ts, trace_id, span_id, 'proxy', provider, 'chat', model, if(failed, '', model),
    http_status, if(failed, 'error', 'ok'), error_type, stream, duration_ms,
    if(stream, duration_ms * 0.3, NULL), input_tokens, if(failed, 0, output_tokens),
    if(failed, 0, cache_read), if(failed, 0, cache_write), 0,
    if(failed, toDecimal128(0, 12),
       toDecimal128(input_tokens - cache_read - cache_write, 0) * price_in
       + toDecimal128(cache_read, 0) * price_read + toDecimal128(cache_write, 0) * price_write
       + toDecimal128(output_tokens, 0) * price_out),
    'genai-prices', 'bench', team, concat(team, '-', ['core', 'web', 'ml'][u % 3 + 1]),
    concat('user-', toString(u)), app, route, lower(hex(cityHash64(team, 'key'))),
    if(retry, 1, 0), if(retry, lower(hex(cityHash64(base, 'span'))), ''),
    ['hit', 'miss', 'miss', 'miss', 'miss', '', '', '', '', '', '', '', '', '', '', ''][
        cityHash64(base, 'gw') % 16 + 1],
    lower(hex(cityHash64(provider, model, content))), content,
    map('tokentrail.tag.feature', ['search', 'support', 'onboarding', 'billing'][u % 4 + 1],
        'tokentrail.tags', ['beta', 'prod', 'prod,beta'][cityHash64(base, 'tag') % 3 + 1])
    {ingested_value}
FROM (
    SELECT number + {seed:UInt64} AS n,
        toUInt64(if(n % 50 = 1, n - 1, n)) AS base,
        n % 50 = 1 AS follow_up,
        follow_up AND base % 4 < 2 AS retry,
        cityHash64(base, 'user') % 400 AS u,
        {teams:Array(String)}[u % 8 + 1] AS team,
        concat(team, '-', ['bot', 'api'][intDiv(u, 8) % 2 + 1]) AS app,
        cityHash64(u, 'route') % 2 + (u % 8) % 5 AS route_index,
        {routes:Array(String)}[route_index + 1] AS route,
        cityHash64(base, 'pick') % 10 AS pick,
        {route_models:Array(Array(UInt8))}[route_index + 1] AS candidates,
        candidates[if(follow_up AND NOT retry, if(pick < 6, 2, 1),
                      if(pick < 6, 1, if(pick < 9, 2, 3)))] AS m,
        {providers:Array(String)}[m + 1] AS provider,
        {models:Array(String)}[m + 1] AS model,
        {start:DateTime64(6)} + toIntervalMicrosecond(
            cityHash64(base, 'ts') % {span_us:UInt64} + if(follow_up, 2000000, 0)) AS ts,
        lower(hex(cityHash64(base, 'trace'))) AS trace_id,
        lower(hex(cityHash64(n, 'span'))) AS span_id,
        cityHash64(base, 'faq') % 4 = 0 AS faq,
        if(faq,
           concat(arrayStringConcat(arrayMap(i -> {vocab:Array(String)}[
               cityHash64(cityHash64(base, 'q') % 300, i) % length({vocab:Array(String)}) + 1],
               range(9)), ' '),
               ['', ' please', ' thanks', '?'][cityHash64(base, 'v') % 4 + 1]),
           arrayStringConcat(arrayMap(i -> {vocab:Array(String)}[
               cityHash64(base, i) % length({vocab:Array(String)}) + 1], range(14)), ' '))
            AS question,
        concat('[{"role":"system","content":"You are the ', app, ' assistant."},',
               '{"role":"user","content":"', question, '"}]') AS content,
        ts >= {outage_start:DateTime64(6)} AND ts < {outage_end:DateTime64(6)}
            AND m = {outage_model:UInt8} AS in_outage,
        (n % 50 = 0) OR if(in_outage, cityHash64(n, 'err') % 100 < 85,
                           NOT follow_up AND cityHash64(n, 'err') % 100 < 2) AS failed,
        cityHash64(n, 'class') % 5 AS error_kind,
        if(failed, [429, 429, 500, 503, 504][error_kind + 1], 200) AS http_status,
        if(failed, ['rate_limit_error', 'rate_limit_error', 'server_error', 'overloaded_error',
                    'timeout'][error_kind + 1], '') AS error_type,
        cityHash64(base, 'stream') % 2 = 0 AS stream,
        {latency:Array(UInt32)}[m + 1] * (0.5 + (cityHash64(n, 'lat') % 1000) / 1000.0)
            AS duration_ms,
        if(faq, 150 + cityHash64(base, 'in') % 250, 300 + cityHash64(base, 'in') % 2200)
            AS input_tokens,
        40 + cityHash64(n, 'out') % 560 AS output_tokens,
        if(cityHash64(base, 'cache') % 20 < 7, intDiv(input_tokens, 2), 0) AS cache_read,
        if(provider = 'anthropic' AND cache_read = 0 AND cityHash64(base, 'cw') % 10 = 0,
           intDiv(input_tokens, 4), 0) AS cache_write,
        toDecimal128({price_in:Array(String)}[m + 1], 12) AS price_in,
        toDecimal128({price_read:Array(String)}[m + 1], 12) AS price_read,
        toDecimal128({price_write:Array(String)}[m + 1], 12) AS price_write,
        toDecimal128({price_out:Array(String)}[m + 1], 12) AS price_out
    FROM numbers({count:UInt64})
)
"""


def per_token_prices(book: PriceBook) -> dict[str, list[str]]:
    """List price per token of each model's input, cache read, cache write, output."""
    million = 1_000_000
    prices: dict[str, list[str]] = {"in": [], "read": [], "write": [], "out": []}
    for provider, model, _ in MODELS:

        def cost(provider: str = provider, model: str = model, **usage: int) -> Decimal:
            found = price_call(book, provider, model, {"output_tokens": 0, **usage}).cost_usd
            if found is None:
                raise SystemExit(f"genai-prices has no price for {provider}/{model}")
            return found

        prices["in"].append(str(cost(input_tokens=million) / million))
        prices["read"].append(str(cost(input_tokens=million, cache_read_tokens=million) / million))
        prices["write"].append(
            str(cost(input_tokens=million, cache_write_tokens=million) / million)
        )
        prices["out"].append(str((cost(input_tokens=0, output_tokens=million)) / million))
    return prices


def generate(
    store: ChdbStore,
    count: int,
    start: datetime,
    end: datetime,
    seed: int,
    prices: dict[str, list[str]],
    ingested_now: bool,
) -> None:
    outage_start = (end - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    # Historic calls were ingested a second after they happened.
    sql = GENERATE_SQL.replace(
        "{ingested_column}", "" if ingested_now else ", ingested_at"
    ).replace(
        "{ingested_value}",
        "" if ingested_now else ", least(ts + toIntervalSecond(1), now64(3))",
    )
    store.command(
        sql,
        {
            "seed": seed,
            "count": count,
            "teams": list(TEAMS),
            "routes": list(ROUTES),
            "route_models": [list(r) for r in ROUTE_MODELS],
            "providers": [p for p, _, _ in MODELS],
            "models": [m for _, m, _ in MODELS],
            "latency": [ms for _, _, ms in MODELS],
            "vocab": VOCABULARY,
            "start": start,
            "span_us": max(int((end - start).total_seconds() * 1e6) - 2_000_000, 1),
            "outage_start": outage_start,
            "outage_end": outage_start + timedelta(minutes=30),
            "outage_model": OUTAGE_MODEL,
            "price_in": prices["in"],
            "price_read": prices["read"],
            "price_write": prices["write"],
            "price_out": prices["out"],
        },
    )


def bench_config() -> AnalyticsConfig:
    return AnalyticsConfig(
        budgets=tuple(Budget(f"team={t}", Decimal(2000), team=t) for t in TEAMS[:4])
        + (Budget("user=user-7", Decimal(20), user_id="user-7"),),
        routes=(
            RouteSpec("chat", "cost", tuple((MODELS[i][0], MODELS[i][1]) for i in ROUTE_MODELS[0])),
        ),
    )


def cpu_seconds() -> float:
    """This process's CPU time: chDB runs in it, so this is what the jobs cost,
    whatever else the (shared) machine is doing."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(runner: JobRunner, full: bool) -> dict[str, Any]:
    """The incremental run is exactly what the collector's scheduler runs every few
    minutes (so the hourly duplicate report is skipped while fresh)."""
    started, cpu = time.perf_counter(), cpu_seconds()
    results = runner.run(full=full, trigger="bench" if full else "schedule")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(cpu_seconds() - cpu, 2),
        "jobs": {
            r["job"]: {
                "status": r["status"],
                "seconds": round(r["duration_ms"] / 1000, 2),
                "windows": r["windows"],
                "rows": r["rows_written"],
                "error": r["error"],
                "skipped": r["details"].get("skipped", ""),
            }
            for r in results
        },
    }


class Collector:
    """A real ``tokentrail serve`` on the bench's data dir: it owns the schema (it
    runs the migrations and sets the TTLs exactly as in production) and serves
    the spend API. Its scheduler is off, so only the timed runs run jobs, and
    content is kept (no TTL merges competing with the timed work)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
        env.update(
            {
                "TOKENTRAIL_JOBS_INTERVAL_MINUTES": "0",
                "TOKENTRAIL_CONTENT_TTL_DAYS": "0",
                "TOKENTRAIL_GRPC_PORT": "0",
            }
        )
        self.log = (data_dir.parent / "collector.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokentrail.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the collector did not start; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def dashboard_queries(start: datetime, now: datetime) -> list[tuple[str, str, dict[str, str]]]:
    """(label, path, params) of what the dashboards' pages ask for, over the whole range."""
    span = {"from": start.isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}
    day = {"from": (now - timedelta(days=1)).isoformat(), "to": span["to"]}
    return [
        ("spend: 30 days by team", "/api/v1/spend", {**span, "group_by": "team"}),
        (
            "cost: 30 days by day and model",
            "/api/v1/metrics/cost",
            {**span, "group_by": "model", "granularity": "day"},
        ),
        ("calls: newest 50", "/api/v1/calls", {"limit": "50"}),
        ("traces: newest 50", "/api/v1/traces", {**day, "limit": "50"}),
        ("failover: last 24 h", "/api/v1/metrics/failover", day),
        ("cache: last 24 h", "/api/v1/metrics/cache", day),
        ("budgets", "/api/v1/budgets", {}),
        ("routing weights", "/api/v1/routing/weights", {}),
    ]


def time_spend_api(data_dir: Path, start: datetime) -> dict[str, Any]:
    """Start a real collector on the store; time the 30-day team breakdown and
    the other queries the dashboards make (median of 5 after a first call)."""
    collector = Collector(data_dir)
    try:
        url = collector.url
        headers = {"Authorization": f"Bearer {(data_dir / 'admin.key').read_text().strip()}"}
        queries: dict[str, dict[str, float]] = {}
        answers: dict[str, Any] = {}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            for label, path, params in dashboard_queries(start, datetime.now(UTC)):
                timings = []
                for _ in range(6):
                    started = time.perf_counter()
                    response = client.get(path, params=params)
                    timings.append(time.perf_counter() - started)
                    response.raise_for_status()
                answers[label] = response.json()
                queries[label] = {
                    "first_s": round(timings[0], 3),
                    "median_s": round(statistics.median(timings[1:]), 3),
                }
        spend = queries["spend: 30 days by team"]
        rows = answers["spend: 30 days by team"]["rows"]
        return {
            **spend,
            "teams": len(rows),
            "calls": sum(r["calls"] for r in rows),
            "cost_usd": sum(Decimal(str(r["cost_usd"])) for r in rows),
            "dashboard_queries": queries,
        }
    finally:
        collector.stop()


def time_raw_spend(store: ChdbStore, start: datetime) -> float:
    """The same breakdown summed from every raw call (what the API does without
    the cost_hourly rollup), for comparison: median of three, in seconds."""
    params: dict[str, Any] = {"start": start, "end": datetime.now(UTC) + timedelta(minutes=1)}
    params |= {"team": "", "project": ""}
    sql = spend_query(["team"], None, params)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        store.query_arrow(sql, params)
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings), 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="tt-bench-analytics-"))
    data_dir = workdir / "data"
    try:
        Collector(data_dir).stop()  # creates the schema as production does
        store = ChdbStore(data_dir / "chdb")
        prices = per_token_prices(PriceBook())
        start = datetime.now(UTC) - timedelta(days=args.days)
        end = datetime.now(UTC) - timedelta(hours=1)
        started = time.perf_counter()
        generate(store, args.calls, start, end, 0, prices, ingested_now=False)
        generated_s = time.perf_counter() - started
        # Thirty days of calls arrive over thirty days, and ClickHouse merges their
        # parts as they come; one bulk insert leaves merging to do. Do it now, so
        # the timed runs do not share the CPU with merges of the setup.
        started = time.perf_counter()
        store.command("OPTIMIZE TABLE llm_calls FINAL")
        settled_s = time.perf_counter() - started

        runner = JobRunner(store, bench_config(), PriceBook())
        full = timed_run(runner, full=True)
        hour_calls = max(args.calls // (args.days * 24), 1)
        generate(store, hour_calls, end, datetime.now(UTC), args.calls, prices, ingested_now=True)
        incremental = timed_run(runner, full=False)
        totals = query_rows(store, "SELECT count() AS calls, sum(cost_usd) AS cost FROM llm_calls")
        raw_spend = time_raw_spend(store, start)
        store.close()
        spend = time_spend_api(data_dir, start)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    expected_cost = totals[0]["cost"]
    ok = (
        all(j["status"] == "ok" for j in full["jobs"].values())
        and all(j["status"] == "ok" for j in incremental["jobs"].values())
        and spend["calls"] == totals[0]["calls"]
        # JSON carries costs as numbers (floats): equal to a millionth of a cent.
        and abs(spend["cost_usd"] - expected_cost) < Decimal("0.00000001")
    )
    return {
        "ok": ok,
        "config": {"calls": args.calls, "days": args.days, "incremental_calls": hour_calls},
        "generate_s": round(generated_s, 1),
        "merge_s": round(settled_s, 1),
        "cpus": os.cpu_count(),
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "full_run": full,
        "incremental_run": incremental,
        "spend_api": {**spend, "cost_usd": float(spend["cost_usd"]), "raw_calls_s": raw_spend},
        "expected_cost_usd": float(expected_cost),
        "targets": {
            "full_run_s": TARGET_FULL_S,
            "incremental_run_s": TARGET_INCREMENTAL_S,
            "spend_api_s": TARGET_SPEND_S,
        },
        "met": {
            "full_run": full["seconds"] < TARGET_FULL_S,
            "incremental_run": incremental["seconds"] < TARGET_INCREMENTAL_S,
            "spend_api": spend["median_s"] < TARGET_SPEND_S,
        },
    }


def report(result: dict[str, Any]) -> str:
    c = result["config"]
    load = result["load_average"]
    lines = [
        f"generated {c['calls']:,} calls over {c['days']} days in {result['generate_s']} s"
        f" (and merged their parts in {result['merge_s']} s)",
        f"{result['cpus']} CPUs; load average {load['start']:.1f} at start, "
        f"{load['end']:.1f} at end (other processes slow the wall-clock times; "
        "CPU seconds are this process's own)",
        "",
        f"{'run':<14}{'seconds':>9}{'cpu s':>8}  target   per job (seconds)",
    ]
    for label, key, target in (
        ("full", "full_run", TARGET_FULL_S),
        ("incremental", "incremental_run", TARGET_INCREMENTAL_S),
    ):
        run_result = result[key]
        jobs = ", ".join(
            f"{n} {'fresh, skipped' if j['skipped'] else j['seconds']}"
            for n, j in run_result["jobs"].items()
        )
        met = "met" if result["met"][key] else "MISSED"
        lines.append(
            f"{label:<14}{run_result['seconds']:>9}{run_result['cpu_seconds']:>8}"
            f"  <{target:<4} {met}  {jobs}"
        )
    spend = result["spend_api"]
    met = "met" if result["met"]["spend_api"] else "MISSED"
    lines += [
        f"{'spend API':<14}{spend['median_s']:>9}{'':>8}  <{TARGET_SPEND_S:<4} {met}  "
        f"(first call {spend['first_s']} s; {c['days']} days by team, {spend['teams']} rows; "
        f"the same summed from raw calls, without the rollup: {spend['raw_calls_s']} s)",
        "",
        f"dashboard queries at {c['calls'] + c['incremental_calls']:,} calls "
        "(median of 5 after a first call, seconds):",
        *(
            f"  {label:<34}{q['median_s']:>8}  (first {q['first_s']})"
            for label, q in spend["dashboard_queries"].items()
        ),
        f"spend API total ${spend['cost_usd']:,.2f}"
        f" vs generated ${result['expected_cost_usd']:,.2f}",
        "ok" if result["ok"] else "FAILED: a job failed or the totals disagree",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=10_000_000, help="calls to generate")
    p.add_argument("--days", type=int, default=30, help="days they span")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary store")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, default=str, indent=2) if args.json else report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

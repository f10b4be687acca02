"""Faults under load: kill -9 of the collector and of the proxy, a slow and then
failing store, and a proxy spool filled to its bound.

Each scenario runs the load generator (25 model calls/s through the real proxy
over TLS, 200 OTLP spans/s to the real collector) for 30-40 s, injects its
fault, waits until the store settles, prints one summary line (``-s`` shows
it; pytest shows it with a failure) and asserts: every call and every span the
clients saw succeed is in ``llm_calls`` exactly once (in (d), bar the calls
the spool bound dropped, which must be exactly the proxy's own count), and no
client saw an error.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.harness import MakeStack, Stack, Tally, settle, wait_proxy_quiet

# The load generator's Anthropic model is old enough for the SDK to warn on every call.
pytestmark = pytest.mark.filterwarnings("ignore:The model:DeprecationWarning")


def assert_exactly_once(tally: Tally, *, spans_sent: bool = True) -> None:
    tally.show()
    report = tally.report
    assert report.ok_response_ids and (report.ok_span_ids or not spans_sent), tally.details()
    assert report.failed_calls == [] and report.failed_spans == 0, tally.details()
    assert not tally.calls_duplicated and not tally.spans_duplicated, tally.details()
    assert tally.duplicated_rows == 0, tally.details()
    assert not tally.spans_missing, tally.details()
    assert tally.unseen_rows <= tally.unseen_attempts, tally.details()  # no phantom rows
    if not tally.dropped_calls:
        assert not tally.calls_missing, tally.details()


@pytest.mark.timeout(300)
def test_collector_kill9_and_restart(make_stack: MakeStack) -> None:
    stack = make_stack()
    load = stack.load("fault-a")
    load.start()
    try:
        time.sleep(9)
        # A slow store first, so the kill finds accepted rows still only in the WAL.
        stack.set_faults({"store_delay_seconds": 0.5})
        time.sleep(1)
        stack.collector.stop(sig=signal.SIGKILL)
        stack.set_faults({})
        down_at = time.monotonic()
        stack.collector.start()  # same data dir, same port
        restart_s = time.monotonic() - down_at
        time.sleep(20)
    finally:
        report = load.stop()
    rows = settle(stack, "fault-a")
    notes = {
        "restart_s": round(restart_s, 1),
        "wal_records_replayed": int(stack.metric("tokentrail_wal_replayed_total")),
    }
    tally = Tally("a: collector kill -9", report, rows, stack.upstream_attempts(), notes=notes)
    assert notes["wal_records_replayed"] > 0, tally.details()  # the restart replayed the WAL
    assert_exactly_once(tally)


@pytest.mark.timeout(300)
def test_proxy_kill9_and_restart(make_stack: MakeStack) -> None:
    stack = make_stack()
    # Each answer waits 400 ms upstream, so about ten calls are in flight at the kill.
    load = stack.load("fault-b", response_delay_ms=400)
    load.start()
    try:
        time.sleep(10)
        in_flight = load.report().in_flight
        fault_at = time.time()
        stack.proxy.stop(sig=signal.SIGKILL)
        down_at = time.monotonic()
        stack.proxy.start()  # same data dir, same port: the SDKs' retries reach it
        restart_s = time.monotonic() - down_at
        time.sleep(20)
    finally:
        report = load.stop()
    rows = settle(stack, "fault-b")
    notes = {"in_flight_at_kill": in_flight, "restart_s": round(restart_s, 1)}
    tally = Tally("b: proxy kill -9", report, rows, stack.upstream_attempts(), notes=notes)
    if tally.calls_missing:  # for the failure message: were they cut by the kill?
        notes["missing_calls_at"] = stack.where_calls(tally.calls_missing[:5], fault_at)
    assert in_flight > 0, tally.details()
    assert_exactly_once(tally)


def peak_queued_rows(stack: Stack, seconds: float) -> int:
    """Poll /healthz while a fault is on: the most rows that waited for the store."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, stack.health()["writer"]["queued_rows"])
        time.sleep(0.5)
    return peak


@pytest.mark.timeout(300)
def test_store_slow_then_failing_then_recovered(make_stack: MakeStack) -> None:
    # A small queue, so the failing store also drives the collector to 503 + Retry-After
    # (not smaller: one OTLP request of the load generator is up to ~1000 rows).
    stack = make_stack(TOKENTRAIL_QUEUE_MAX_ROWS="3000")
    load = stack.load("fault-c")
    load.start()
    try:
        time.sleep(5)
        stack.set_faults({"store_delay_seconds": 2.0})
        slow_peak = peak_queued_rows(stack, 12)
        stack.set_faults({"store_fail": True})
        failing_peak = peak_queued_rows(stack, 10)
        stack.set_faults({})
        time.sleep(13)
    finally:
        report = load.stop()
    rows = settle(stack, "fault-c")
    writer = stack.health()["writer"]
    notes = {
        "slow_peak_queued_rows": slow_peak,
        "failing_peak_queued_rows": failing_peak,
        "store_failures": writer["store_failures"],
        "busy_503s": int(stack.metric("tokentrail_busy_refusals_total")),
    }
    tally = Tally("c: store slow, failing", report, rows, stack.upstream_attempts(), notes=notes)
    assert writer["store_failures"] > 0, tally.details()  # the fault really was injected
    assert notes["busy_503s"] > 0, tally.details()  # and the 503 path was taken
    assert_exactly_once(tally)


def dropped_calls(stack: Stack) -> int:
    lines = stack.proxy.stats_lines()
    return lines[-1].get("dropped_calls", 0) if lines else 0


@pytest.mark.timeout(300)
def test_proxy_spool_full_drops_only_what_it_counts(make_stack: MakeStack) -> None:
    # Spans go straight to the collector, which is stopped here: model calls only.
    stack = make_stack(spool_max_mb=1)
    # Longer answers (captured as content) fill the 1 MiB spool in about 20 s.
    load = stack.load("fault-d", spans_per_second=0, output_tokens=256)
    load.start()
    try:
        time.sleep(3)
        stack.collector.stop()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not dropped_calls(stack):
            time.sleep(0.5)
        time.sleep(5)  # keep dropping for a while
    finally:
        report = load.stop()
    # Calls still journaled when the load stopped are exported (or dropped) after it.
    wait_proxy_quiet(stack.proxy)
    dropped_while_down = dropped_calls(stack)
    stack.collector.start()
    rows = settle(stack, "fault-d")
    stats = stack.proxy.stats_lines()[-1]  # after settling: the proxy's final counts
    assert "dropped_calls" in stats, f"the proxy's stats line has no dropped_calls: {stats}"
    notes = {k: v for k, v in stats.items() if k in ("journaled", "captured", "sent", "dropped")}
    notes["dropped_calls_before_restart"] = dropped_while_down
    tally = Tally(
        "d: proxy spool full",
        report,
        rows,
        stack.upstream_attempts(),
        dropped_calls=stats["dropped_calls"],
        notes=notes,
    )
    assert tally.dropped_calls > 0, tally.details()
    assert_exactly_once(tally, spans_sent=False)
    # The spool dropped the calls the clients saw succeed and are not stored, plus
    # the attempts the SDKs retried that are not stored either: nothing else.
    unseen_dropped = tally.unseen_attempts - tally.unseen_rows
    assert tally.dropped_calls == len(tally.calls_missing) + unseen_dropped, tally.details()

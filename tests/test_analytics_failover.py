"""Errors by class, retries, fallback chains and outages, on hand-made frames."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl
import pytest

from analytics.chains import chain_links, chains
from analytics.failover import failover_windows, outages
from tests.test_analytics_frames import at, calls

WINDOW_S = 120
FAIL = {"status": "error", "http_status": 503, "error_type": "overloaded_error", "cost_usd": None}
CLAUDE = {"provider": "anthropic", "request_model": "claude-3-5-haiku-latest", "response_model": ""}


def windows_of(*rows: dict) -> tuple[dict, pl.DataFrame]:
    frame = calls(*rows)
    found, paths = failover_windows(frame, frame, WINDOW_S)
    by_key = {
        (r["window_start"], r["provider"], r["model"]): r
        for r in found.collect().iter_rows(named=True)
    }
    return by_key, paths.collect()


def test_errors_by_class_and_what_failed_attempts_cost() -> None:
    found, _ = windows_of(
        *[{"ts": at(0.1 * i)} for i in range(5)],
        {"ts": at(1), "status": "error", "http_status": 429, "error_type": "rate_limit_error"},
        {
            "ts": at(1.5),
            "status": "error",
            "http_status": 429,
            "input_tokens": 300,
            "cost_usd": Decimal("0.002"),
        },
        {
            "ts": at(2),
            "status": "error",
            "http_status": 500,
            "error_type": "server_error",
            "output_tokens": 7,
        },
        {
            "ts": at(3),
            "status": "error",
            "http_status": 0,
            "error_type": "timeout",
            "cost_usd": None,
        },
        {"ts": at(4), "status": "error", "http_status": 400, "error_type": "invalid_request_error"},
        {"ts": at(6)},  # the next window
    )
    w = found[(at(0), "openai", "gpt-4o")]
    assert (w["attempts"], w["ok"], w["errors"]) == (10, 5, 5)
    assert (w["errors_429"], w["errors_5xx"], w["errors_timeout"], w["errors_other"]) == (
        2,
        1,
        1,
        1,
    )
    assert w["error_rate"] == pytest.approx(0.5)
    assert w["failed_input_tokens"] == 100 + 300 + 100 + 100 + 100
    assert w["failed_output_tokens"] == 10 + 10 + 7 + 10 + 10
    assert w["failed_cost_usd"] == Decimal("0.001") + Decimal("0.002") + Decimal("0.001") * 2
    assert found[(at(5), "openai", "gpt-4o")]["attempts"] == 1


def test_retry_and_fallback_chains_are_counted() -> None:
    found, paths = windows_of(
        # Trace A: gpt-4o fails, the SDK retries it (marked), it fails again,
        # the app falls back to Claude, which answers.
        {"span_id": "a1", "trace_id": "A", "ts": at(1), **FAIL},
        {"span_id": "a2", "trace_id": "A", "ts": at(1.1), "attempt": 1, "retry_of": "a1", **FAIL},
        {"span_id": "a3", "trace_id": "A", "ts": at(1.2), **CLAUDE},
        # Trace B: gpt-4o fails, a retry (no marker: same trace, same model) answers.
        {"span_id": "b1", "trace_id": "B", "ts": at(2), **FAIL},
        {"span_id": "b2", "trace_id": "B", "ts": at(2.5)},
        # No trace: the same caller sends the same prompt to Claude, which fails too.
        {"span_id": "c1", "ts": at(3), "user_id": "bob", "prompt_id": 42, **FAIL},
        {"span_id": "c2", "ts": at(3.5), "user_id": "bob", "prompt_id": 42, **CLAUDE, **FAIL},
        # Same caller, a different prompt afterwards: not a next attempt.
        {"span_id": "d1", "ts": at(4), "user_id": "eve", "prompt_id": 7, **FAIL},
        {"span_id": "d2", "ts": at(4.2), "user_id": "eve", "prompt_id": 8},
        # Too late to be an attempt at the same request (over 120 s).
        {"span_id": "e1", "trace_id": "E", "ts": at(0), **FAIL},
        {"span_id": "e2", "trace_id": "E", "ts": at(3)},
    )
    gpt = found[(at(0), "openai", "gpt-4o")]
    claude = found[(at(0), "anthropic", "claude-3-5-haiku-latest")]
    # Chains start at a failure followed by a next attempt: a1, b1, c1.
    assert (gpt["chains"], gpt["chains_recovered"]) == (3, 2)
    assert (gpt["fallback_chains"], gpt["fallback_chains_recovered"]) == (2, 1)
    # Retries: a2 (marked) and b2 (same model, same trace). Of 12 attempts, 10 are firsts.
    assert gpt["retries"] == 2 and claude["retries"] == 0
    assert gpt["retries_per_call"] == pytest.approx(2 / (gpt["attempts"] - 2))
    # Both fallback chains went from gpt-4o to Claude: one recovered, 3 + 2 calls.
    (path,) = paths.iter_rows(named=True)
    assert (path["from_model"], path["to_model"]) == ("gpt-4o", "claude-3-5-haiku-latest")
    assert (path["chains"], path["recovered"], path["calls"]) == (2, 1, 5)


def test_a_failed_call_has_one_next_attempt_the_earliest() -> None:
    links = chain_links(
        calls(
            {"span_id": "f", "trace_id": "T", "ts": at(0), **FAIL},
            {"span_id": "ok1", "trace_id": "T", "ts": at(0.5)},
            {"span_id": "ok2", "trace_id": "T", "ts": at(1)},
        ),
        WINDOW_S,
    )
    assert links.select("prev_span", "span_id").rows() == [("f", "ok1")]
    (chain,) = chains(links).iter_rows(named=True)
    assert (chain["calls"], chain["recovered"], chain["fallback"]) == (2, True, False)


def test_same_trace_with_a_different_prompt_is_another_step_not_a_retry() -> None:
    links = chain_links(
        calls(
            {"span_id": "plan", "trace_id": "T", "ts": at(0), "prompt_id": 1, **FAIL},
            {"span_id": "next", "trace_id": "T", "ts": at(0.2), "prompt_id": 2},
        ),
        WINDOW_S,
    )
    assert links.height == 0


def test_an_outage_is_found_with_its_start_end_and_recovery() -> None:
    rows = []
    # Claude, 5-minute windows from 10:00: healthy, 80%, 90%, 100% errors, healthy.
    for window, errors in enumerate([0, 8, 9, 10, 0]):
        for i in range(10):
            failed = FAIL if i < errors else {}
            rows.append({"ts": at(window * 5 + i * 0.1), **CLAUDE, **failed})
    # gpt-4o: one bad window alone is a blip, not an outage; and a window with
    # too few attempts is not judged.
    rows += [{"ts": at(i * 0.1), **FAIL} for i in range(10)]
    rows += [{"ts": at(5 + i), **FAIL} for i in range(3)]
    frame = calls(*rows)
    found, _ = failover_windows(frame, frame, WINDOW_S)
    (outage,) = (
        outages(found, error_rate=0.5, min_attempts=5, min_windows=2)
        .collect()
        .iter_rows(named=True)
    )
    assert (outage["provider"], outage["model"]) == ("anthropic", "claude-3-5-haiku-latest")
    assert outage["started_at"] == at(5)
    assert outage["ended_at"] == at(20)
    assert (outage["windows"], outage["attempts"], outage["errors"]) == (3, 30, 27)
    assert outage["peak_error_rate"] == pytest.approx(1.0)
    assert outage["recovered"] is True
    assert outage["time_to_recover_s"] == timedelta(minutes=15).total_seconds()


def test_an_outage_still_going_on_has_not_recovered() -> None:
    rows = [{"ts": at(w * 5 + i * 0.1), **FAIL} for w in range(3) for i in range(6)]
    frame = calls(*rows)
    found, _ = failover_windows(frame, frame, WINDOW_S)
    (outage,) = outages(found, 0.5, 5, 2).collect().iter_rows(named=True)
    assert outage["recovered"] is False and outage["time_to_recover_s"] is None
    assert (outage["started_at"], outage["ended_at"]) == (at(0), at(15))

"""bench/analytics.py runs end to end at a small size and its totals agree.

Speed is never asserted (the machine is shared); only that every job ran,
the spend API's total equals the generated calls' total, and the script
cleans up after itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CALLS = 20_000


@pytest.mark.timeout(300)
def test_analytics_bench_runs_and_agrees() -> None:
    before = set(Path(tempfile.gettempdir()).glob("tt-bench-analytics-*"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "analytics.py"), "--calls", str(CALLS), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["config"]["calls"] == CALLS
    for run in ("full_run", "incremental_run"):
        jobs = result[run]["jobs"]
        assert set(jobs) == {"cost", "budgets", "cache", "duplicates", "failover", "routing"}
        assert all(job["status"] == "ok" for job in jobs.values()), jobs
    full, incremental = result["full_run"]["jobs"], result["incremental_run"]["jobs"]
    assert full["cost"]["windows"] >= 24 * 29  # every hour of the 30 days
    assert 1 <= incremental["cost"]["windows"] <= 3  # the new hour (and its neighbour)
    assert incremental["duplicates"]["skipped"]  # refreshed hourly, not every run
    spend = result["spend_api"]
    assert spend["teams"] == 8
    assert spend["calls"] == CALLS + result["config"]["incremental_calls"]
    assert spend["cost_usd"] == pytest.approx(result["expected_cost_usd"], abs=1e-6)
    assert set(Path(tempfile.gettempdir()).glob("tt-bench-analytics-*")) == before

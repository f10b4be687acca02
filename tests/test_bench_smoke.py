"""bench/ingest.py runs end to end at a small size and stores every span.

Speed is never asserted (the machine is shared); only that the benchmark
completes, cleans up, and that the collector stored all it accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPANS = 2000


@pytest.mark.timeout(200)
def test_ingest_bench_stores_every_span() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest.py"),
            "--spans",
            str(SPANS),
            "--batch",
            "500",
            "--concurrency",
            "2",
            "--json",
            "--timeout",
            "150",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)

    assert result["ok"] is True
    assert result["config"]["spans"] == SPANS
    assert result["config"]["requests"] == 4
    assert result["config"]["attributes_per_span"] == 20
    http = result["http"]
    assert http["all_stored"] is True
    assert http["stored_spans"] == SPANS
    assert http["stored_rows"] == http["expected_rows"] == 2 * SPANS
    assert http["accepted_rows"] == 2 * SPANS
    assert http["store_failures"] == 0
    # Independent check through the API: one llm_calls row per span.
    assert http["llm_calls_in_store"] == SPANS
    # Every stage produced a rate (values are not judged).
    for stage in ("raw_parse", "decode", "pipeline", "http_accepted", "http_stored"):
        assert result["rates"][stage] > 0, stage
    assert result["pipeline_rows"] == 2 * SPANS

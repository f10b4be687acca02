"""bench/ingest.py's dialect mix over OTLP/gRPC runs end to end and stores every span.

Speed is never asserted (the machine is shared); only that the run completes
and that every span of every dialect became its rows.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.spans import ATTRIBUTES_PER_SPAN, DIALECTS, span_fields
from ingest.normalize import normalize_spans
from tests.span_records import span_record

ROOT = Path(__file__).resolve().parent.parent
SPANS = 1500


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("content", [False, True])
def test_each_dialects_bench_span_is_one_priced_call(dialect: str, content: bool) -> None:
    """The bench's spans are what the dialect modules read: same call, same row."""
    rng = random.Random(3)
    fields = [span_fields(dialect, rng, i, content) for i in range(20)]
    spans = [span_record(dict(f["attributes"]), name=f["name"]) for f in fields]
    rows = normalize_spans(spans).llm_calls
    assert len(rows) == 20 and all(len(f["attributes"]) == ATTRIBUTES_PER_SPAN for f in fields)
    for row, f in zip(rows, fields, strict=True):
        attributes = dict(f["attributes"])
        assert row["provider"] == "openai" and row["team"] == attributes["tokentrail.team"]
        assert row["input_tokens"] > 0 and row["cache_read_tokens"] is not None
        assert bool(row["input_content"]) is content


@pytest.mark.timeout(200)
def test_dialect_mix_over_grpc_stores_every_span() -> None:
    command = [sys.executable, str(ROOT / "bench" / "ingest.py"), "--spans", str(SPANS)]
    command += ["--batch", "500", "--concurrency", "2", "--dialect", "mix", "--grpc"]
    command += ["--content", "--json", "--timeout", "150"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert result["config"]["dialect"] == "mix" and result["config"]["transport"] == "grpc"
    grpc = result["grpc"]
    assert grpc["all_stored"] is True and grpc["stored_rows"] == 2 * SPANS
    assert grpc["llm_calls_in_store"] == SPANS and grpc["store_failures"] == 0
    assert grpc["unpriced_calls"] == 0
    assert result["rates"]["grpc_stored"] > 0 and "http" not in result

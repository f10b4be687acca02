"""The decode pool (TOKENTRAIL_DECODE_WORKERS): a collector whose requests are
decoded in worker processes stores the rows one decoding in-process would,
answers bad input the same way, and replaces a worker that dies."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CollectorProcess, collector_env, free_port
from tests.test_writer import otlp_body

PROTOBUF = {"Content-Type": "application/x-protobuf"}
COMPARED = "trace_id, span_id, provider, request_model, input_tokens, cost_usd, status"


@pytest.fixture(scope="module")
def collectors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[CollectorProcess]]:
    started = []
    for workers in ("0", "1"):
        proc = CollectorProcess(
            tmp_path_factory.mktemp(f"decode{workers}") / "data",
            free_port(),
            collector_env(TOKENTRAIL_DECODE_WORKERS=workers),
        )
        proc.start()
        started.append(proc)
    yield started
    for proc in started:
        proc.stop()


def stored(collector: CollectorProcess, count: int) -> list[dict]:
    def rows() -> list[dict]:
        answer = collector.post(
            "/api/v1/sql", json={"sql": f"SELECT {COMPARED} FROM llm_calls ORDER BY span_id"}
        )
        answer.raise_for_status()
        found = answer.json()["rows"]
        return found if len(found) >= count else []

    return collector.wait_for(rows)


def worker_pids(collector: CollectorProcess) -> list[int]:
    assert collector.process is not None
    pid = collector.process.pid
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        children += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    return [
        int(c)
        for c in children
        if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()  # not the resource tracker
    ]


def test_workers_store_the_rows_the_collector_would(collectors) -> None:
    in_process, with_workers = collectors
    body = otlp_body(0, 50)
    for collector in collectors:
        assert collector.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    assert len(worker_pids(with_workers)) == 1
    assert stored(with_workers, 50) == stored(in_process, 50)


def test_bad_input_is_the_same_400_from_a_worker(collectors) -> None:
    answers = [
        c.post("/v1/traces", content=b"\xff\x00 not protobuf", headers=PROTOBUF) for c in collectors
    ]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].text == answers[1].text


def test_a_killed_worker_is_replaced_and_no_request_fails(collectors) -> None:
    _, with_workers = collectors
    (worker,) = worker_pids(with_workers)
    os.kill(worker, signal.SIGKILL)
    for first in (100, 200):  # the first finds the pool broken, the second the new one
        answer = with_workers.post("/v1/traces", content=otlp_body(first, 5), headers=PROTOBUF)
        assert answer.status_code == 200, answer.text
    assert len(stored(with_workers, 60)) == 60
    assert worker_pids(with_workers) not in ([], [worker])

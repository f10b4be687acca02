"""The decode pool: worker processes give the same rows as the collector's own
process, bad input is still a clear error, and a dead worker is replaced."""

from __future__ import annotations

import os
import signal

import pytest

from collector.decode_pool import DecodePool, pipeline_config
from ingest.otlp import OtlpDecodeError
from tests.test_writer import otlp_body
from tokentrail.settings import Settings


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("decode")
    here = Settings(data_dir=data_dir, decode_workers=0)
    there = Settings(data_dir=data_dir, decode_workers=1)
    in_process, workers = (DecodePool(s, pipeline_config(s)) for s in (here, there))
    yield in_process, workers
    workers.close()


def test_workers_give_the_rows_the_collector_would(pools) -> None:
    in_process, workers = pools
    body = otlp_body(0, 50)
    mine = in_process.process(body, "application/x-protobuf", None)
    theirs = workers.process(body, "application/x-protobuf", None)
    assert (theirs.spans, theirs.rejected) == (mine.spans, mine.rejected) == (50, 0)
    for name, table in mine.batch.tables.items():
        assert theirs.batch.tables[name].equals(table), name


def test_bad_input_is_the_same_error_from_a_worker(pools) -> None:
    _, workers = pools
    with pytest.raises(OtlpDecodeError):
        workers.process(b"\xff\x00 not protobuf", "application/x-protobuf", None)


def test_a_killed_worker_is_replaced_and_the_request_still_processed(pools) -> None:
    _, workers = pools
    for pid in list(workers._executor._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    done = workers.process(otlp_body(0, 5), "application/x-protobuf", None)
    assert done.spans == 5
    assert workers.process(otlp_body(5, 5), "application/x-protobuf", None).spans == 5

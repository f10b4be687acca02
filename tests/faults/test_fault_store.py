"""ingest/faults.py on a real embedded store: the faults file switches delays and
failures on and off while the store is in use, and a bad file injects nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.faults import FaultInjectingStore, FaultsFile, parse_faults, with_faults
from ingest.store import ChdbStore, StoreError, query_rows


@pytest.fixture()
def inner(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb")
    store.command("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
    yield store
    store.close()


def write_faults(path: Path, faults: dict | str) -> None:
    """Write the file and move its mtime on, so a same-size rewrite is seen too."""
    path.write_text(faults if isinstance(faults, str) else json.dumps(faults))
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def rows(x: int) -> pa.Table:
    return pa.table({"x": pa.array([x], pa.uint32())})


def test_without_a_faults_file_the_store_is_not_wrapped(inner: ChdbStore) -> None:
    assert with_faults(inner, None) is inner


def test_faults_switch_on_and_off_while_the_store_runs(inner: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    store = with_faults(inner, path)
    assert isinstance(store, FaultInjectingStore)
    store.insert_arrow("t", rows(1))  # no file yet: no fault

    write_faults(path, {"store_fail": True})
    with pytest.raises(StoreError, match="injected store failure"):
        store.insert_arrow("t", rows(2))
    # Inserts only, unless the file says queries too.
    assert query_rows(store, "SELECT x FROM t ORDER BY x") == [{"x": 1}]

    write_faults(path, {"store_delay_seconds": 0.3})
    started = time.monotonic()
    store.insert_arrow("t", rows(3))
    assert time.monotonic() - started >= 0.3

    write_faults(path, {"store_fail": True, "queries": True})
    with pytest.raises(StoreError):
        store.query_arrow("SELECT 1")
    with pytest.raises(StoreError):
        store.command("SELECT 1")

    path.unlink()  # gone: no fault
    assert query_rows(store, "SELECT x FROM t ORDER BY x") == [{"x": 1}, {"x": 3}]


def test_a_bad_faults_file_injects_nothing(inner: ChdbStore, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    faults = FaultsFile(path)
    store = FaultInjectingStore(inner, faults)
    for bad in ('{"store_fail": tru', '["store_fail"]', '{"store_fial": true}'):
        write_faults(path, bad)
        store.insert_arrow("t", rows(len(bad)))
        assert not faults.current().active
    assert len(query_rows(inner, "SELECT x FROM t")) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ('{"delay": 1}', "unknown keys"),
        ('{"store_delay_seconds": -1}', "0 to 3600"),
        ('{"store_delay_seconds": true}', "0 to 3600"),
        ('{"store_fail": "yes"}', "true or false"),
    ],
)
def test_parse_faults_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faults(text)


def test_parse_faults_reads_every_key() -> None:
    faults = parse_faults('{"store_delay_seconds": 2, "store_fail": true, "queries": true}')
    assert (faults.store_delay_seconds, faults.store_fail, faults.queries) == (2.0, True, True)
    assert parse_faults("") == parse_faults("{}") and not parse_faults("").active

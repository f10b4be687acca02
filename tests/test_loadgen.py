"""demo/loadgen.py against the real simulator (TLS, no request log) and a real collector."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from demo.loadgen import KINDS, LoadGenerator
from demo.simulator import RunningSimulator, make_test_certificate, start_simulator
from tests.conftest import CollectorProcess, free_port


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSimulator, str]]:
    certfile, keyfile, ca_file = make_test_certificate(tmp_path_factory.mktemp("certs"))
    with start_simulator(certfile=certfile, keyfile=keyfile, record_requests=False) as sim:
        yield sim, ca_file


def stored_ids(collector: CollectorProcess, team: str, column: str, source: str) -> list[str]:
    response = collector.post(
        "/api/v1/sql",
        json={
            "sql": f"SELECT {column} AS id FROM llm_calls "
            "WHERE team = {team:String} AND source = {source:String}",
            "params": {"team": team, "source": source},
        },
    )
    response.raise_for_status()
    return [row["id"] for row in response.json()["rows"]]


def test_direct_calls_and_spans_are_all_acknowledged(
    tls_sim: tuple[RunningSimulator, str], collector: CollectorProcess
) -> None:
    sim, ca_file = tls_sim
    load = LoadGenerator(
        proxy_url=None,
        ca_file=ca_file,
        provider_base_url=sim.url,
        collector_url=collector.url,
        ingest_key=collector.create_key("ingest", "loadgen"),
        calls_per_second=25,
        spans_per_second=40,
        team="loadgen-test",
        seed=3,
    )
    with load:
        time.sleep(1.5)
        large = load.send_large_stream(200_000)
        batch = load.send_span_batch(700)
        time.sleep(1.0)
        live = load.report()
        assert live.sent >= 1 and live.duration_s > 0
    report = load.stop()  # after the block: the same final report
    assert large.result(timeout=5) is None and batch.result(timeout=5) is True

    assert report.failed_calls == [] and report.failed_spans == 0
    # Every scheduled call succeeded, plus the large stream; all four kinds ran.
    assert len(report.latencies_ms) == report.sent >= 40
    assert len(report.ok_response_ids) == report.sent + 1
    assert len(set(report.ok_response_ids)) == len(report.ok_response_ids)
    assert {k for k, n in report.sent_by_kind.items() if n} == set(KINDS)
    assert all(rid.startswith(("chatcmpl-", "msg_")) for rid in report.ok_response_ids)
    assert all(ms > 0 for ms in report.latencies_ms)
    assert report.large_stream_bytes == 200_000 and len(report.large_stream_ms) == 1
    assert report.in_flight == 0
    # The simulator kept no log of them.
    assert sim.requests == []

    # Spans: ~40/s for ~2.5 s plus the batch of 700, every id acknowledged is stored once.
    assert len(report.ok_span_ids) >= 700 + 60
    assert all(len(s) == 16 and int(s, 16) for s in report.ok_span_ids)
    expected = sorted(report.ok_span_ids)

    def all_stored() -> list[str] | None:
        ids = stored_ids(collector, "loadgen-test", "span_id", "otlp")
        return ids if len(ids) >= len(expected) else None

    found = collector.wait_for(all_stored) or stored_ids(
        collector, "loadgen-test", "span_id", "otlp"
    )
    assert sorted(found) == expected


@pytest.mark.parametrize("client", ["http", "raw"])
def test_the_light_clients_make_the_same_calls(
    tls_sim: tuple[RunningSimulator, str], client: str
) -> None:
    """client="http" and "raw" send what the SDKs send, read every event, and
    check the same things: an id, the usage chunk, message_stop."""
    sim, ca_file = tls_sim
    load = LoadGenerator(
        proxy_url=None,
        ca_file=ca_file,
        provider_base_url=sim.url,
        collector_url=None,
        ingest_key=None,
        calls_per_second=40,
        seed=5,
        client=client,
    )
    with load:
        time.sleep(1.5)
        large = load.send_large_stream(100_000)
        time.sleep(0.5)
    report = load.stop()
    assert large.result(timeout=5) is None
    assert report.failed_calls == []
    assert len(report.latencies_ms) == report.sent >= 40
    assert {k for k, n in report.sent_by_kind.items() if n} == set(KINDS)
    assert all(rid.startswith(("chatcmpl-", "msg_")) for rid in report.ok_response_ids)
    assert len(set(report.ok_response_ids)) == len(report.ok_response_ids) == report.sent + 1
    assert report.large_stream_bytes == 100_000
    if client == "raw":  # keep-alive: a few connections carry all ~60 calls
        assert load._raw is not None and 1 <= load._raw.opened <= 8


@pytest.mark.parametrize("client", ["http", "raw"])
def test_the_light_clients_report_a_refused_call(
    tls_sim: tuple[RunningSimulator, str], client: str
) -> None:
    sim, ca_file = tls_sim
    load = LoadGenerator(
        proxy_url=None,
        ca_file=ca_file,
        provider_base_url=sim.url,
        collector_url=None,
        ingest_key=None,
        calls_per_second=10,
        client=client,
    )
    load.sim_headers["x-sim-fail-always"] = "500"
    with load:
        time.sleep(0.5)
    report = load.stop()
    assert report.sent >= 1 and report.ok_response_ids == []
    assert all("HTTP 500" in text for text in report.failed_calls)


@pytest.mark.parametrize("client", ["sdk", "raw"])
def test_a_dead_proxy_fails_calls_instead_of_hanging(
    tls_sim: tuple[RunningSimulator, str], client: str
) -> None:
    sim, ca_file = tls_sim
    load = LoadGenerator(
        proxy_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        ca_file=ca_file,
        provider_base_url=sim.url,
        collector_url=None,
        ingest_key=None,
        calls_per_second=10,
        max_retries=0,
        client=client,
    )
    load.start()
    time.sleep(0.5)
    report = load.stop(drain_s=10)
    assert report.sent >= 1 and report.ok_response_ids == []
    assert len(report.failed_calls) == report.sent
    assert all("Connection" in text for text in report.failed_calls)


def test_bad_arguments_are_refused() -> None:
    common = {"proxy_url": None, "ca_file": None, "provider_base_url": "https://127.0.0.1:1"}
    with pytest.raises(ValueError, match="stream_share"):
        LoadGenerator(
            **common, collector_url=None, ingest_key=None, calls_per_second=1, stream_share=2
        )
    with pytest.raises(ValueError, match="client"):
        LoadGenerator(
            **common, collector_url=None, ingest_key=None, calls_per_second=1, client="curl"
        )
    with pytest.raises(ValueError, match="collector_url"):
        LoadGenerator(
            **common, collector_url=None, ingest_key=None, calls_per_second=1, spans_per_second=5
        )

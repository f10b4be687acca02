"""Fixtures of the fault tests: a fresh stack (collector + proxy) per scenario
in front of one simulated provider over HTTPS (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import proxy_support
from tests.conftest import CollectorProcess, collector_env, free_port
from tests.faults.harness import MakeStack, Stack
from tests.proxy_support import ProxyProcess

# The certificates and the simulator over HTTPS, shared with tests/test_proxy_e2e.py.
certs = proxy_support.certs
sim = proxy_support.sim


@pytest.fixture()
def make_stack(tmp_path: Path, certs: tuple[str, str, str], sim: Any) -> Iterator[MakeStack]:
    """Starts the scenario's collector and proxy; both are stopped afterwards."""
    started: list[Stack] = []

    def make(spool_max_mb: int = 512, **collector_settings: str) -> Stack:
        faults_file = tmp_path / "faults.json"
        collector = CollectorProcess(
            tmp_path / "collector",
            free_port(),
            collector_env(
                TOKENTRAIL_BATCH_MAX_SECONDS="0.2",
                TOKENTRAIL_FAULTS_FILE=str(faults_file),
                # The tally reads every row of a scenario in one query.
                TOKENTRAIL_SQL_MAX_ROWS="1000000",
                # No analytics runs competing for the embedded store.
                TOKENTRAIL_JOBS_INTERVAL_MINUTES="0",
                **collector_settings,
            ),
        )
        collector.start()
        ingest_key = collector.create_key("ingest", "faults")
        proxy = ProxyProcess(
            tmp_path / "proxy",
            free_port(),
            collector.url,
            ingest_key,
            Path(certs[2]),
            extra=("--spool-max-mb", str(spool_max_mb)),
            options={"tokentrail_stats_seconds": 1},
        )
        stack = Stack(collector, proxy, sim, tmp_path / "ca-bundle.pem", ingest_key, faults_file)
        started.append(stack)
        sim.clear_requests()  # so the simulator's log counts this scenario's attempts
        proxy.start()
        stack.ca_bundle.write_text(proxy.ca_file.read_text() + Path(certs[2]).read_text())
        return stack

    yield make
    for stack in started:
        stack.proxy.stop()
        stack.collector.stop()

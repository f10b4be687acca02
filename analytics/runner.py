"""Runs the jobs, each recorded in ``job_runs``.

Order matters within a chain: the duplicate report reads the prompt
fingerprints the cache job writes, routing reads the outages the failover job
finds (budgets come after cost only to share its chain).

A windowed job (cost, cache, failover) recomputes the windows holding calls
ingested since its last successful run — minus an overlap, so a batch that
was being written while that run read is not missed. Recomputing a window
twice is harmless: a run writes a window's new version, readers see the newest.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import orjson
import pyarrow as pa

from analytics import budgets, cache, cost, duplicates, failover, routing
from analytics.config import AnalyticsConfig, ConfigFileError, load_budgets, load_routes
from analytics.context import JobContext, JobOutcome, JobStopped
from analytics.store_io import high_water
from analytics.tables import JOB_RUNS
from ingest.pricing import PriceBook
from ingest.store import Store, query_rows, release_memory

log = logging.getLogger("tokentrail.analytics")

JOBS: dict[str, ModuleType] = {
    module.NAME: module for module in (cost, budgets, cache, duplicates, failover, routing)
}
# Each chain's jobs run in order (a job reads the output of the one before);
# the chains are independent of each other.
CHAINS = (
    (cost.NAME, budgets.NAME),
    (cache.NAME, duplicates.NAME),
    (failover.NAME, routing.NAME),
)
# Jobs that recompute only the windows with new calls; the others write a
# fresh snapshot each run.
WINDOWED = frozenset({cost.NAME, cache.NAME, failover.NAME})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownJob(ValueError):
    pass


class JobRunner:
    def __init__(self, store: Store, config: AnalyticsConfig, prices: PriceBook) -> None:
        self.store = store
        self.config = config
        self.prices = prices
        self.stop = threading.Event()
        self._lock = threading.Lock()
        duplicates.ensure_fingerprint_ttl(store, config)

    def names(self, name: str | None) -> list[str]:
        if not name:
            return list(JOBS)
        if name not in JOBS:
            raise UnknownJob(f"no job named {name!r}; jobs are: {', '.join(JOBS)}")
        return [name]

    def run(
        self, name: str | None = None, full: bool = False, trigger: str = "api"
    ) -> list[dict[str, Any]]:
        """Run one job or all of them now; returns one summary per job, in JOBS order.

        All jobs run as three chains side by side — each job after the one whose
        output it reads — so one chain's polars work overlaps another's queries
        (the store runs one query at a time, on every core)."""
        names = self.names(name)
        with self._lock:
            # The jobs' peak comes on top of what ingest left in chDB's arenas;
            # purge before, and after so the run's own pages do not stay either.
            release_memory(self.store)
            try:
                return self._run_jobs(names, full, trigger)
            finally:
                release_memory(self.store)

    def _run_jobs(self, names: list[str], full: bool, trigger: str) -> list[dict[str, Any]]:
        config, problems = self._reload_config()
        if len(names) == 1:
            return [self._run_one(names[0], config, full, trigger, problems)]
        with ThreadPoolExecutor(len(CHAINS), thread_name_prefix="analytics") as pool:
            done = pool.map(
                lambda chain: [self._run_one(j, config, full, trigger, problems) for j in chain],
                CHAINS,
            )
            by_job = {r["job"]: r for results in done for r in results}
        return [by_job[job] for job in names]

    def _reload_config(self) -> tuple[AnalyticsConfig, list[str]]:
        """Re-read the budgets and routes files; a broken file keeps the last good one."""
        changes: dict[str, Any] = {}
        problems: list[str] = []
        for attr, path, load in (
            ("budgets", self.config.budgets_file, load_budgets),
            ("routes", self.config.routes_file, load_routes),
        ):
            if path is None:
                continue
            try:
                changes[attr] = load(path)
            except ConfigFileError as exc:
                problems.append(f"{exc} (using the last good version)")
        if changes:
            self.config = dataclasses.replace(self.config, **changes)
        return self.config, problems

    def _since(self, job: str) -> datetime | None:
        rows = query_rows(
            self.store,
            "SELECT max(high_water) AS hw, count() AS n FROM job_runs "
            "WHERE job = {job:String} AND status = 'ok'",
            {"job": job},
        )
        if not rows or not rows[0]["n"]:
            return None
        return rows[0]["hw"] - timedelta(seconds=self.config.late_overlap_s)

    def _run_one(
        self, job: str, config: AnalyticsConfig, full: bool, trigger: str, problems: list[str]
    ) -> dict[str, Any]:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        seen = high_water(self.store) or _EPOCH
        since = None if full or job not in WINDOWED else self._since(job)
        forced = full or trigger != "schedule"
        ctx = JobContext(self.store, config, self.prices, started, since, self.stop, forced)
        status, error, outcome = "ok", "", JobOutcome()
        try:
            outcome = JOBS[job].run(ctx)
        except JobStopped as exc:
            status, error = "stopped", str(exc)
        except Exception as exc:  # one failing job must not stop the others
            log.exception("analytics job %s failed", job)
            status, error = "error", f"{type(exc).__name__}: {exc}"[:2000]
        details = {**outcome.details, **({"config_problems": problems} if problems else {})}
        summary = {
            "job": job,
            "run_id": uuid.uuid4().hex[:16],
            "trigger": trigger,
            "full": since is None and job in WINDOWED,
            "started_at": started,
            "finished_at": datetime.now(UTC),
            "status": status,
            "high_water": seen,
            "windows": outcome.windows,
            "rows_written": outcome.rows,
            "duration_ms": round((time.perf_counter() - clock) * 1000, 1),
            "error": error,
            "details": orjson.dumps(details, default=str).decode(),
        }
        self.store.insert_arrow("job_runs", pa.Table.from_pylist([summary], schema=JOB_RUNS))
        return {**summary, "since": since, "details": details}

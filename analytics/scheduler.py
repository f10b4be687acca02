"""Runs every job every few minutes on a thread of the collector process.

The first run comes one interval after start (a restart does not pile work
onto start-up; ``POST /api/v1/jobs/run`` runs them at once). Stopping sets
an event the running job checks between chunks, then waits for the thread.
"""

from __future__ import annotations

import logging
import threading

from analytics.runner import JobRunner

log = logging.getLogger("tokentrail.analytics")


class JobScheduler:
    def __init__(self, runner: JobRunner, interval_s: float) -> None:
        self.runner = runner
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            log.info("analytics scheduler is off (jobs interval 0)")
            return
        self._thread = threading.Thread(target=self._loop, name="analytics-jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                for result in self.runner.run(trigger="schedule"):
                    if result["status"] == "error":
                        log.warning("job %s failed: %s", result["job"], result["error"])
            except Exception:  # the loop must outlive any one bad run
                log.exception("scheduled analytics run failed")

    def stop(self, timeout_s: float = 120.0) -> None:
        self._stopping.set()
        self.runner.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("analytics jobs still running after %.0f s at shutdown", timeout_s)
            self._thread = None

"""What ``tokentrail up --demo`` adds to the group: simulated providers over
HTTPS (``python -m demo.simulator`` with latency, streaming delays, 429 bursts
and an outage window) and the traffic generator (``python -m demo.traffic``),
plus a periodic analytics run so the derived pages fill within a minute.

Kept here, apart from ``tokentrail.supervisor``, so the product path never
depends on demo code: the supervisor imports this module only for ``--demo``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from demo.simulator import make_test_certificate
from tokentrail.settings import Settings
from tokentrail.supervisor import Child, access_log, child_env, free_port, http_ok

# Realism of the simulated providers (see demo.simulator's CLI).
LATENCY_MS = 120
JITTER_MS = 380
TOKEN_DELAY_MS = 12
RATE_LIMIT_BURST = 3


DEMO_BUDGETS = """# The demo's monthly budgets: some on track, some not, so alerts show.
[[budget]]
team = "growth"
monthly_usd = 300

[[budget]]
team = "payments"
monthly_usd = 25

[[budget]]
team = "support"
monthly_usd = 5000

[[budget]]
name = "search-ranking"
team = "search"
project = "ranking"
monthly_usd = "0.05"
"""


def collector_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """Settings the demo gives its collector (the user's own settings win): budgets to
    burn down, and outages counted from one bad 5-minute window, as the demo's are short."""
    extra: dict[str, str] = {}
    if settings.budgets_file is None:
        budgets = data_dir / "demo" / "budgets.toml"
        budgets.parent.mkdir(parents=True, exist_ok=True)
        budgets.write_text(DEMO_BUDGETS)
        extra["TOKENTRAIL_BUDGETS_FILE"] = str(budgets)
    if "TOKENTRAIL_OUTAGE_MIN_WINDOWS" not in os.environ:
        extra["TOKENTRAIL_OUTAGE_MIN_WINDOWS"] = "1"
    return extra


@dataclass
class Demo:
    settings: Settings
    data_dir: Path
    collector_url: str
    admin_key: str
    sim_port: int = field(default_factory=free_port)
    certfile: str = ""
    keyfile: str = ""
    ca_file: str = ""
    jobs_every_s: float = 30.0
    _next_jobs_at: float = 0.0
    _jobs_available: bool | None = None
    _running: threading.Thread | None = None

    @classmethod
    def prepare(
        cls, settings: Settings, data_dir: Path, collector_url: str, admin_key: str
    ) -> Demo:
        demo = cls(
            settings, data_dir, collector_url, admin_key, jobs_every_s=settings.demo_jobs_every_s
        )
        # A fresh throwaway CA each start; the proxy trusts it with --upstream-ca.
        demo.certfile, demo.keyfile, demo.ca_file = make_test_certificate(data_dir / "demo")
        demo._next_jobs_at = time.monotonic() + min(15.0, demo.jobs_every_s)
        return demo

    @property
    def upstream(self) -> str:
        return f"https://127.0.0.1:{self.sim_port}"

    def outage_args(self) -> list[str]:
        args: list[str] = []
        for window in filter(None, (w.strip() for w in self.settings.demo_outages.split(","))):
            args += ["--outage", window]
        return args

    def simulator(self) -> Child:
        argv = [
            sys.executable,
            "-m",
            "demo.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.sim_port),
            "--certfile",
            self.certfile,
            "--keyfile",
            self.keyfile,
            "--seed",
            "7",
            "--latency-ms",
            str(LATENCY_MS),
            "--jitter-ms",
            str(JITTER_MS),
            "--token-delay-ms",
            str(TOKEN_DELAY_MS),
            "--rate-limit-probability",
            str(self.settings.demo_rate_limit_probability),
            "--rate-limit-burst",
            str(RATE_LIMIT_BURST),
            *self.outage_args(),
            "--no-record",  # nothing reads its request log, which would grow for the demo's life
        ]
        return Child(
            "simulator",
            argv,
            child_env(),
            http_ok(f"{self.upstream}/health", verify=self.ca_file),
            noisy=access_log,
        )

    def traffic(self, proxy_url: str, proxy_ca: Path, ingest_key: str) -> Child:
        argv = [
            sys.executable,
            "-m",
            "demo.traffic",
            "--proxy",
            proxy_url,
            "--proxy-ca",
            str(proxy_ca),
            "--upstream",
            self.upstream,
            "--collector",
            self.collector_url,
            "--rate",
            str(self.settings.demo_rate),
        ]
        return Child("traffic", argv, child_env(TOKENTRAIL_API_KEY=ingest_key), lambda: True)

    def tick(self) -> None:
        """Ask the collector to run its analytics jobs now and then (when it has them)."""
        if self.jobs_every_s <= 0 or time.monotonic() < self._next_jobs_at:
            return
        if self._running is not None and self._running.is_alive():
            return
        self._next_jobs_at = time.monotonic() + self.jobs_every_s
        self._running = threading.Thread(target=self._run_jobs, name="demo-jobs", daemon=True)
        self._running.start()

    def _run_jobs(self) -> None:
        try:
            if self._jobs_available is None:
                spec = httpx.get(f"{self.collector_url}/openapi.json", timeout=5).json()
                self._jobs_available = "/api/v1/jobs/run" in spec.get("paths", {})
            if self._jobs_available:
                httpx.post(
                    f"{self.collector_url}/api/v1/jobs/run",
                    timeout=120,
                    headers={"Authorization": f"Bearer {self.admin_key}"},
                )
        except (httpx.HTTPError, ValueError):
            pass  # the next tick tries again

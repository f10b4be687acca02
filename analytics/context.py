"""What a job run is given, and what it reports back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from analytics.config import AnalyticsConfig
from analytics.store_io import WindowSet, changed_windows, chunked
from ingest.pricing import PriceBook
from ingest.store import Store


class JobStopped(RuntimeError):
    """The collector is shutting down; the run stops between two chunks."""


@dataclass
class JobContext:
    store: Store
    config: AnalyticsConfig
    prices: PriceBook
    now: datetime
    # Calls ingested after this are new to the job; None means recompute all.
    since: datetime | None
    stop: threading.Event = field(default_factory=threading.Event)
    # False for the scheduler's periodic runs: a job may then skip work that is
    # still fresh (the 7-day duplicate report is refreshed hourly, not every run).
    forced: bool = True

    def windows(self, seconds: int, reach_back_s: float = 0.0) -> list[int]:
        return changed_windows(self.store, seconds, self.since, reach_back_s)

    def chunks(self, starts: list[int], seconds: int) -> Iterator[WindowSet]:
        for group in chunked(starts, self.config.chunk_days * 86400):
            if self.stop.is_set():
                raise JobStopped("the collector is stopping")
            yield WindowSet(group, seconds)


@dataclass
class JobOutcome:
    windows: int = 0
    rows: int = 0
    details: dict[str, Any] = field(default_factory=dict)

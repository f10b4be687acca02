"""Filters shared by every page, kept in the URL so a link shows what you saw.

``period`` (``15m`` … ``30d``) or an explicit ``from``/``to``, and the
attribution filters team, project, app, model and provider. Plain data and
pure functions: the sidebar widgets live in ``dashboards.ui``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboards.api import Window

PERIODS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
PERIOD_LABELS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "6h": "Last 6 hours",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "custom": "Custom range",
}
DEFAULT_PERIOD = "24h"
# Attribution filters, in drill-down order for the ones spend can group by.
DIMENSIONS = ("team", "project", "app", "model", "provider")
# "Now" is rounded up to this step so reruns within it reuse cached answers.
NOW_STEP_S = 10


def parse_moment(text: str) -> datetime | None:
    """ISO 8601 (naive = UTC) or unix seconds; None when it is neither."""
    text = text.strip()
    if not text:
        return None
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rounded_now(now: datetime | None = None, step: int = NOW_STEP_S) -> datetime:
    now = now or datetime.now(UTC)
    seconds = math.ceil(now.timestamp() / step) * step
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Filters:
    period: str = DEFAULT_PERIOD
    start: datetime | None = None  # only with period == "custom"
    end: datetime | None = None
    team: str = ""
    project: str = ""
    app: str = ""
    model: str = ""
    provider: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> Filters:
        """From URL query parameters; unknown or malformed values fall back to defaults."""

        def text(name: str) -> str:
            value = query.get(name, "")
            if isinstance(value, list):
                value = value[-1] if value else ""
            return str(value).strip()

        start, end = parse_moment(text("from")), parse_moment(text("to"))
        if start is not None:
            end = end or rounded_now()
            if start < end:
                return cls("custom", start, end, *(text(d) for d in DIMENSIONS))
        period = text("period")
        period = period if period in PERIODS else DEFAULT_PERIOD
        return cls(period, None, None, *(text(d) for d in DIMENSIONS))

    def as_query(self) -> dict[str, str]:
        """The URL query parameters for these filters (defaults left out)."""
        query: dict[str, str] = {}
        if self.period == "custom" and self.start and self.end:
            query["from"] = self.start.isoformat().replace("+00:00", "Z")
            query["to"] = self.end.isoformat().replace("+00:00", "Z")
        elif self.period != DEFAULT_PERIOD:
            query["period"] = self.period
        query.update({d: getattr(self, d) for d in DIMENSIONS if getattr(self, d)})
        return query

    def window(self, now: datetime | None = None, step: int = NOW_STEP_S) -> Window:
        """The period as times; "now" rounded up to ``step`` seconds."""
        if self.period == "custom" and self.start and self.end:
            return Window(self.start, self.end)
        end = rounded_now(now, step)
        return Window(end - PERIODS.get(self.period, PERIODS[DEFAULT_PERIOD]), end)

    def granularity(self) -> str:
        """Hourly buckets up to three days, daily beyond."""
        window = self.window()
        return "hour" if window.end - window.start <= timedelta(days=3) else "day"

    def active(self) -> dict[str, str]:
        return {d: getattr(self, d) for d in DIMENSIONS if getattr(self, d)}

    def with_(self, **changes: Any) -> Filters:
        return replace(self, **changes)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether a row (with any of the dimension columns) passes the filters.

        A model filter matches either the requested or the reported model."""
        for name, wanted in self.active().items():
            if name == "model":
                models = {row.get("model"), row.get("response_model"), row.get("request_model")}
                if not models & {wanted}:
                    return False
            elif name in row and row[name] != wanted:
                return False
        return True

    def client_side(self) -> list[str]:
        """Filters /api/v1/spend cannot apply itself: group by them and filter rows."""
        return [d for d in ("app", "model", "provider") if getattr(self, d)]


FILTER_FIELDS = tuple(f.name for f in fields(Filters))


def apply(rows: Iterable[Mapping[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    return [dict(row) for row in rows if filters.matches(row)]

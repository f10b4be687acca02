"""Query-parameter parsing shared by the routers: clear 400s for bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import HTTPException


def parse_time(value: str | None, name: str, default: datetime) -> datetime:
    """ISO 8601 (a date, or date and time; naive means UTC) or unix seconds."""
    if value is None or value == "":
        return default
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise HTTPException(
            400,
            f"{name}={value!r} is not a time: use ISO 8601 (2026-11-23T10:00:00Z) or unix seconds",
        ) from None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if not 1900 <= parsed.year <= 2299:
        # The range ClickHouse's DateTime64 holds; outside it a query would fail.
        raise HTTPException(400, f"{name}={value!r} is outside the years 1900 to 2299")
    return parsed


def time_window(
    start: str | None, end: str | None, default_span: timedelta
) -> tuple[datetime, datetime]:
    to = parse_time(end, "to", datetime.now(UTC) + timedelta(minutes=1))
    frm = parse_time(start, "from", to - default_span)
    if frm >= to:
        raise HTTPException(400, "from must be before to")
    return frm, to


def csv_list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]

"""What the analytics jobs are told: thresholds from settings, budgets and routes from files.

Budgets file (TOML)::

    [[budget]]
    name = "payments"          # optional; default: the scope, e.g. "team=payments"
    team = "payments"          # scope: any of team, project, user, key (all must match)
    monthly_usd = 5000         # a number, or a string for an exact decimal ("5000.00")

    [[budget]]
    user = "alice@example.com"
    monthly_usd = 50

Routes file (TOML)::

    [[route]]
    name = "support-chat"                 # the calls' `route` attribute
    objective = "cost"                    # cost | latency | balanced
    candidates = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]

Both files are read again at every run, so editing them needs no restart; a
file that does not parse keeps the last good version and the run says why.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ingest.pricing import provider_id_from_otel

OBJECTIVES = ("cost", "latency", "balanced")
BUDGET_SCOPE = {
    "team": "team",
    "project": "project",
    "user": "user_id",
    "key": "api_key_fingerprint",
}


class ConfigFileError(ValueError):
    """A budgets or routes file is missing or invalid; the message says where."""


@dataclass(frozen=True)
class Budget:
    name: str
    amount_usd: Decimal
    team: str = ""
    project: str = ""
    user_id: str = ""
    api_key_fingerprint: str = ""


@dataclass(frozen=True)
class RouteSpec:
    name: str
    objective: str
    candidates: tuple[tuple[str, str], ...]  # (provider, model)


@dataclass(frozen=True)
class AnalyticsConfig:
    """Every knob of the jobs; defaults match the settings' defaults."""

    interval_s: float = 300.0
    late_overlap_s: float = 120.0
    chunk_days: int = 7
    budgets_file: Path | None = None
    routes_file: Path | None = None
    webhook_url: str = ""
    outage_error_rate: float = 0.5
    outage_min_attempts: int = 5
    outage_min_windows: int = 2
    outage_lookback_days: int = 30
    fallback_window_s: float = 120.0
    routing_window_minutes: int = 60
    routing_max_error_rate: float = 0.2
    routing_exploration: float = 0.1
    routing_min_calls: int = 10
    routing_objective: str = "balanced"
    near_duplicate_similarity: float = 0.8
    near_duplicate_days: int = 7
    near_duplicate_refresh_minutes: float = 60.0
    content_ttl_days: int = 30
    budgets: tuple[Budget, ...] = field(default=())
    routes: tuple[RouteSpec, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Any) -> AnalyticsConfig:
        """Built from ``tokentrail.settings.Settings``; the files are read here once so a
        broken file stops the collector at start with a clear message."""
        budgets_file = settings.budgets_file
        routes_file = settings.routes_file
        return cls(
            interval_s=settings.jobs_interval_minutes * 60,
            late_overlap_s=settings.jobs_late_overlap_seconds,
            budgets_file=budgets_file,
            routes_file=routes_file,
            webhook_url=settings.alert_webhook_url,
            outage_error_rate=settings.outage_error_rate,
            outage_min_attempts=settings.outage_min_attempts,
            outage_min_windows=settings.outage_min_windows,
            fallback_window_s=settings.fallback_window_seconds,
            routing_window_minutes=settings.routing_window_minutes,
            routing_max_error_rate=settings.routing_max_error_rate,
            routing_exploration=settings.routing_exploration,
            routing_min_calls=settings.routing_min_calls,
            routing_objective=settings.routing_objective,
            near_duplicate_similarity=settings.near_duplicate_similarity,
            near_duplicate_days=settings.near_duplicate_days,
            near_duplicate_refresh_minutes=settings.near_duplicate_refresh_minutes,
            content_ttl_days=settings.content_ttl_days,
            budgets=load_budgets(budgets_file) if budgets_file else (),
            routes=load_routes(routes_file) if routes_file else (),
        )


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise ConfigFileError(f"{what} file {path} cannot be read: {exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"{what} file {path} is not valid TOML: {exc}") from None


def _entries(doc: dict[str, Any], table: str, path: Path, what: str) -> list[dict[str, Any]]:
    unknown = sorted(set(doc) - {table})
    if unknown:
        raise ConfigFileError(f"{what} file {path} has unknown keys {unknown}; use [[{table}]]")
    entries = doc.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigFileError(f"{what} file {path}: '{table}' must be written [[{table}]]")
    return entries


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise ConfigFileError(f"{where}: '{key}' must be a string, got {value!r}")
    return value.strip()


def load_budgets(path: Path) -> tuple[Budget, ...]:
    entries = _entries(_read_toml(path, "budgets"), "budget", path, "budgets")
    budgets: list[Budget] = []
    for index, entry in enumerate(entries, 1):
        where = f"budgets file {path}: budget #{index}"
        unknown = sorted(set(entry) - {"name", "monthly_usd", *BUDGET_SCOPE})
        if unknown:
            raise ConfigFileError(
                f"{where} has unknown keys {unknown}; allowed: name, monthly_usd, "
                + ", ".join(BUDGET_SCOPE)
            )
        amount = entry.get("monthly_usd")
        if isinstance(amount, bool) or not isinstance(amount, int | float | str):
            raise ConfigFileError(f"{where} needs 'monthly_usd', a positive number")
        try:
            amount_usd = Decimal(str(amount).strip())
        except InvalidOperation:
            raise ConfigFileError(
                f"{where}: 'monthly_usd' must be a number, got {amount!r}"
            ) from None
        if not amount_usd.is_finite() or amount_usd <= 0:
            raise ConfigFileError(f"{where}: 'monthly_usd' must be above 0, got {amount!r}")
        scope = {column: _text(entry, key, where) for key, column in BUDGET_SCOPE.items()}
        described = ",".join(f"{key}={entry[key]}" for key in BUDGET_SCOPE if entry.get(key))
        name = _text(entry, "name", where) or described or "all"
        budgets.append(Budget(name=name, amount_usd=amount_usd, **scope))
    names = [b.name for b in budgets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigFileError(f"budgets file {path}: names {repeated} are used twice")
    return tuple(budgets)


def parse_candidate(text: str) -> tuple[str, str]:
    """ "provider/model" → (provider, model); the model may contain slashes. The
    provider is kept as llm_calls has it, genai-prices' id (gemini → google)."""
    provider, _, model = text.strip().partition("/")
    if not provider or not model:
        raise ValueError(f"candidate {text!r} must be written provider/model, e.g. openai/gpt-4o")
    return provider_id_from_otel(provider), model.strip()


def load_routes(path: Path) -> tuple[RouteSpec, ...]:
    entries = _entries(_read_toml(path, "routes"), "route", path, "routes")
    routes: list[RouteSpec] = []
    for index, entry in enumerate(entries, 1):
        where = f"routes file {path}: route #{index}"
        unknown = sorted(set(entry) - {"name", "objective", "candidates"})
        if unknown:
            raise ConfigFileError(f"{where} has unknown keys {unknown}")
        name = _text(entry, "name", where)
        if not name:
            raise ConfigFileError(f"{where} needs a 'name' (the calls' route attribute)")
        objective = _text(entry, "objective", where) or "balanced"
        if objective not in OBJECTIVES:
            raise ConfigFileError(f"{where}: objective must be one of {', '.join(OBJECTIVES)}")
        candidates = entry.get("candidates", [])
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise ConfigFileError(f"{where}: 'candidates' must be a list of \"provider/model\"")
        try:
            parsed = tuple(dict.fromkeys(parse_candidate(c) for c in candidates))
        except ValueError as exc:
            raise ConfigFileError(f"{where}: {exc}") from None
        routes.append(RouteSpec(name, objective, parsed))
    names = [r.name for r in routes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigFileError(f"routes file {path}: routes {repeated} are declared twice")
    return tuple(routes)

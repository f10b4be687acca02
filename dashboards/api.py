"""The dashboards' one door to data: a small typed client for the collector's HTTP API.

The dashboards never open the store; they call the API with the signed-in
user's key, so the collector's role checks and audit log apply to every
figure shown. Errors become typed exceptions a page can explain:
``Unauthorized`` (401), ``Forbidden`` (403), ``NotAvailable`` (the collector
has no such endpoint yet), ``Unreachable`` and ``ApiError`` for the rest.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

Rows = list[dict[str, Any]]
Params = dict[str, str | int | float | bool]

ROUTES_TTL_S = 60.0
CACHE_ENTRIES = 500


class ApiError(Exception):
    """The collector answered with an error; ``detail`` is its message."""

    def __init__(self, status: int, detail: str, path: str) -> None:
        super().__init__(f"{path}: {status} {detail}")
        self.status = status
        self.detail = detail
        self.path = path


class Unauthorized(ApiError):
    """401: the key is missing, unknown or revoked."""


class Forbidden(ApiError):
    """403: the key's role may not use this endpoint (or this parameter)."""


class NotAvailable(ApiError):
    """The collector has no such endpoint: an older collector, or not built yet."""


class Unreachable(ApiError):
    """No answer from the collector at all."""


@dataclass(frozen=True)
class Export:
    export_id: str
    filename: str
    data: bytes
    manifest: bytes  # the manifest file's exact bytes


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end) in UTC."""

    start: datetime
    end: datetime

    def params(self) -> Params:
        return {"from": iso(self.start), "to": iso(self.end)}


def is_loopback(address: str | None) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _template_regex(template: str) -> re.Pattern[str]:
    # /api/v1/traces/{trace_id} → ^/api/v1/traces/[^/]+$
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


class ApiClient:
    """Calls the collector at ``base_url`` with ``key``; one instance per signed-in user."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 15.0,
        cache_seconds: float = 0.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.http = http or httpx.Client(timeout=timeout)
        self._routes: list[tuple[str, re.Pattern[str]]] | None = None
        self._routes_at = 0.0
        # GET answers reused for a few seconds: a page rerun (a widget change) asks again.
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, tuple], tuple[float, Any]] = {}
        self._cache_lock = threading.Lock()

    # -- transport ---------------------------------------------------------
    def request(
        self, method: str, path: str, params: Params | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        try:
            response = self.http.request(
                method,
                self.base_url + path,
                params=params,
                headers=headers,
                timeout=self.timeout,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            message = f"cannot reach the collector at {self.base_url}: {exc}"
            raise Unreachable(0, message, path) from exc
        if response.status_code >= 400:
            raise self._error(method, path, response)
        return response

    def _error(self, method: str, path: str, response: httpx.Response) -> ApiError:
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text[:300]
        status = response.status_code
        if status == 401:
            return Unauthorized(status, detail, path)
        if status == 403:
            return Forbidden(status, detail, path)
        if status in (404, 405) and not self.has(method, path):
            return NotAvailable(status, f"this collector has no {method} {path}", path)
        return ApiError(status, detail, path)

    def get(self, path: str, params: Params | None = None, max_age: float | None = None) -> Any:
        """GET as JSON; empty parameters are left out. An answer younger than ``max_age``
        seconds (default: the client's ``cache_seconds``) is reused."""
        sent = {k: v for k, v in (params or {}).items() if v not in ("", None)}
        max_age = self.cache_seconds if max_age is None else max_age
        key = (path, tuple(sorted(sent.items())))
        now = time.monotonic()
        with self._cache_lock:
            found = self._cache.get(key)
        if found is not None and now - found[0] < max_age:
            return found[1]
        answer = self.request("GET", path, sent).json()
        if max_age > 0:
            with self._cache_lock:
                if len(self._cache) > CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (now, answer)
        return answer

    def post(self, path: str, body: Any = None, params: Params | None = None) -> Any:
        return self.request("POST", path, params, json=body).json()

    # -- what this collector offers -----------------------------------------
    def routes(self) -> list[tuple[str, re.Pattern[str]]]:
        """(METHOD, path regex) of every endpoint in the collector's OpenAPI document.

        Asked again after a minute, so a page lights up once a newer collector
        with its endpoint is running."""
        if self._routes is None or time.monotonic() - self._routes_at > ROUTES_TTL_S:
            try:
                spec = self.http.get(self.base_url + "/openapi.json", timeout=self.timeout).json()
            except (httpx.HTTPError, ValueError):
                return []  # unknown for now; asked again next time
            self._routes = [
                (method.upper(), _template_regex(path))
                for path, ops in spec.get("paths", {}).items()
                for method in ops
            ]
            self._routes_at = time.monotonic()
        return self._routes

    def has(self, method: str, path: str) -> bool:
        return any(m == method.upper() and rx.match(path) for m, rx in self.routes())

    def may(self, method: str, path: str, params: Params | None = None) -> bool:
        """Whether this key may use an endpoint, asked without reading data.

        The probe sends an invalid ``from``: the role check runs first (401/403),
        and a permitted key gets the 400 that rejects the parameter before any
        query or audit record happens."""
        try:
            self.request(method, path, {"from": "probe", **(params or {})})
        except (Unauthorized, Unreachable):
            raise
        except (Forbidden, NotAvailable):
            return False
        except ApiError as exc:
            return exc.status not in (404, 405)
        return True

    def role(self) -> str:
        """The key's role, inferred from what it may do (the API has no whoami)."""
        if self.may("GET", "/api/v1/keys"):
            return "admin"
        if self.may("GET", "/api/v1/spend"):
            return "finance"
        if self.may("GET", "/api/v1/calls"):
            # Compliance reads call metadata, never content: text search is refused.
            return "engineer" if self.may("GET", "/api/v1/calls", {"q": "probe"}) else "compliance"
        if self.has("GET", "/api/v1/routing/weights") and self.may(
            "GET", "/api/v1/routing/weights", {"format": "probe"}
        ):
            return "router"
        try:
            self.request("POST", "/v1/traces", json={})
            return "ingest"
        except Forbidden:
            return "router"

    # -- finance -------------------------------------------------------------
    def spend(
        self,
        window: Window,
        group_by: Sequence[str] = (),
        granularity: str | None = None,
        team: str = "",
        project: str = "",
        max_age: float | None = None,
    ) -> Rows:
        """Cost and tokens per group (and period): GET /api/v1/spend."""
        params: Params = {
            **window.params(),
            "team": team,
            "project": project,
            "group_by": ",".join(group_by),
            "granularity": granularity or "",
        }
        return self.get("/api/v1/spend", params, max_age)["rows"]

    def budgets(self) -> dict[str, Any]:
        """Budget status rows (with ``daily`` spend) and alerts: GET /api/v1/budgets."""
        return self.get("/api/v1/budgets")

    # -- engineers -----------------------------------------------------------
    def calls(
        self, window: Window, limit: int = 100, max_age: float | None = None, **filters: str
    ) -> Rows:
        """Model calls, newest first: GET /api/v1/calls (content for engineer keys)."""
        return self.get("/api/v1/calls", {**window.params(), "limit": limit, **filters}, max_age)[
            "rows"
        ]

    def traces(
        self,
        window: Window,
        limit: int = 100,
        max_age: float | None = None,
        **filters: str | float | bool,
    ) -> Rows:
        """Traces with their totals, newest first: GET /api/v1/traces."""
        return self.get("/api/v1/traces", {**window.params(), "limit": limit, **filters}, max_age)[
            "rows"
        ]

    def trace(self, trace_id: str) -> dict[str, Any]:
        """One trace as a span tree with its model and tool calls."""
        return self.get(f"/api/v1/traces/{trace_id}")

    # -- analytics -------------------------------------------------------------
    def cache_metrics(
        self, window: Window, group_by: Sequence[str], **filters: str
    ) -> dict[str, Any]:
        """Rows, totals and the near-duplicate report: GET /api/v1/metrics/cache."""
        params: Params = {**window.params(), "group_by": ",".join(group_by), **filters}
        return self.get("/api/v1/metrics/cache", params)

    def failover_metrics(self, window: Window, granularity: str, **filters: str) -> dict[str, Any]:
        """Rows, totals, outages and fallback paths: GET /api/v1/metrics/failover."""
        params: Params = {**window.params(), "granularity": granularity, **filters}
        return self.get("/api/v1/metrics/failover", params)

    def routing_weights(
        self, route: str = "", fmt: str = "native", history: int = 0
    ) -> dict[str, Any]:
        """Recommended weights (native), or the LiteLLM / Portkey configuration."""
        return self.get(
            "/api/v1/routing/weights", {"route": route, "format": fmt, "history": history}
        )

    # -- compliance --------------------------------------------------------------
    def audit_chain(self, seq: int | None = None) -> dict[str, Any]:
        """The audit log's hash-chain check (and the record ``seq``): GET /api/v1/audit/verify."""
        return self.get("/api/v1/audit/verify", {"seq": seq or ""})

    def audit_log(self, window: Window, limit: int = 500, **filters: str) -> Rows:
        return self.get("/api/v1/audit/log", {**window.params(), "limit": limit, **filters})["rows"]

    def audit_exports(self) -> Rows:
        """Past exports, each as its manifest."""
        return self.get("/api/v1/audit/exports")["rows"]

    def audit_export(self, window: Window, fmt: str, kind: str, **filters: str) -> Export:
        """Make an export (an audited action, so never cached) with its manifest."""
        params: Params = {
            **window.params(),
            "format": fmt,
            "kind": kind,
            **{k: v for k, v in filters.items() if v},
        }
        response = self.request("GET", "/api/v1/audit/export", params)
        disposition = response.headers.get("content-disposition", "")
        name = disposition.partition('filename="')[2].rstrip('"') or f"tokentrail-{kind}.{fmt}"
        return Export(
            export_id=response.headers.get("x-tokentrail-export-id", ""),
            filename=name,
            data=response.content,
            manifest=base64.b64decode(response.headers.get("x-tokentrail-manifest", "")),
        )

"""Every route in the running collector's OpenAPI schema against the role
table of ARCHITECTURE.md: 401 without a valid key, 403 for a role that may
not, anything else for one that may — and no content for finance (or any role
but engineer and admin) from any endpoint."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from collector.auth import ROLES
from tests.compliance_helpers import MARKER, PERIOD, seed_calls
from tests.conftest import CollectorProcess

PUBLIC = "public"
# (method or "*", path regex, roles that may call it besides admin). From the
# role table: ingest posts traces; finance reads spend, budgets and the cache
# and failover aggregates; engineers read calls, traces, metrics and SQL;
# routers read routing weights; compliance reads the audit log, exports and
# call metadata; admin alone manages keys, configuration and job runs.
MATRIX: list[tuple[str, str, frozenset[str] | str]] = [
    ("GET", r"/healthz", PUBLIC),
    ("POST", r"/v1/traces", frozenset({"ingest"})),
    ("GET", r"/metrics", frozenset({"engineer"})),
    ("*", r"/api/v1/spend(/.*)?", frozenset({"finance"})),
    ("*", r"/api/v1/budgets(/.*)?", frozenset({"finance"})),
    ("GET", r"/api/v1/metrics/.+", frozenset({"finance", "engineer"})),
    ("GET", r"/api/v1/calls(/.*)?", frozenset({"engineer", "compliance"})),
    ("GET", r"/api/v1/traces(/.*)?", frozenset({"engineer"})),
    ("POST", r"/api/v1/sql", frozenset({"engineer"})),
    ("GET", r"/api/v1/routing(/.*)?", frozenset({"router"})),
    ("GET", r"/api/v1/audit(/.*)?", frozenset({"compliance"})),
    ("*", r"/api/v1/(keys|config|jobs)(/.*)?", frozenset()),
]
# Field names that carry content when their value is text (a "prompts" count is not).
CONTENT_FIELDS = {
    "input_content",
    "output_content",
    "arguments",
    "result",
    "prompts",
    "prompt",
    "example",
    "variants",
}
CONTENT_ROLES = {"engineer", "admin"}


def expected_roles(method: str, path: str) -> frozenset[str] | str | None:
    for allowed_method, pattern, roles in MATRIX:
        if allowed_method in ("*", method) and re.fullmatch(pattern, path):
            return roles
    return None


@pytest.fixture(scope="module")
def world(collector: CollectorProcess) -> dict[str, Any]:
    trace_ids = seed_calls(collector, teams=("roles-a",), per_team=2)
    # Fill the analytics tables too (near-duplicate prompts among them), so
    # their endpoints have content to withhold.
    collector.post("/api/v1/jobs/run", json={})
    keys = {role: collector.create_key(role, f"{role}-key") for role in ROLES if role != "admin"}
    keys["admin"] = collector.admin_key
    spec = httpx.get(f"{collector.url}/openapi.json", timeout=30).json()
    operations = [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    return {"keys": keys, "operations": operations, "trace_id": trace_ids[0]}


def request(
    collector: CollectorProcess,
    method: str,
    path: str,
    operation: dict,
    key: str | None,
    world: dict,
) -> httpx.Response:
    params: dict[str, str] = {}
    filled = path
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path":
            value = world["trace_id"] if name == "trace_id" else "no-such-id"
            filled = filled.replace("{" + name + "}", value)
        elif name in PERIOD:
            params[name] = PERIOD[name]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body: dict[str, Any] = {}
    if "requestBody" in operation:
        body["json"] = {}
    return httpx.request(
        method, f"{collector.url}{filled}", params=params, headers=headers, timeout=60, **body
    )


def test_every_route_is_in_the_role_table(world: dict) -> None:
    unknown = [f"{m} {p}" for m, p, _ in world["operations"] if expected_roles(m, p) is None]
    assert unknown == [], "routes missing from the role table in tests/test_roles.py"


def test_role_matrix_holds_for_every_route(collector: CollectorProcess, world: dict) -> None:
    wrong: list[str] = []
    for method, path, operation in world["operations"]:
        roles = expected_roles(method, path)
        if roles is None:
            continue
        for role, key in [
            ("none", None),
            ("bogus", "tt_000000000000_nope"),
            *world["keys"].items(),
        ]:
            status = request(collector, method, path, operation, key, world).status_code
            if roles == PUBLIC:
                expected = "not 401/403"
            elif role in ("none", "bogus"):
                expected = "401"
            elif role == "admin" or role in roles:
                expected = "not 401/403"
            else:
                expected = "403"
            allowed = status not in (401, 403)
            if (expected == "not 401/403") != allowed or (expected == "403" and status != 403):
                wrong.append(f"{method} {path} as {role}: got {status}, expected {expected}")
            if status >= 500:
                wrong.append(f"{method} {path} as {role}: got {status}")
    assert wrong == []


def is_text(value: Any) -> bool:
    if isinstance(value, list):
        return any(is_text(item) for item in value)
    return isinstance(value, str) and value != ""


def content_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {k for k in CONTENT_FIELDS & value.keys() if is_text(value[k])}
        for item in value.values():
            found |= content_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(content_in(item) for item in value)) if value else set()
    return set()


def test_no_content_for_finance_or_any_role_without_content_rights(
    collector: CollectorProcess, world: dict
) -> None:
    leaks: list[str] = []
    checked = 0
    for method, path, operation in world["operations"]:
        for role, key in world["keys"].items():
            if role in CONTENT_ROLES:
                continue
            response = request(collector, method, path, operation, key, world)
            if response.status_code >= 400:
                continue
            checked += 1
            if MARKER in response.text:
                leaks.append(f"{method} {path} gave {role} content text")
            kind = response.headers.get("content-type", "")
            documents = []
            if kind.startswith("application/json"):
                documents = [response.json()]
            elif kind.startswith("application/x-ndjson"):
                documents = [json.loads(line) for line in response.text.splitlines()]
            for document in documents:
                fields = content_in(document)
                if fields:
                    leaks.append(f"{method} {path} gave {role} fields {sorted(fields)}")
    assert leaks == []
    assert checked >= 5  # spend, calls metadata, audit log, exports, ...
    # ... while an engineer does see the (redacted) content.
    engineer = world["keys"]["engineer"]
    rows = collector.get("/api/v1/calls", key=engineer, team="roles-a", **PERIOD).json()["rows"]
    assert rows and all(MARKER in row["input_content"] for row in rows)


def test_finance_spend_views_carry_no_content(collector: CollectorProcess, world: dict) -> None:
    finance = world["keys"]["finance"]
    groups = "team,project,user,app,route,provider,model,operation,status"
    for granularity in ("hour", "day", None):
        params = {**PERIOD, "group_by": groups}
        if granularity:
            params["granularity"] = granularity
        response = collector.get("/api/v1/spend", key=finance, **params)
        assert response.status_code == 200 and MARKER not in response.text
        assert not content_in(response.json())

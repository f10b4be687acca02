"""SQL injection through every query and path parameter of every GET route in
the OpenAPI schema: each attempt gets a 4xx or exactly what any other
non-matching value gets, and afterwards every table is there with the rows it had."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.compliance_helpers import PERIOD, seed_calls
from tests.conftest import CollectorProcess

INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE llm_calls; --",
    '" OR ""="',
    "1; DROP TABLE spans",
    "') OR ('1'='1",
    "x' UNION ALL SELECT key_hash FROM api_keys --",
    "{team:String}",
    "\\'; SELECT 1; --",
    "1' AND sleep(3) = 0 --",
    "'||(SELECT count() FROM llm_calls)||'",
    "team OR 1",
    "%27%20OR%201%3D1",
    "`llm_calls`",
    "x\x00' OR 1=1",
]
HARMLESS = "no-such-value-zz"
COUNTED = ("spans", "llm_calls", "tool_calls")


def counts(collector: CollectorProcess) -> dict[str, Any]:
    sql = ", ".join(f"(SELECT count() FROM {t}) AS {t}" for t in COUNTED)
    response = collector.post("/api/v1/sql", json={"sql": f"SELECT {sql}"})
    assert response.status_code == 200, response.text
    keys = collector.get("/api/v1/keys").json()["rows"]
    return {**response.json()["rows"][0], "api_keys": len(keys)}


@pytest.fixture(scope="module")
def operations(collector: CollectorProcess) -> list[tuple[str, dict]]:
    seed_calls(collector, teams=("inj-a", "inj-b"), per_team=2)
    spec = httpx.get(f"{collector.url}/openapi.json", timeout=30).json()
    return [(path, ops["get"]) for path, ops in spec["paths"].items() if "get" in ops]


def call(client: httpx.Client, path: str, operation: dict, name: str, value: str):
    params = {k: v for k, v in PERIOD.items() if k != name}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            replacement = value if parameter["name"] == name else HARMLESS
            path = path.replace("{" + parameter["name"] + "}", quote(replacement, safe=""))
        elif parameter["name"] == name:
            params[name] = value
    return client.get(path, params=params)


def comparable(response: httpx.Response) -> Any:
    """What must not differ from the harmless value's answer: the rows."""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and "rows" in body:
            return body["rows"]
        return None
    if response.headers.get("content-type", "").startswith("application/x-ndjson"):
        return response.text  # an export: the same (empty) file
    return None


def test_injection_through_every_parameter(
    collector: CollectorProcess, operations: list[tuple[str, dict]]
) -> None:
    before = counts(collector)
    tried = 0
    wrong: list[str] = []
    client = httpx.Client(base_url=collector.url, headers=collector.headers(), timeout=60)
    for path, operation in operations:
        names = [p["name"] for p in operation.get("parameters", [])]
        for name in names:
            baseline = call(client, path, operation, name, HARMLESS)
            for attempt in INJECTIONS:
                response = call(client, path, operation, name, attempt)
                tried += 1
                where = f"GET {path} {name}={attempt!r}"
                if response.status_code >= 500:
                    wrong.append(f"{where}: {response.status_code} {response.text[:200]}")
                elif 400 <= response.status_code < 500:
                    continue
                elif response.status_code != baseline.status_code:
                    wrong.append(
                        f"{where}: {response.status_code}, harmless value got "
                        f"{baseline.status_code}"
                    )
                elif comparable(response) != comparable(baseline):
                    wrong.append(f"{where}: answered differently from a harmless value")
    client.close()
    assert wrong == []
    assert tried >= 30 * len(INJECTIONS)
    assert counts(collector) == before
    chain = collector.get("/api/v1/audit/verify").json()
    assert chain["ok"], chain["problem"]


def test_filters_with_injections_return_nothing(collector: CollectorProcess, operations) -> None:
    """The plainest case, spelled out: the classic strings match no rows."""
    for attempt in INJECTIONS:
        assert collector.calls(team=attempt, **PERIOD) == []
        assert collector.calls(model=attempt, **PERIOD) == []
        spend = collector.get("/api/v1/spend", team=attempt, group_by="team", **PERIOD)
        assert spend.json()["rows"] == []


def test_sql_parameters_are_values_never_sql(collector: CollectorProcess, operations) -> None:
    for attempt in INJECTIONS:
        response = collector.post(
            "/api/v1/sql",
            json={
                "sql": "SELECT count() AS n FROM llm_calls WHERE team = {team:String}",
                "params": {"team": attempt},
            },
        )
        assert response.status_code == 200 and response.json()["rows"] == [{"n": 0}]

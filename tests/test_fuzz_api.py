"""Fuzzing the running collector from its own OpenAPI schema with hypothesis:
thousands of malformed requests (odd parameters, wrong types, junk bodies,
bad keys) in about a minute, and not one 5xx or crash."""

from __future__ import annotations

import contextlib
import gzip
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from collector.auth import ROLES
from tests.compliance_helpers import seed_calls
from tests.conftest import CollectorProcess

BUDGET_SECONDS = 60.0
MIN_REQUESTS = 2000

# Values that break naive parsers: empty, huge, negative, non-numbers,
# separators, quotes, control characters, non-ASCII, SQL, very long.
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-1",
            "1e309",
            "NaN",
            "inf",
            "-0",
            "18446744073709551616",
            "99999999999999999999999",
            "1970-01-01",
            "9999-12-31T23:59:59Z",
            "0001-01-01",
            "2026-02-30",
            "1.5",
            ",,,",
            "team,,model",
            "../../etc/passwd",
            "%00",
            "\x00",
            "\u202e",
            "' OR 1=1 --",
            "{x:String}",
            "true",
            "null",
            "[]",
            "{}",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(min_size=1, max_size=20).map(lambda s: s * 100),  # long, cheaply
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def world(collector: CollectorProcess) -> dict[str, Any]:
    seed_calls(collector, teams=("fuzz",), per_team=2)
    keys: list[str | None] = [collector.admin_key] * 4
    keys += [collector.create_key(role, f"fuzz-{role}") for role in ROLES if role != "admin"]
    keys += [None, "tt_000000000000_wrong", "not-a-key", "tt__"]
    spec = httpx.get(f"{collector.url}/openapi.json", timeout=30).json()
    operations = [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    return {"keys": keys, "operations": operations}


@st.composite
def malformed_request(draw: st.DrawFn, world: dict[str, Any]) -> dict[str, Any]:
    method, path, operation = draw(st.sampled_from(world["operations"]))
    route = path
    names = [p["name"] for p in operation.get("parameters", [])]
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = draw(odd_text) or "x"
            path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
    params: list[tuple[str, str]] = []
    if names:  # a parameter may come twice or not at all
        for name in draw(st.lists(st.sampled_from(names), max_size=6)):
            params.append((name, draw(odd_text)))
    if draw(st.booleans()):
        params.append((draw(st.text(max_size=12)), draw(odd_text)))  # a name nobody expects
    key = draw(st.sampled_from(world["keys"]))
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    request: dict[str, Any] = {
        "method": method,
        "url": path,
        "params": params,
        "headers": headers,
        "route": route,
    }
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        body_kind = draw(st.sampled_from(["json", "bytes", "shaped", "gzip-junk", "none"]))
        content_type = draw(
            st.sampled_from(
                ["application/json", "application/x-protobuf", "text/plain", "", "x/y; q=1"]
            )
        )
        if body_kind == "json":
            request["content"] = orjson.dumps(draw(json_values))
        elif body_kind == "bytes":
            request["content"] = draw(st.binary(max_size=300))
        elif body_kind == "shaped":  # the right keys with wrong or odd values
            fields = ["sql", "params", "limit", "role", "name", "resourceSpans", "team"]
            shaped = draw(st.dictionaries(st.sampled_from(fields), json_values, max_size=4))
            request["content"] = orjson.dumps(shaped)
        elif body_kind == "gzip-junk":
            request["content"] = draw(st.sampled_from([b"\x1f\x8b junk", gzip.compress(b"{}")]))
            headers["Content-Encoding"] = "gzip"
        if content_type:
            headers["Content-Type"] = content_type
    return request


class TimeIsUp(Exception):
    """Ends the hypothesis run when the time budget is spent."""


def test_thousands_of_malformed_requests_get_no_5xx(
    collector: CollectorProcess, world: dict[str, Any]
) -> None:
    client = httpx.Client(base_url=collector.url, timeout=30)
    deadline = time.monotonic() + BUDGET_SECONDS
    sent = 0
    # One example per kind of failure: (method, route, status) -> request and answer.
    failures: dict[tuple[str, str, int], str] = {}

    @settings(
        max_examples=50_000,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=malformed_request(world))
    def send(request: dict[str, Any]) -> None:
        nonlocal sent
        if time.monotonic() > deadline:
            raise TimeIsUp
        route = request.pop("route")
        try:
            try:
                response = client.request(**request)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                response = client.request(**request)  # a closed keep-alive connection
        except (httpx.InvalidURL, httpx.LocalProtocolError):
            return  # httpx itself will not send this one
        except httpx.TransportError as exc:
            failures.setdefault((request["method"], route, 0), f"no answer: {exc!r}")
            return
        sent += 1
        if response.status_code >= 500:
            failures.setdefault(
                (request["method"], route, response.status_code),
                f"{request['url'][:200]} {request['params']!r:.300}: {response.text[:300]}",
            )

    with contextlib.suppress(TimeIsUp):
        send()
    client.close()
    report = "\n".join(f"{m} {r} -> {s}: {example}" for (m, r, s), example in failures.items())
    assert failures == {}, f"{len(failures)} kinds of 5xx in {sent} requests:\n{report}"
    assert sent >= MIN_REQUESTS, f"only {sent} requests in {BUDGET_SECONDS} s"
    assert collector.process is not None and collector.process.poll() is None
    assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200

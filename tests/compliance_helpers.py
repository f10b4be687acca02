"""Data for the compliance tests: OTLP/JSON model calls and tool calls with
content (PII and a marker string), sent to a real collector over HTTP."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import orjson

from tests.conftest import CollectorProcess

# A string that appears only in content (prompts, responses, tool payloads):
# finding it in a response means content was returned.
MARKER = "ZEBRA-QUOKKA-CONTENT-7731"
PERIOD = {"from": "2020-01-01", "to": "2030-01-01"}
PHONE = "+1 415 555 0100"


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def messages(text: str) -> str:
    return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])


def chat_span(trace_id: str, team: str, ts_ns: int, prompt: str, **extra: Any) -> dict[str, Any]:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.input.messages": messages(prompt),
        "gen_ai.output.messages": messages(f"answer {MARKER} reach me at help@vendor.example"),
        "tokentrail.team": team,
        "tokentrail.project": "compliance-tests",
        **extra,
    }
    return _span(trace_id, f"chat gpt-4o {team}", ts_ns, attributes)


def tool_span(trace_id: str, team: str, ts_ns: int) -> dict[str, Any]:
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_customer",
        "gen_ai.tool.call.id": "call_" + secrets.token_hex(4),
        "gen_ai.tool.call.arguments": json.dumps({"email": "carol@example.org", "note": MARKER}),
        "gen_ai.tool.call.result": json.dumps({"card": "5555 5555 5555 4444", "note": MARKER}),
        "tokentrail.team": team,
    }
    return _span(trace_id, "execute_tool lookup_customer", ts_ns, attributes)


def _span(trace_id: str, name: str, ts_ns: int, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": secrets.token_hex(8),
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(ts_ns),
        "endTimeUnixNano": str(ts_ns + 800_000_000),
        "attributes": [_attr(k, v) for k, v in attributes.items()],
        "status": {"code": 0},
    }


def otlp_body(spans: list[dict[str, Any]], service: str = "compliance-app") -> bytes:
    resource = {"attributes": [_attr("service.name", service)]}
    return orjson.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    )


def send(collector: CollectorProcess, key: str, spans: list[dict[str, Any]], **kw: Any) -> None:
    response = collector.post(
        "/v1/traces",
        key,
        content=otlp_body(spans, **kw),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def seed_calls(
    collector: CollectorProcess,
    teams: tuple[str, ...] = ("payments", "research"),
    per_team: int = 2,
    ts_ns: int | None = None,
) -> list[str]:
    """Model calls (and one tool call each) per team; returns their trace ids."""
    key = collector.create_key("ingest", "compliance-seed")
    now = ts_ns or time.time_ns() - 3_600_000_000_000
    trace_ids = []
    spans = []
    for team in teams:
        for n in range(per_team):
            trace_id = secrets.token_hex(16)
            trace_ids.append(trace_id)
            prompt = (
                f"{MARKER} I am dave@corp.example, card 4111 1111 1111 1111, call +1 415 555 0100"
            )
            spans.append(chat_span(trace_id, team, now + n * 1_000_000, prompt))
            spans.append(tool_span(trace_id, team, now + n * 1_000_000 + 500))
    send(collector, key, spans)
    expected = len(teams) * per_team
    collector.wait_for(lambda: len(collector.calls(limit=1000, **PERIOD)) >= expected)
    return trace_ids


def api(collector: CollectorProcess, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{collector.url}{path}", headers=collector.headers(key), timeout=60, **kw
    )

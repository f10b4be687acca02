"""Proxy + SDK reports of one call merge into one llm_calls row (ingest/dedupe.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ingest.dedupe import MERGED, merge_double_captures
from ingest.migrate import migrate
from ingest.rows import LLM_CALLS_SCHEMA, TOOL_CALLS_SCHEMA, rows_table
from ingest.store import ChdbStore, Store, query_rows

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    opened = ChdbStore(tmp_path / "chdb")
    migrate(opened)
    yield opened
    opened.close()


def call(span_id: str, source: str, **extra: Any) -> dict[str, Any]:
    base = {
        "ts": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "trace_id": TRACE,
        "span_id": span_id,
        "parent_span_id": "",
        "source": source,
        "attributes": {},
        "http_status": 0,
        "attempt": 0,
        "tool_call_count": 0,
        "redaction_count": 0,
        "duration_ms": 10.0,
        "is_stream": False,
        "team": "",
        "app": "",
        "provider_request_id": "",
    }
    return {**base, **extra}


SDK = call(
    "00000000000000aa",
    "otlp",
    team="search",
    app="ranker",
    provider_request_id="chatcmpl-1",
    input_tokens=None,
    attributes={"gen_ai.agent.name": "planner"},
)
PROXY = call(
    "00000000000000bb",
    "proxy",
    parent_span_id="00000000000000cc",
    provider_request_id="chatcmpl-1",
    input_tokens=1200,
    output_tokens=30,
    cost_usd=Decimal("0.0042"),
    http_status=200,
    api_key_fingerprint="abc123def456",
)


def rows(store: Store) -> list[dict[str, Any]]:
    return query_rows(
        store,
        "SELECT span_id, source, team, app, input_tokens, cost_usd, "
        "http_status, api_key_fingerprint, attributes FROM llm_calls",
    )


@pytest.mark.parametrize("first", ["sdk", "proxy"])
def test_twins_merge_in_either_order(store: Store, first: str) -> None:
    order = [SDK, PROXY] if first == "sdk" else [PROXY, SDK]
    store.insert_arrow("llm_calls", rows_table([order[0]], LLM_CALLS_SCHEMA))
    assert merge_double_captures(store, [TRACE]) == 0  # the twin has not arrived yet
    store.insert_arrow("llm_calls", rows_table([order[1]], LLM_CALLS_SCHEMA))
    assert merge_double_captures(store, [TRACE]) == 1
    (row,) = rows(store)
    assert (row["span_id"], row["source"], row["team"], row["app"]) == (
        SDK["span_id"],
        MERGED,
        "search",
        "ranker",
    )
    assert (row["input_tokens"], row["cost_usd"], row["http_status"]) == (
        1200,
        Decimal("0.0042"),
        200,
    )
    assert row["api_key_fingerprint"] == "abc123def456"
    assert dict(row["attributes"])["gen_ai.agent.name"] == "planner"
    assert merge_double_captures(store, [TRACE]) == 0 and len(rows(store)) == 1


def test_child_proxy_span_without_response_id_merges_with_its_sdk_parent(store: Store) -> None:
    sdk = {**SDK, "provider_request_id": ""}
    proxy = {**PROXY, "provider_request_id": "", "parent_span_id": SDK["span_id"]}
    store.insert_arrow("llm_calls", rows_table([sdk, proxy], LLM_CALLS_SCHEMA))
    assert merge_double_captures(store, [TRACE]) == 1
    assert [r["source"] for r in rows(store)] == [MERGED]


def test_a_replayed_proxy_row_beside_a_merged_row_is_dropped(store: Store) -> None:
    store.insert_arrow("llm_calls", rows_table([SDK, PROXY], LLM_CALLS_SCHEMA))
    merge_double_captures(store, [TRACE])
    store.insert_arrow("llm_calls", rows_table([PROXY], LLM_CALLS_SCHEMA))  # WAL replay
    merge_double_captures(store, [TRACE])
    assert [r["source"] for r in rows(store)] == [MERGED]


def test_unrelated_calls_in_one_trace_stay_apart(store: Store) -> None:
    other = {**PROXY, "span_id": "00000000000000dd", "provider_request_id": "chatcmpl-2"}
    store.insert_arrow("llm_calls", rows_table([SDK, other], LLM_CALLS_SCHEMA))
    assert merge_double_captures(store, [TRACE]) == 0
    assert sorted(r["source"] for r in rows(store)) == ["otlp", "proxy"]


def test_requested_tools_move_to_the_merged_span(store: Store) -> None:
    tool = {
        "ts": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "trace_id": TRACE,
        "span_id": PROXY["span_id"],
        "llm_span_id": PROXY["span_id"],
        "tool_name": "search",
        "tool_call_id": "call_1",
        "arguments": "{}",
        "result": "",
        "status": "requested",
        "team": "",
        "project": "",
        "app": "",
        "source": "proxy",
        "redaction_count": 0,
    }
    store.insert_arrow("tool_calls", rows_table([tool], TOOL_CALLS_SCHEMA))
    store.insert_arrow("llm_calls", rows_table([SDK, PROXY], LLM_CALLS_SCHEMA))
    merge_double_captures(store, [TRACE])
    tools = query_rows(store, "SELECT span_id, llm_span_id, tool_call_id FROM tool_calls")
    assert tools == [
        {"span_id": SDK["span_id"], "llm_span_id": SDK["span_id"], "tool_call_id": "call_1"}
    ]

"""Proxy + SDK reports of one call merge into one llm_calls row (ingest/dedupe.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


STARTED = datetime(2026, 11, 23, 10, tzinfo=UTC)


def merge(store: Store, started: datetime = STARTED) -> int:
    """The writer's merge after a batch whose calls all started at ``started``."""
    return merge_double_captures(store, [TRACE], started, started)


def call(span_id: str, source: str, **extra: Any) -> dict[str, Any]:
    base = {
        "ts": STARTED,
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
    assert merge(store) == 0  # the twin has not arrived yet
    store.insert_arrow("llm_calls", rows_table([order[1]], LLM_CALLS_SCHEMA))
    assert merge(store) == 1
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
    assert merge(store) == 0 and len(rows(store)) == 1


def test_child_proxy_span_without_response_id_merges_with_its_sdk_parent(store: Store) -> None:
    sdk = {**SDK, "provider_request_id": ""}
    proxy = {**PROXY, "provider_request_id": "", "parent_span_id": SDK["span_id"]}
    store.insert_arrow("llm_calls", rows_table([sdk, proxy], LLM_CALLS_SCHEMA))
    assert merge(store) == 1
    assert [r["source"] for r in rows(store)] == [MERGED]


def test_a_replayed_proxy_row_beside_a_merged_row_is_dropped(store: Store) -> None:
    store.insert_arrow("llm_calls", rows_table([SDK, PROXY], LLM_CALLS_SCHEMA))
    merge(store)
    store.insert_arrow("llm_calls", rows_table([PROXY], LLM_CALLS_SCHEMA))  # WAL replay
    merge(store)
    assert [r["source"] for r in rows(store)] == [MERGED]


def test_unrelated_calls_in_one_trace_stay_apart(store: Store) -> None:
    other = {**PROXY, "span_id": "00000000000000dd", "provider_request_id": "chatcmpl-2"}
    store.insert_arrow("llm_calls", rows_table([SDK, other], LLM_CALLS_SCHEMA))
    assert merge(store) == 0
    assert sorted(r["source"] for r in rows(store)) == ["otlp", "proxy"]


def test_requested_tools_move_to_the_merged_span(store: Store) -> None:
    tool = {
        "ts": STARTED,
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
    merge(store)
    tools = query_rows(store, "SELECT span_id, llm_span_id, tool_call_id FROM tool_calls")
    assert tools == [
        {"span_id": SDK["span_id"], "llm_span_id": SDK["span_id"], "tool_call_id": "call_1"}
    ]


def test_twins_are_looked_for_near_the_batch_calls_start(store: Store) -> None:
    # The proxy's report arrives a day late (a spool that waited out an outage):
    # its ts is still the call's start, so the twin check finds the SDK's row.
    store.insert_arrow("llm_calls", rows_table([SDK], LLM_CALLS_SCHEMA))
    late_proxy = {**PROXY, "ts": STARTED + timedelta(minutes=20)}
    store.insert_arrow("llm_calls", rows_table([late_proxy], LLM_CALLS_SCHEMA))
    # A batch of calls from another day does not read this hour of the table.
    assert merge(store, STARTED + timedelta(days=1)) == 0
    assert len(rows(store)) == 2
    assert merge(store, late_proxy["ts"]) == 1
    assert [r["source"] for r in rows(store)] == [MERGED]

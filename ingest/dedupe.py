"""One row per call when the proxy and an instrumented SDK both report it.

The two spans arrive separately and in any order (the proxy spools), so the
merge runs after each stored batch, over the traces that batch touched: a
proxy row and an SDK row are the same call when they share the provider's
response id, or when the proxy's span is a child of the SDK's (traceparent).
The merged row keeps the SDK span's identity and app context (it is the node
of the app's trace) and the proxy's provider facts (tokens, cost, status).

Merging inserts the merged row first and then deletes the originals, so a
crash in between leaves a duplicate that the next pass removes — never a loss.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest.rows import LLM_CALLS_SCHEMA, TOOL_CALLS_SCHEMA, rows_table
from ingest.store import Store, query_rows

MERGED = "proxy+otlp"
# The app knows who and why; the proxy knows what the provider said.
FROM_SDK_WHEN_SET = ("team", "project", "user_id", "app", "route")
SDK_IDENTITY = ("trace_id", "span_id", "parent_span_id")
# Both reports carry the call's own start time (the proxy's is when the request
# passed it, however late the spool delivers it), so twins are looked for only
# this close to the batch's calls: each flush then reads the recent part of
# llm_calls, not the whole table. An hour covers long calls, retries inside
# one SDK span and clock skew between the app's host and the proxy's.
TWIN_SKEW = timedelta(hours=1)
_NEAR = "ts BETWEEN {since:DateTime64(6)} AND {until:DateTime64(6)}"

_TRACES_WITH_BOTH = f"""
SELECT trace_id FROM llm_calls
WHERE trace_id IN {{traces:Array(String)}} AND {_NEAR}
GROUP BY trace_id
HAVING countIf(source = 'proxy') > 0 AND countIf(source != 'proxy') > 0
"""


def merged_row(proxy: dict[str, Any], sdk: dict[str, Any]) -> dict[str, Any]:
    row = dict(proxy)
    for column in SDK_IDENTITY:
        row[column] = sdk[column]
    for column in FROM_SDK_WHEN_SET:
        row[column] = sdk[column] or proxy[column]
    for column in ("input_content", "output_content"):
        row[column] = proxy[column] or sdk[column]
    row["attributes"] = {**dict(proxy["attributes"] or []), **dict(sdk["attributes"] or [])}
    row["source"] = MERGED
    return row


def pair_calls(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(proxy row, SDK-or-merged row) pairs that are one call, within one trace."""
    sdk_rows = [r for r in rows if r["source"] != "proxy"]
    by_request = {
        (r["trace_id"], r["provider_request_id"]): r for r in sdk_rows if r["provider_request_id"]
    }
    by_span = {(r["trace_id"], r["span_id"]): r for r in sdk_rows}
    pairs = []
    for proxy in (r for r in rows if r["source"] == "proxy"):
        partner = None
        if proxy["provider_request_id"]:
            partner = by_request.get((proxy["trace_id"], proxy["provider_request_id"]))
        if partner is None:
            parent = by_span.get((proxy["trace_id"], proxy["parent_span_id"]))
            # A parent that already merged another attempt is not this attempt's twin.
            if parent is not None and parent["source"] != MERGED:
                partner = parent
        if partner is not None:
            pairs.append((proxy, partner))
    return pairs


def merge_double_captures(
    store: Store, trace_ids: list[str], first: datetime, last: datetime
) -> int:
    """Merge proxy/SDK twins in these traces among calls that started between
    ``first`` and ``last`` (± TWIN_SKEW); return how many calls were merged."""
    if not trace_ids:
        return 0
    near = {"since": first - TWIN_SKEW, "until": last + TWIN_SKEW}
    found = query_rows(store, _TRACES_WITH_BOTH, {"traces": trace_ids, **near})
    if not found:
        return 0
    columns = ", ".join(LLM_CALLS_SCHEMA.names)
    rows = query_rows(
        store,
        f"SELECT {columns} FROM llm_calls WHERE trace_id IN {{traces:Array(String)}} AND {_NEAR}",
        {"traces": [r["trace_id"] for r in found], **near},
    )
    pairs = pair_calls(rows)
    fresh = [(proxy, partner) for proxy, partner in pairs if partner["source"] != MERGED]
    merged = [merged_row(proxy, partner) for proxy, partner in fresh]
    # Rows a merged row replaces: both originals of a fresh pair, and a proxy
    # row left beside an existing merged row (a crash or a WAL replay).
    stale = [f"{proxy['span_id']}/proxy" for proxy, _ in pairs]
    stale += [f"{partner['span_id']}/{partner['source']}" for _, partner in fresh]
    if merged:
        store.insert_arrow("llm_calls", rows_table(merged, LLM_CALLS_SCHEMA))
        _move_requested_tools(store, [(partner["span_id"], proxy) for proxy, partner in fresh])
    if stale:
        store.command(
            "DELETE FROM llm_calls WHERE concat(span_id, '/', source) IN {stale:Array(String)}",
            {"stale": stale},
        )
    return len(merged)


def _move_requested_tools(store: Store, moves: list[tuple[str, dict[str, Any]]]) -> None:
    """Tool calls the proxy saw requested hang on the merged call's span; when
    the SDK reported them too, the proxy's copies go."""
    proxy_spans = [proxy["span_id"] for _, proxy in moves]
    target = {proxy["span_id"]: span for span, proxy in moves}
    tools = query_rows(
        store,
        "SELECT * EXCEPT (ingested_at) FROM tool_calls WHERE "
        "span_id IN {spans:Array(String)} AND status = 'requested'",
        {"spans": proxy_spans + list(target.values())},
    )
    have = {(t["span_id"], t["tool_call_id"]) for t in tools}
    moved = [
        {**t, "span_id": target[t["span_id"]], "llm_span_id": target[t["span_id"]]}
        for t in tools
        if t["span_id"] in target and (target[t["span_id"]], t["tool_call_id"]) not in have
    ]
    if moved:
        store.insert_arrow("tool_calls", rows_table(moved, TOOL_CALLS_SCHEMA))
    if any(t["span_id"] in target for t in tools):
        store.command(
            "DELETE FROM tool_calls WHERE span_id IN {spans:Array(String)} "
            "AND status = 'requested'",
            {"spans": proxy_spans},
        )


def batch_trace_ids(llm_calls: pa.Table) -> list[str]:
    return sorted(set(llm_calls.column("trace_id").to_pylist())) if llm_calls.num_rows else []


def batch_time_range(llm_calls: pa.Table) -> tuple[datetime, datetime]:
    """The first and last call start of a non-empty llm_calls batch."""
    bounds = pc.min_max(llm_calls.column("ts"))
    return bounds["min"].as_py(), bounds["max"].as_py()

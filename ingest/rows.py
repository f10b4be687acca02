"""Row dicts → Arrow tables shaped like the store's tables.

The Arrow schemas here mirror the migrations' columns (minus server-side
defaults such as ``ingested_at``); a test checks the two agree.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from ingest.records import AttrValue, SpanRecord

_STR = pa.string()
_MAP = pa.map_(pa.string(), pa.string())
_NS = pa.timestamp("ns", tz="UTC")
_US = pa.timestamp("us", tz="UTC")
COST_TYPE = pa.decimal128(38, 12)

SPANS_SCHEMA = pa.schema(
    [
        ("ts", _NS),
        ("trace_id", _STR),
        ("span_id", _STR),
        ("parent_span_id", _STR),
        ("name", _STR),
        ("kind", _STR),
        ("duration_ms", pa.float64()),
        ("status", _STR),
        ("status_message", _STR),
        ("service_name", _STR),
        ("scope_name", _STR),
        ("attributes", _MAP),
        ("resource", _MAP),
        ("events", _STR),
    ]
)

LLM_CALLS_SCHEMA = pa.schema(
    [
        ("ts", _US),
        ("trace_id", _STR),
        ("span_id", _STR),
        ("parent_span_id", _STR),
        ("source", _STR),
        ("provider", _STR),
        ("operation", _STR),
        ("request_model", _STR),
        ("response_model", _STR),
        ("server_address", _STR),
        ("http_status", pa.uint16()),
        ("status", _STR),
        ("error_type", _STR),
        ("is_stream", pa.bool_()),
        ("duration_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("input_tokens", pa.uint64()),
        ("output_tokens", pa.uint64()),
        ("cache_read_tokens", pa.uint64()),
        ("cache_write_tokens", pa.uint64()),
        ("reasoning_tokens", pa.uint64()),
        ("cost_usd", COST_TYPE),
        ("cost_source", _STR),
        ("price_version", _STR),
        ("team", _STR),
        ("project", _STR),
        ("user_id", _STR),
        ("app", _STR),
        ("route", _STR),
        ("api_key_fingerprint", _STR),
        ("attempt", pa.uint16()),
        ("retry_of", _STR),
        ("fallback_of", _STR),
        ("gateway_cache", _STR),
        ("finish_reason", _STR),
        ("tool_call_count", pa.uint32()),
        ("provider_request_id", _STR),
        ("request_hash", _STR),
        ("input_content", _STR),
        ("output_content", _STR),
        ("redaction_count", pa.uint32()),
        ("attributes", _MAP),
    ]
)

TOOL_CALLS_SCHEMA = pa.schema(
    [
        ("ts", _US),
        ("trace_id", _STR),
        ("span_id", _STR),
        ("llm_span_id", _STR),
        ("tool_name", _STR),
        ("tool_call_id", _STR),
        ("arguments", _STR),
        ("result", _STR),
        ("duration_ms", pa.float64()),
        ("status", _STR),
        ("team", _STR),
        ("project", _STR),
        ("app", _STR),
        ("source", _STR),
        ("redaction_count", pa.uint32()),
    ]
)


def attr_text(value: AttrValue) -> str:
    """An attribute value as the text stored in a Map(String, String)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return orjson.dumps(value, default=str).decode()


def _map_array(maps: list[dict[str, AttrValue]]) -> pa.MapArray:
    # Building offsets + flat keys/values is several times faster than
    # handing pyarrow a list of dicts.
    offsets = [0]
    keys: list[str] = []
    values: list[str] = []
    total = 0
    for mapping in maps:
        for key, value in mapping.items():
            keys.append(key)
            values.append(value if isinstance(value, str) else attr_text(value))
        total += len(mapping)
        offsets.append(total)
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, _STR), pa.array(values, _STR)
    )


def spans_table(spans: list[SpanRecord], content_redactor: Any = None) -> pa.Table:
    """The ``spans`` rows. ``content_redactor(attributes) -> attributes`` cleans
    content-bearing attributes before they are stored."""
    redact = content_redactor or (lambda attrs: attrs)
    columns: dict[str, list[Any]] = {name: [] for name in SPANS_SCHEMA.names}
    for span in spans:
        resource = span["resource"]
        columns["ts"].append(span["start_ns"])
        columns["trace_id"].append(span["trace_id"])
        columns["span_id"].append(span["span_id"])
        columns["parent_span_id"].append(span["parent_span_id"])
        columns["name"].append(span["name"])
        columns["kind"].append(span["kind"])
        columns["duration_ms"].append(max(span["end_ns"] - span["start_ns"], 0) / 1e6)
        columns["status"].append(span["status"])
        columns["status_message"].append(span["status_message"])
        columns["service_name"].append(str(resource.get("service.name", "")))
        columns["scope_name"].append(span["scope_name"])
        columns["attributes"].append(redact(span["attributes"]))
        columns["resource"].append(resource)
        events = span["events"]
        columns["events"].append(
            orjson.dumps([redact_event(e, redact) for e in events], default=str).decode()
            if events
            else ""
        )
    arrays = [
        _map_array(columns[name]) if name in ("attributes", "resource") else columns[name]
        for name in SPANS_SCHEMA.names
    ]
    return pa.Table.from_arrays(
        [
            a if isinstance(a, pa.Array) else pa.array(a, field.type)
            for a, field in zip(arrays, SPANS_SCHEMA, strict=True)
        ],
        schema=SPANS_SCHEMA,
    )


def redact_event(event: dict[str, Any], redact: Any) -> dict[str, Any]:
    return {
        "name": event["name"],
        "time_ns": event["time_ns"],
        "attributes": redact(event["attributes"]),
    }


_COST_QUANTUM = Decimal("1e-12")


def _cents(value: Any) -> Decimal:
    # The column keeps 12 decimal places; Arrow refuses to round silently.
    return Decimal(value).quantize(_COST_QUANTUM)


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts (normalize's output) → a table; missing keys become NULL."""
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if field.type == _MAP:
            arrays.append(_map_array([v or {} for v in values]))
        elif field.type == COST_TYPE:
            arrays.append(pa.array([None if v is None else _cents(v) for v in values], COST_TYPE))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)

"""Row dicts → Arrow tables shaped like the store's tables.

The Arrow schemas here mirror the migrations' columns (minus server-side
defaults such as ``ingested_at``); a test checks the two agree.
"""

from __future__ import annotations

from decimal import Decimal
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

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


try:  # built by setup.py where a C compiler exists; optional
    from ingest._rows_native import flatten_maps as _flatten_native
except ImportError:  # pragma: no cover - depends on the build machine
    _flatten_native = None

# Fast paths for the common non-text value types (bool is not int here:
# dispatch is on the exact class).
_TEXT: dict[type, Any] = {int: int.__repr__, float: float.__repr__, bool: attr_text}


def flatten_maps_py(maps: list[dict[str, AttrValue]]) -> tuple[list[int], list[str], list[str]]:
    """Offsets, keys and values-as-text of ``maps``, for an Arrow MapArray.

    The reference for ``ingest/_rows_native.c``, and the path where it is not
    built. A mapping object seen before in the batch (each resource is shared
    by its spans) is converted once."""
    offsets = [0]
    keys: list[str] = []
    values: list[str] = []
    seen: dict[int, list[str]] = {}
    total = 0
    for mapping in maps:
        texts = seen.get(id(mapping))
        if texts is None:
            texts = [
                v if v.__class__ is str else _TEXT.get(v.__class__, attr_text)(v)
                for v in mapping.values()
            ]
            seen[id(mapping)] = texts
        keys.extend(mapping)
        values.extend(texts)
        total += len(texts)
        offsets.append(total)
    return offsets, keys, values


def flatten_maps(maps: list[dict[str, AttrValue]]) -> tuple[list[int], list[str], list[str]]:
    if _flatten_native is not None:
        return _flatten_native(maps, attr_text)
    return flatten_maps_py(maps)


def _map_array(maps: list[dict[str, AttrValue]]) -> pa.MapArray:
    """Flat keys/values + offsets: several times faster than a list of dicts.

    This runs for every attribute of every span, so the flattening is done in
    C where it was built (``flatten_maps``)."""
    offsets, keys, values = flatten_maps(maps)
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, _STR), pa.array(values, _STR)
    )


def take_map_without(
    maps: pa.MapArray, rows: list[int], drop_keys: frozenset[str], drop_pattern: str = ""
) -> pa.MapArray:
    """The maps of ``rows``, without ``drop_keys`` (nor keys matching the regex
    ``drop_pattern``), computed in Arrow.

    llm_calls.attributes is its span's attributes minus the content (kept in
    input/output_content), so it is cut from the spans table's map instead of
    being converted from Python a second time.
    """
    taken = maps.take(pa.array(rows, pa.int64()))
    if len(taken) == 0:
        return pa.array([], _MAP)
    offsets = taken.offsets.to_numpy()
    start, end = int(offsets[0]), int(offsets[-1])
    flat_keys = taken.keys.slice(start, end - start)
    flat_items = taken.items.slice(start, end - start)
    dropped = pa.array(sorted(drop_keys), _STR)
    if drop_pattern:  # matched on the distinct keys only: a few dozen, not every cell
        names = pc.unique(flat_keys)
        matched = names.filter(pc.match_substring_regex(names, pattern=drop_pattern))
        dropped = pa.concat_arrays([dropped, matched])
    keep = pc.invert(pc.is_in(flat_keys, value_set=dropped))
    keep_np = keep.to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(len(taken)), np.diff(offsets))
    kept_per_row = np.bincount(parents[keep_np], minlength=len(taken))
    new_offsets = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int32)
    return pa.MapArray.from_arrays(
        pa.array(new_offsets), flat_keys.filter(keep), flat_items.filter(keep)
    )


def spans_table(spans: list[SpanRecord], content_redactor: Any = None) -> pa.Table:
    """The ``spans`` rows. ``content_redactor(attributes) -> attributes`` cleans
    content-bearing attributes before they are stored.

    Built column by column: one comprehension per column is far cheaper per
    span than appending to fourteen lists in one loop."""
    redact = content_redactor or (lambda attrs: attrs)
    columns: dict[str, Any] = {
        "ts": [s["start_ns"] for s in spans],
        "trace_id": [s["trace_id"] for s in spans],
        "span_id": [s["span_id"] for s in spans],
        "parent_span_id": [s["parent_span_id"] for s in spans],
        "name": [s["name"] for s in spans],
        "kind": [s["kind"] for s in spans],
        "duration_ms": [max(s["end_ns"] - s["start_ns"], 0) / 1e6 for s in spans],
        "status": [s["status"] for s in spans],
        "status_message": [s["status_message"] for s in spans],
        "service_name": [str(s["resource"].get("service.name", "")) for s in spans],
        "scope_name": [s["scope_name"] for s in spans],
        "attributes": _map_array([redact(s["attributes"]) for s in spans]),
        "resource": _map_array([s["resource"] for s in spans]),
        "events": [
            orjson.dumps([redact_event(e, redact) for e in s["events"]], default=str).decode()
            if s["events"]
            else ""
            for s in spans
        ],
    }
    return pa.Table.from_arrays(
        [
            columns[field.name]
            if isinstance(columns[field.name], pa.Array)
            else pa.array(columns[field.name], field.type)
            for field in SPANS_SCHEMA
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


def _row_columns(rows: list[dict[str, Any]], names: list[str]) -> list[list[Any] | tuple[Any, ...]]:
    """Each of ``names`` as a column of ``rows``; a missing key is None.

    Normalized rows carry every key, so one itemgetter per row and a transpose
    do it, several times faster than a ``row.get(name)`` loop per column; the
    loop remains for rows that lack a key."""
    if rows and len(names) > 1:  # itemgetter of one name returns no tuple
        try:
            return list(zip(*map(itemgetter(*names), rows), strict=True))
        except KeyError:
            pass  # a row lacks a key
    return [[row.get(name) for row in rows] for name in names]


def rows_table(
    rows: list[dict[str, Any]], schema: pa.Schema, given: dict[str, pa.Array] | None = None
) -> pa.Table:
    """Row dicts (normalize's output) → a table; missing keys become NULL.

    ``given`` supplies ready-made columns (e.g. attributes cut in Arrow)."""
    given = given or {}
    names = [field.name for field in schema if field.name not in given]
    columns = dict(zip(names, _row_columns(rows, names), strict=True))
    arrays = []
    for field in schema:
        if field.name in given:
            arrays.append(given[field.name])
            continue
        values = columns[field.name]
        if field.type == _MAP:
            arrays.append(_map_array([v or {} for v in values]))
        elif field.type == COST_TYPE:
            arrays.append(pa.array([None if v is None else _cents(v) for v in values], COST_TYPE))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)

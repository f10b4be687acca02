"""The ingest pipeline: normalize → price → redact → Arrow tables.

``process_spans`` is the one function the collector (and the WAL replay) runs
on decoded spans; the writer stores what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ingest.dialects import CONTENT_ATTRIBUTE_KEYS
from ingest.normalize import normalize_spans
from ingest.pricing import PriceBook, price_call
from ingest.records import AttrValue, SpanRecord, TokenUsage
from ingest.redact import RedactionRules, redact_text
from ingest.rows import (
    LLM_CALLS_SCHEMA,
    TOOL_CALLS_SCHEMA,
    rows_table,
    spans_table,
    take_map_without,
)

TABLES = ("spans", "llm_calls", "tool_calls")


@dataclass(frozen=True)
class PipelineConfig:
    prices: PriceBook
    redaction: RedactionRules


@dataclass
class TableBatch:
    """Rows ready for the store, one Arrow table per target table."""

    tables: dict[str, pa.Table]
    unpriced_calls: int = 0

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


def price_rows(calls: list[dict[str, Any]], prices: PriceBook) -> int:
    """Fill cost_usd, cost_source and price_version; return how many went unpriced."""
    unpriced = 0
    for call in calls:
        usage = TokenUsage(
            input_tokens=call["input_tokens"],
            output_tokens=call["output_tokens"],
            cache_read_tokens=call["cache_read_tokens"],
            cache_write_tokens=call["cache_write_tokens"],
            reasoning_tokens=call["reasoning_tokens"],
        )
        model = call["response_model"] or call["request_model"]
        price = price_call(prices, call["provider"], model, usage)
        call["cost_usd"] = price.cost_usd
        call["cost_source"] = price.cost_source
        call["price_version"] = price.price_version
        if not call["provider"]:
            call["provider"] = price.provider  # the provider whose list priced it
        if price.cost_usd is None and price.cost_source != "no-usage":
            unpriced += 1
    return unpriced


def redact_rows(rows: list[dict[str, Any]], fields: tuple[str, ...], rules: RedactionRules) -> None:
    for row in rows:
        count = 0
        for name in fields:
            text = row.get(name) or ""
            if text:
                row[name], found = redact_text(text, rules)
                count += found
        row["redaction_count"] = count


def redact_attributes(
    attributes: dict[str, AttrValue], rules: RedactionRules
) -> dict[str, AttrValue]:
    """A copy with content-bearing attributes redacted (the input may be shared)."""
    # Runs for every span: looking up the few content keys is cheaper than
    # intersecting with all of the span's attributes.
    present = [key for key in CONTENT_ATTRIBUTE_KEYS if key in attributes]
    if not present:
        return attributes
    cleaned = dict(attributes)
    for key in present:
        value = cleaned[key]
        cleaned[key] = redact_text(value if isinstance(value, str) else str(value), rules)[0]
    return cleaned


def process_spans(
    spans: list[SpanRecord], config: PipelineConfig, source: str = "otlp"
) -> TableBatch:
    normalized = normalize_spans(spans, source)
    unpriced = price_rows(normalized.llm_calls, config.prices)
    redact_rows(normalized.llm_calls, ("input_content", "output_content"), config.redaction)
    redact_rows(normalized.tool_calls, ("arguments", "result"), config.redaction)
    spans_rows = spans_table(spans, lambda attrs: redact_attributes(attrs, config.redaction))
    call_attributes = take_map_without(
        spans_rows.column("attributes").combine_chunks(),
        [call["span_index"] for call in normalized.llm_calls],
        CONTENT_ATTRIBUTE_KEYS,
    )
    return TableBatch(
        tables={
            "spans": spans_rows,
            "llm_calls": rows_table(
                normalized.llm_calls, LLM_CALLS_SCHEMA, {"attributes": call_attributes}
            ),
            "tool_calls": rows_table(normalized.tool_calls, TOOL_CALLS_SCHEMA),
        },
        unpriced_calls=unpriced,
    )

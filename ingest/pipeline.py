"""The ingest pipeline: normalize → price → redact → Arrow tables.

``process_spans`` is the one function the collector (and the WAL replay) runs
on decoded spans; the writer stores what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ingest.dialects import CONTENT_ATTRIBUTE_KEYS, CONTENT_KEY_PATTERN, content_keys_in
from ingest.normalize import normalize_spans
from ingest.pricing import PriceBook, price_call
from ingest.records import AttrValue, SpanRecord, TokenUsage
from ingest.redact import REDACTION_MODES, RedactionPolicy, RedactionRules, redact_text
from ingest.rows import (
    LLM_CALLS_SCHEMA,
    TOOL_CALLS_SCHEMA,
    redact_event,
    rows_table,
    spans_table,
    take_map_without,
)

TABLES = ("spans", "llm_calls", "tool_calls")
MASK_EVERYWHERE = RedactionPolicy()


@dataclass(frozen=True)
class PipelineConfig:
    prices: PriceBook
    redaction: RedactionRules
    # Per team: mask with the rules above (default), drop content, or off.
    policy: RedactionPolicy = MASK_EVERYWHERE


@dataclass
class TableBatch:
    """Rows ready for the store, one Arrow table per target table."""

    tables: dict[str, pa.Table]
    unpriced_calls: int = 0
    # The sender may have delivered these rows before (X-Tokentrail-Resend):
    # the writer keeps only those the store does not have.
    maybe_stored: bool = False

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


def redact_rows(
    rows: list[dict[str, Any]],
    fields: tuple[str, ...],
    rules: RedactionRules,
    policy: RedactionPolicy = MASK_EVERYWHERE,
) -> None:
    """Apply each row's team mode to its content fields and count what was
    hidden: one per match when masking, one per non-empty field when dropping."""
    uniform = policy.uniform
    for row in rows:
        mode = uniform or policy.mode_for(row.get("team") or "")
        count = 0
        if mode == "mask":
            for name in fields:
                text = row.get(name) or ""
                if text:
                    row[name], found = redact_text(text, rules)
                    count += found
        elif mode == "drop":
            for name in fields:
                if row.get(name):
                    row[name] = ""
                    count += 1
        row["redaction_count"] = count


def redact_attributes(
    attributes: dict[str, AttrValue], rules: RedactionRules
) -> dict[str, AttrValue]:
    """A copy with content-bearing attributes redacted (the input may be shared)."""
    present = content_keys_in(attributes)  # exact keys and flattened ones (llm.input_messages.0...)
    if not present:
        return attributes
    cleaned = dict(attributes)
    for key in present:
        value = cleaned[key]
        cleaned[key] = redact_text(value if isinstance(value, str) else str(value), rules)[0]
    return cleaned


def drop_attributes(attributes: dict[str, AttrValue]) -> dict[str, AttrValue]:
    """A copy without content-bearing attributes (the input may be shared)."""
    present = content_keys_in(attributes)  # exact keys and flattened ones (llm.input_messages.0...)
    if not present:
        return attributes
    dropped = set(present)
    return {k: v for k, v in attributes.items() if k not in dropped}


AttributeCleaner = Callable[[dict[str, AttrValue]], dict[str, AttrValue]]


def attribute_cleaner(mode: str, rules: RedactionRules) -> AttributeCleaner:
    if mode == "mask":
        return lambda attributes: redact_attributes(attributes, rules)
    if mode == "drop":
        return drop_attributes
    return lambda attributes: attributes


def clean_spans_by_team(
    spans: list[SpanRecord], policy: RedactionPolicy, rules: RedactionRules
) -> list[SpanRecord]:
    """Copies of the spans with each one's team mode applied to its content
    attributes and events (only when teams have different modes)."""
    cleaners = {mode: attribute_cleaner(mode, rules) for mode in REDACTION_MODES}
    cleaned: list[SpanRecord] = []
    for span in spans:
        team = span["attributes"].get("tokentrail.team") or span["resource"].get(
            "tokentrail.team", ""
        )
        clean = cleaners[policy.mode_for(str(team))]
        events = [redact_event(e, clean) for e in span["events"]] if span["events"] else []
        cleaned.append({**span, "attributes": clean(span["attributes"]), "events": events})
    return cleaned


def process_spans(
    spans: list[SpanRecord], config: PipelineConfig, source: str = "otlp"
) -> TableBatch:
    normalized = normalize_spans(spans, source)
    unpriced = price_rows(normalized.llm_calls, config.prices)
    policy = config.policy
    redact_rows(normalized.llm_calls, ("input_content", "output_content"), config.redaction, policy)
    redact_rows(normalized.tool_calls, ("arguments", "result"), config.redaction, policy)
    if policy.uniform is not None:
        spans_rows = spans_table(spans, attribute_cleaner(policy.uniform, config.redaction))
    else:
        spans_rows = spans_table(clean_spans_by_team(spans, policy, config.redaction))
    call_attributes = take_map_without(
        spans_rows.column("attributes").combine_chunks(),
        [call["span_index"] for call in normalized.llm_calls],
        CONTENT_ATTRIBUTE_KEYS,
        CONTENT_KEY_PATTERN,
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

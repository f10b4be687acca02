"""normalize: spans → llm_calls and tool_calls rows (before price and redact).

A span is a model call or an executed tool when one of the dialects in
``ingest.dialects`` says so; everything else is kept only in ``spans``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from ingest.attribution import attribute_call
from ingest.dialects import DIALECTS
from ingest.records import SpanRecord


@dataclass
class NormalizedBatch:
    llm_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Attribution read from each resource once per batch (resources are shared).
    resources: dict[int, dict[str, str]] = field(default_factory=dict)


def request_hash(provider: str, model: str, input_content: str) -> str:
    """Same provider, model and prompt → same hash (exact-duplicate analysis).

    Taken before redaction, so two prompts that differ only in a redacted
    secret are still told apart; it is a hash, so no content leaks through it.
    """
    if not input_content:
        return ""
    return sha256(f"{provider}\x00{model}\x00{input_content}".encode()).hexdigest()[:32]


def normalize_spans(spans: list[SpanRecord], source: str = "otlp") -> NormalizedBatch:
    batch = NormalizedBatch()
    for index, span in enumerate(spans):
        for dialect in DIALECTS:
            call = dialect.model_call_facts(span)
            if call is not None:
                _add_model_call(batch, span, index, call, dialect, source)
                break
            tool = dialect.executed_tool_facts(span)
            if tool is not None:
                _add_executed_tool(batch, span, tool, source)
                break
    _link_tools_to_requests(batch.tool_calls)
    return batch


def _link_tools_to_requests(tool_calls: list[dict[str, Any]]) -> None:
    """Point each executed tool at the model call that requested it (same
    tool_call_id in the same trace); calls split across exports stay unlinked."""
    requested_by = {
        (row["trace_id"], row["tool_call_id"]): row["llm_span_id"]
        for row in tool_calls
        if row["status"] == "requested" and row["tool_call_id"]
    }
    for row in tool_calls:
        if not row["llm_span_id"]:
            row["llm_span_id"] = requested_by.get((row["trace_id"], row["tool_call_id"]), "")


def _common(span: SpanRecord, resources: dict[int, dict[str, str]]) -> dict[str, Any]:
    who = attribute_call(span["attributes"], span["resource"], resources)
    return {
        "ts": span["start_ns"] // 1000,
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "duration_ms": max(span["end_ns"] - span["start_ns"], 0) / 1e6,
        **who,
    }


def _add_model_call(
    batch: NormalizedBatch,
    span: SpanRecord,
    index: int,
    call: dict[str, Any],
    dialect: Any,
    source: str,
) -> None:
    common = _common(span, batch.resources)
    requested = dialect.requested_tool_calls(call["output_content"])
    model = call["response_model"] or call["request_model"]
    batch.llm_calls.append(
        {
            "source": source,
            **common,
            **call,
            "parent_span_id": span["parent_span_id"],
            "tool_call_count": len(requested),
            "request_hash": request_hash(call["provider"], model, call["input_content"]),
            # attributes = this span's, minus content; cut in Arrow by the pipeline.
            "span_index": index,
        }
    )
    for tool in requested:
        batch.tool_calls.append(
            {
                "ts": common["ts"],
                "trace_id": span["trace_id"],
                "span_id": span["span_id"],
                "llm_span_id": span["span_id"],
                "result": "",
                "duration_ms": None,
                "status": "requested",
                "team": common["team"],
                "project": common["project"],
                "app": common["app"],
                "source": call.get("source", source),
                **tool,
            }
        )


def _add_executed_tool(
    batch: NormalizedBatch, span: SpanRecord, tool: dict[str, Any], source: str
) -> None:
    common = _common(span, batch.resources)
    batch.tool_calls.append(
        {
            "ts": common["ts"],
            "trace_id": span["trace_id"],
            "span_id": span["span_id"],
            "llm_span_id": "",  # filled by _link_tools_to_requests
            "duration_ms": common["duration_ms"],
            "team": common["team"],
            "project": common["project"],
            "app": common["app"],
            "source": source,
            **tool,
        }
    )

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
    if batch.tool_calls:
        _link_tools_to_requests(batch.tool_calls, batch.llm_calls)
    return batch


# finish_reason values meaning "the model asked for tools" (OpenAI, OpenLLMetry,
# Anthropic, Gemini, Bedrock spellings).
_TOOL_FINISH = ("tool_call", "tool_use", "function_call", "FUNCTION_CALL")


def _asked_for_tools(call: dict[str, Any]) -> bool:
    return call["tool_call_count"] > 0 or any(f in call["finish_reason"] for f in _TOOL_FINISH)


def _link_tools_to_requests(
    tool_calls: list[dict[str, Any]], llm_calls: list[dict[str, Any]]
) -> None:
    """Point each executed tool at the model call that requested it, within
    the batch (calls split across exports stay unlinked):

    1. the requested tool call with the same ``tool_call_id`` in the trace;
    2. else its parent span, when that is a model call;
    3. else the latest sibling model call (same parent, started before the
       tool) that asked for tools, preferring one that asked for this tool
       by name: the agent loop "model asks → agent runs the tool → model".
    """
    requested_by: dict[tuple[str, str], str] = {}
    asked_names: dict[tuple[str, str], set[str]] = {}
    for row in tool_calls:
        if row["status"] == "requested":
            if row["tool_call_id"]:
                requested_by[(row["trace_id"], row["tool_call_id"])] = row["llm_span_id"]
            asked_names.setdefault((row["trace_id"], row["llm_span_id"]), set()).add(
                row["tool_name"]
            )
    models = {(c["trace_id"], c["span_id"]) for c in llm_calls}
    siblings: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for call in llm_calls:
        if _asked_for_tools(call):
            siblings.setdefault((call["trace_id"], call["parent_span_id"]), []).append(call)
    for row in tool_calls:
        if row["llm_span_id"]:
            continue
        trace, parent = row["trace_id"], row.get("parent_span_id", "")
        linked = requested_by.get((trace, row["tool_call_id"]), "") if row["tool_call_id"] else ""
        if not linked and (trace, parent) in models:
            linked = parent
        if not linked and parent:
            earlier = [c for c in siblings.get((trace, parent), ()) if c["ts"] <= row["ts"]]
            by_name = [
                c for c in earlier if row["tool_name"] in asked_names.get((trace, c["span_id"]), ())
            ]
            chosen = max(by_name or earlier, key=lambda c: c["ts"], default=None)
            linked = chosen["span_id"] if chosen else ""
        row["llm_span_id"] = linked


def _common(span: SpanRecord, resources: dict[int, dict[str, str]]) -> dict[str, Any]:
    who = attribute_call(span["attributes"], span["resource"], resources)
    return {
        "ts": span["start_ns"] // 1000,
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "duration_ms": max(span["end_ns"] - span["start_ns"], 0) / 1e6,
        **who,
    }


def _fill_attribution(common: dict[str, Any], fallback: dict[str, str] | None) -> None:
    """A dialect's own metadata (Traceloop association properties, OpenInference
    ``metadata``) fills what tokentrail.* / service.name left empty."""
    for column, value in (fallback or {}).items():
        if not common.get(column):
            common[column] = value


def _add_model_call(
    batch: NormalizedBatch,
    span: SpanRecord,
    index: int,
    call: dict[str, Any],
    dialect: Any,
    source: str,
) -> None:
    common = _common(span, batch.resources)
    _fill_attribution(common, call.pop("attribution", None))
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
    _fill_attribution(common, tool.pop("attribution", None))
    batch.tool_calls.append(
        {
            "ts": common["ts"],
            "trace_id": span["trace_id"],
            "span_id": span["span_id"],
            "parent_span_id": span["parent_span_id"],  # for linking; not a column
            "llm_span_id": "",  # filled by _link_tools_to_requests
            "duration_ms": common["duration_ms"],
            "team": common["team"],
            "project": common["project"],
            "app": common["app"],
            "source": source,
            **tool,
        }
    )

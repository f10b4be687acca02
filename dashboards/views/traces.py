"""Traces (engineers): search calls and traces, then one trace as a waterfall with
each model call's tokens, cost, TTFT, redacted prompt and response, and tool calls."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import data, ui
from dashboards.filters import Filters

SHOWN_CHARS = 4000  # of a prompt or response in the trace view
KIND_COLORS = {"model call": "#4C78A8", "tool": "#F58518", "span": "#9D9D9D", "error": "#E45756"}
LIST_COLUMNS = [
    "start",
    "app",
    "team",
    "models",
    "calls",
    "tool_calls",
    "errors",
    "cost_usd",
    "duration_ms",
    "trace_id",
]


def search_controls() -> dict[str, Any]:
    cols = st.columns([1, 1, 2])
    status = cols[0].selectbox("Status", ["any", "ok", "error"], key="tr_status")
    min_cost = cols[1].number_input(
        "Min cost (USD)", min_value=0.0, step=0.001, format="%.4f", key="tr_min_cost"
    )
    text = cols[2].text_input(
        "Text in prompt or response",
        key="tr_q",
        placeholder="e.g. refund, order A-10042 (redacted content)",
    )
    return {"status": status, "min_cost": min_cost, "q": text.strip()}


def trace_list(filters: Filters, search: dict[str, Any]) -> pd.DataFrame:
    """Traces matching the search, newest first."""
    frame = _trace_list(filters, search)
    frame["start"] = pd.to_datetime(frame["start"], utc=True, format="ISO8601")
    return frame


def _trace_list(filters: Filters, search: dict[str, Any]) -> pd.DataFrame:
    window = filters.window()
    status = "" if search["status"] == "any" else search["status"]
    if search["q"] or filters.model or filters.provider or filters.project:
        # Text, model, provider and project are call-level: find the calls, then their traces.
        calls = ui.api().calls(window, 500, q=search["q"], status=status, **filters.active())
        if not calls:
            return pd.DataFrame(columns=LIST_COLUMNS)
        frame = pd.DataFrame(calls)
        frame["cost_usd"] = frame["cost_usd"].fillna(0.0)
        frame["model"] = frame["response_model"].where(
            frame["response_model"] != "", frame["request_model"]
        )
        grouped = (
            frame.groupby("trace_id")
            .agg(
                start=("ts", "min"),
                app=("app", "first"),
                team=("team", "first"),
                models=("model", lambda m: ", ".join(sorted(set(m)))),
                calls=("span_id", "size"),
                errors=("status", lambda s: int((s == "error").sum())),
                cost_usd=("cost_usd", "sum"),
                duration_ms=("duration_ms", "max"),
                tool_calls=("tool_call_count", "sum"),
            )
            .reset_index()
        )
        grouped = grouped[grouped["cost_usd"] >= search["min_cost"]]
        return grouped.sort_values("start", ascending=False)[LIST_COLUMNS]
    rows = ui.api().traces(
        window,
        200,
        team=filters.team,
        app=filters.app,
        has_error="true" if status == "error" else "",
        min_cost=search["min_cost"] or "",
    )
    if search["status"] == "ok":
        rows = [r for r in rows if not r["errors"]]
    frame = pd.DataFrame(rows, columns=[*LIST_COLUMNS, "end"])
    frame["models"] = frame["models"].map(lambda m: ", ".join(m) if isinstance(m, list) else m)
    return frame[LIST_COLUMNS]


def most_telling(found: pd.DataFrame) -> str:
    """The trace to open first: the newest settled one (its last spans may still be
    on their way for a few seconds) with tool calls or a failure, else the newest."""
    settled = found[found["start"] < pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=10)]
    pool = settled if not settled.empty else found
    busy = pool[(pool["tool_calls"] > 0) | (pool["errors"] > 0)]
    return str((busy if not busy.empty else pool)["trace_id"].iloc[0])


def label(row: pd.Series) -> str:
    when = pd.Timestamp(row["start"]).strftime("%H:%M:%S")
    errors = f" · {int(row['errors'])} failed" if row["errors"] else ""
    return f"{when} · {row['app']} · {row['models']} · {ui.usd(row['cost_usd'])}{errors}"


def waterfall(nodes: list[dict[str, Any]]) -> go.Figure:
    rows = data.flatten_tree(nodes)
    labels, colors, hovers = [], [], []
    for index, row in enumerate(rows):
        kind = data.node_kind(row)
        colors.append(KIND_COLORS["error" if row.get("status") == "error" else kind])
        labels.append(f"{'· ' * row['depth']}{row['name'] or kind}  #{index + 1}")
        call = row.get("llm_call") or {}
        extra = ""
        if call:
            extra = (
                f"<br>{call.get('input_tokens')} in / {call.get('output_tokens')} out · "
                f"{ui.usd(call.get('cost_usd'))} · TTFT {call.get('ttft_ms') or '—'} ms"
            )
        hovers.append(
            f"{row['name']}<br>{row['duration_ms']:.0f} ms from +{row['start_ms']:.0f} ms{extra}"
        )
    figure = go.Figure(
        go.Bar(
            y=labels,
            x=[max(r["duration_ms"], 1.0) for r in rows],
            base=[r["start_ms"] for r in rows],
            orientation="h",
            marker_color=colors,
            hovertext=hovers,
            hoverinfo="text",
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(
        height=max(180, 34 * len(rows) + 60),
        margin={"t": 10, "b": 30},
        xaxis_title="ms since the trace started",
        showlegend=False,
    )
    return figure


def show_call(node: dict[str, Any]) -> None:
    call = node["llm_call"]
    model = call.get("response_model") or call.get("request_model")
    title = (
        f"{call.get('provider') or '?'} · {model} · {call.get('status')} · "
        f"{ui.usd(call.get('cost_usd'))}"
    )
    with st.expander(f"Model call: {title}", expanded=call.get("status") == "error"):
        cols = st.columns(6)
        cols[0].metric("Input tokens", ui.count(call.get("input_tokens")))
        cols[1].metric("Cached", ui.count(call.get("cache_read_tokens")))
        cols[2].metric("Output tokens", ui.count(call.get("output_tokens")))
        cols[3].metric("Cost", ui.usd(call.get("cost_usd")))
        ttft = call.get("ttft_ms")
        cols[4].metric("TTFT", f"{ttft:.0f} ms" if ttft is not None else "—")
        cols[5].metric("Duration", f"{call.get('duration_ms') or 0:.0f} ms")
        if call.get("status") == "error":
            st.error(f"HTTP {call.get('http_status')} · {call.get('error_type')}")
        facts = {
            k: call.get(k)
            for k in (
                "team",
                "project",
                "user_id",
                "app",
                "route",
                "attempt",
                "retry_of",
                "finish_reason",
                "source",
                "span_id",
            )
        }
        st.caption(" · ".join(f"{k}: {v}" for k, v in facts.items() if v not in ("", None)))
        left, right = st.columns(2)
        left.markdown("**Prompt** (redacted)")
        left.code(
            pretty(call.get("input_content")) or "(not captured)", language="json", wrap_lines=True
        )
        right.markdown("**Response** (redacted)")
        right.code(
            pretty(call.get("output_content")) or "(not captured)", language="json", wrap_lines=True
        )


def show_tools(node: dict[str, Any]) -> None:
    for tool in node.get("tool_calls", []):
        status = tool.get("status")
        with st.expander(f"Tool call: {tool.get('tool_name')} · {status}"):
            st.markdown("**Arguments**")
            st.code(pretty(tool.get("arguments")) or "(none)", language="json", wrap_lines=True)
            if status != "requested":
                st.markdown("**Result**")
                st.code(pretty(tool.get("result")) or "(none)", language="json", wrap_lines=True)


def pretty(text: str | None) -> str:
    """JSON indented for reading, cut at SHOWN_CHARS (the full text is in the API)."""
    if not text:
        return ""
    with contextlib.suppress(ValueError):  # not JSON: shown as it is
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    if len(text) > SHOWN_CHARS:
        return text[:SHOWN_CHARS] + f"\n… ({len(text) - SHOWN_CHARS:,} more characters)"
    return text


def show_trace(trace_id: str) -> None:
    tree = ui.api().trace(trace_id)
    totals = tree.get("totals", {})
    st.subheader(f"Trace `{trace_id}`")
    cols = st.columns(6)
    cols[0].metric("Spans", ui.count(totals.get("spans")))
    cols[1].metric("Model calls", ui.count(totals.get("calls")))
    cols[2].metric("Tool calls", ui.count(totals.get("tool_calls")))
    cols[3].metric("Failed calls", ui.count(totals.get("errors")))
    cols[4].metric("Cost", ui.usd(totals.get("cost_usd")))
    cols[5].metric(
        "Tokens in / out",
        f"{ui.count(totals.get('input_tokens'))} / {ui.count(totals.get('output_tokens'))}",
    )
    st.plotly_chart(waterfall(tree["spans"]), key="waterfall")
    for node in data.flatten_tree(tree["spans"]):
        if node.get("llm_call"):
            show_call(node)
        show_tools(node)


filters = ui.page_header(
    "traces",
    "Every model call and tool call, grouped into traces. Content is shown redacted, as stored.",
)
search = search_controls()
with ui.section("Traces"):
    found = trace_list(filters, search)
    if found.empty:
        ui.nothing_yet("No traces match in this period")
    else:
        st.dataframe(
            found,
            hide_index=True,
            height=260,
            key="trace_table",
            column_config={
                "start": st.column_config.DatetimeColumn("Start", format="YYYY-MM-DD HH:mm:ss"),
                "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.6f"),
                "duration_ms": st.column_config.NumberColumn("Duration (ms)", format="%.0f"),
            },
        )
        ids = list(found["trace_id"])
        labels = {row["trace_id"]: label(row) for _, row in found.iterrows()}
        wanted = st.query_params.get("trace", "")
        if wanted and wanted not in labels:
            ids.insert(0, wanted)
            labels[wanted] = f"{wanted} (from the link)"
        if st.session_state.get("tr_trace") not in ids:
            st.session_state["tr_trace"] = wanted or most_telling(found)
        chosen = st.selectbox("Trace", ids, format_func=labels.__getitem__, key="tr_trace")
        ui.url_param("trace", chosen)
        with ui.section("Trace detail"):
            show_trace(chosen)

"""Routing: per route, the recommended model weights with their reasons and
history, and the exact snippet to paste into LiteLLM or Portkey."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st
import yaml

from dashboards import ui

FORMATS = {"litellm": ("LiteLLM", "yaml"), "portkey": ("Portkey", "json")}
HISTORY = 20  # earlier versions shown


def routes() -> list[str]:
    """The routes that have recommended weights."""
    answer = ui.api().routing_weights()
    return sorted({entry["route"] for entry in answer.get("routes", [])})


def snippet(route: str, fmt: str) -> str:
    """What to paste: LiteLLM's config.yaml fragment, or a Portkey config (JSON)."""
    body = ui.api().routing_weights(route, fmt)
    if fmt == "litellm":
        return yaml.safe_dump(body, sort_keys=False)
    return json.dumps(body, indent=2)


def show_route(route: str) -> None:
    native = ui.api().routing_weights(route, "native", HISTORY)
    weights = pd.DataFrame(native.get("weights", []))
    st.caption(
        f"Version {native.get('version')} · computed {native.get('computed_at')}"
        + (f" · objective {native['objective']}" if native.get("objective") else "")
        + (
            f" · from the last {native['window_minutes']} minutes of calls"
            if native.get("window_minutes")
            else ""
        )
    )
    if weights.empty:
        st.info("No recommendation for this route yet: it needs calls on at least two models.")
        return
    weights["provider"] = weights["provider"].replace("", "(unknown)")
    weights["model_label"] = weights["provider"] + " / " + weights["model"]
    figure = px.bar(
        weights,
        x="weight",
        y="model_label",
        orientation="h",
        text="weight",
        labels={"weight": "recommended share", "model_label": ""},
    )
    figure.update_traces(texttemplate="%{text:.0%}")
    figure.update_layout(
        height=80 + 40 * len(weights), margin={"t": 10, "b": 10}, xaxis_tickformat=".0%"
    )
    st.plotly_chart(figure, key="weights_chart")
    shown = [
        c
        for c in (
            "provider",
            "model",
            "weight",
            "reason",
            "calls",
            "error_rate",
            "cost_per_call",
            "p50_ms",
            "p95_ms",
            "ttft_p50_ms",
        )
        if c in weights
    ]
    st.dataframe(
        weights[shown],
        hide_index=True,
        key="weights_table",
        column_config={
            "weight": st.column_config.ProgressColumn(
                "Weight", format="percent", min_value=0.0, max_value=1.0
            ),
            "reason": st.column_config.TextColumn("Reason", width="large"),
            "error_rate": st.column_config.NumberColumn("Error rate", format="percent"),
            "cost_per_call": st.column_config.NumberColumn("Cost per call", format="$%.6f"),
        },
    )
    history = native.get("history") or []
    if history:
        history = [native, *history]
        st.subheader("History")
        past = pd.DataFrame(
            [
                {
                    "version": h.get("version"),
                    "computed_at": h.get("computed_at"),
                    "model": f"{w.get('provider') or '(unknown)'} / {w.get('model')}",
                    "weight": w.get("weight"),
                }
                for h in history
                for w in h.get("weights", [])
            ]
        )
        figure = px.line(
            past,
            x="computed_at",
            y="weight",
            color="model",
            markers=True,
            labels={"computed_at": "", "weight": "weight", "model": ""},
        )
        figure.update_layout(height=260, margin={"t": 10, "b": 10}, yaxis_tickformat=".0%")
        st.plotly_chart(figure, key="weights_history")
    st.subheader("Paste into your gateway")
    for tab, fmt in zip(st.tabs([FORMATS[f][0] for f in FORMATS]), FORMATS, strict=True):
        with tab:
            st.code(snippet(route, fmt), language=FORMATS[fmt][1])
    st.caption(
        "A routing layer can also pull these weights itself: `GET /api/v1/routing/weights"
        f"?route={route}&format=litellm` with a router key (answers carry an ETag)."
    )


def render() -> None:
    names = routes()
    if not names:
        st.info(
            "No routes yet. Tag calls with a route (`x-tokentrail-route` header or the "
            "`tokentrail.route` attribute); recommendations appear once the routing job "
            "has run over calls on two or more models.",
            icon=":material/alt_route:",
        )
        return
    wanted = st.query_params.get("route", "")
    if st.session_state.get("rt_route") not in names:
        st.session_state["rt_route"] = wanted if wanted in names else names[0]
    route = st.segmented_control("Route", names, key="rt_route", required=True) or names[0]
    ui.url_param("route", route)
    show_route(route)


ui.page_header(
    "routing",
    "Recommended weights per route, from what each model cost, how "
    "often it failed and how fast it answered.",
)
with ui.section("Routing weights"):
    render()

"""Cache (engineers, finance): prompt-cache hit rates and savings, and the report
of duplicate and near-duplicate prompts a response cache would have answered."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboards import data, ui
from dashboards.api import NotAvailable
from dashboards.filters import Filters


def show_cache_metrics(filters: Filters) -> bool:
    """The cache job's figures; False when this collector does not serve them yet."""
    scope = {d: getattr(filters, d) for d in ("team", "app", "provider", "model")}
    try:
        answer = ui.api().cache_metrics(filters.window(), ["provider", "model"], **scope)
    except NotAvailable:
        return False
    totals = answer.get("totals") or {}
    st.caption(
        "From the cache job (hourly figures, updated every few minutes)"
        + (
            "; it has no project dimension, so the project filter does not apply here."
            if filters.project
            else "."
        )
    )
    if not totals.get("calls"):
        st.info(
            "No cache figures for this period yet: the cache job runs every few minutes "
            "(an admin can run it now: `POST /api/v1/jobs/run`).",
            icon=":material/hourglass_empty:",
        )
    else:
        cols = st.columns(5)
        cols[0].metric(
            "Prompt-cache hit rate",
            ui.percent(totals.get("provider_cache_hit_rate")),
            help="Cached input tokens / input tokens",
        )
        cols[1].metric(
            "Saved by prompt caching",
            ui.usd(totals.get("provider_cache_savings_usd")),
            help="What the cached tokens would have cost at the full input price",
        )
        cols[2].metric(
            "Gateway cache hit rate",
            ui.percent(totals.get("gateway_hit_rate"))
            if totals.get("gateway_hits") or totals.get("gateway_misses")
            else "—",
        )
        cols[3].metric(
            "Duplicate calls",
            ui.count(totals.get("duplicate_calls")),
            help=f"{ui.percent(totals.get('duplicate_rate'))} of calls repeated an "
            "identical earlier request",
        )
        cols[4].metric("A response cache would save", ui.usd(totals.get("exact_cache_savings_usd")))
        by_model = pd.DataFrame(answer.get("rows") or [])
        if not by_model.empty:
            by_model["provider"] = by_model["provider"].replace("", "(unknown)")
            figure = px.bar(
                by_model,
                x="model",
                y="provider_cache_hit_rate",
                color="provider",
                labels={"provider_cache_hit_rate": "cached share of input tokens", "model": ""},
            )
            figure.update_layout(height=300, margin={"t": 10, "b": 10}, yaxis_tickformat=".0%")
            st.plotly_chart(figure, key="cache_hit_rate")
            shown = [
                "provider",
                "model",
                "calls",
                "input_tokens",
                "cache_read_tokens",
                "provider_cache_hit_rate",
                "provider_cache_savings_usd",
                "duplicate_calls",
                "exact_cache_savings_usd",
            ]
            st.dataframe(
                by_model[[c for c in shown if c in by_model]],
                hide_index=True,
                key="cache_by_model",
                column_config={
                    "provider_cache_hit_rate": st.column_config.NumberColumn(
                        "Hit rate", format="percent"
                    ),
                    "provider_cache_savings_usd": st.column_config.NumberColumn(
                        "Saved (USD)", format="$%.6f"
                    ),
                    "exact_cache_savings_usd": st.column_config.NumberColumn(
                        "Response cache would save", format="$%.6f"
                    ),
                },
            )
    show_near_duplicates(answer.get("near_duplicates") or {})
    return True


def show_near_duplicates(report: dict[str, Any]) -> None:
    st.subheader("Duplicate and near-duplicate prompts")
    groups = pd.DataFrame(report.get("groups") or [])
    if groups.empty:
        st.info(
            "No repeated prompts in the report yet: it groups prompts asked again, word for "
            "word or nearly, over the last days.",
            icon=":material/content_copy:",
        )
        return
    similarity = report.get("min_similarity")
    st.caption(
        f"{len(groups)} groups of prompts asked again"
        + (f" (similarity ≥ {similarity:.0%})" if similarity else "")
        + f"; a response cache would have saved {ui.usd(groups['savings_usd'].sum())}."
        + (
            ""
            if report.get("examples_included")
            else " Example prompts are shown to engineer keys only."
        )
    )
    shown = [
        "example",
        "team",
        "app",
        "route",
        "prompts",
        "calls",
        "repeat_calls",
        "savings_usd",
        "lowest_similarity",
        "variants",
        "last_seen",
    ]
    st.dataframe(
        groups[[c for c in shown if c in groups]],
        hide_index=True,
        key="near_duplicates",
        column_config={
            "savings_usd": st.column_config.NumberColumn("Would save", format="$%.6f"),
            "lowest_similarity": st.column_config.NumberColumn("Similarity ≥", format="percent"),
        },
    )


def show_spend_cache(filters: Filters) -> None:
    """Prompt-cache hit rate per provider and model from spend's token counts."""
    groups = data.spend_query_groups(["provider", "model"], filters)
    rows = ui.api().spend(filters.window(), groups, None, filters.team, filters.project)
    frame = data.spend_frame(rows, ["provider", "model"], filters)
    frame = frame[frame["input_tokens"] > 0]
    if frame.empty:
        ui.nothing_yet()
        return
    read, total = frame["cache_read_tokens"].sum(), frame["input_tokens"].sum()
    cols = st.columns(3)
    cols[0].metric(
        "Prompt-cache hit rate",
        ui.percent(read / total if total else None),
        help="Cached input tokens / input tokens",
    )
    cols[1].metric("Cached input tokens", ui.count(read))
    cols[2].metric("Cache writes", ui.count(frame["cache_write_tokens"].sum()))
    frame = frame.assign(
        hit_rate=frame["cache_read_tokens"] / frame["input_tokens"],
        provider=frame["provider"].replace("", "(unknown)"),
    )
    figure = px.bar(
        frame,
        x="model",
        y="hit_rate",
        color="provider",
        labels={"hit_rate": "cached share of input tokens", "model": ""},
    )
    figure.update_layout(height=300, margin={"t": 10, "b": 10}, yaxis_tickformat=".0%")
    st.plotly_chart(figure, key="spend_hit_rate")


def show_exact_duplicates(filters: Filters) -> None:
    """Identical requests among the newest calls (engineer and admin keys)."""
    calls = ui.api().calls(filters.window(), 1000, **filters.active())
    duplicates = data.duplicate_prompts(calls)
    st.subheader("Repeated prompts")
    if duplicates.empty:
        st.info("No identical requests among the newest calls.", icon=":material/content_copy:")
        return
    st.caption(
        f"Identical requests among the newest {len(calls):,} calls: "
        f"{int(duplicates['times'].sum() - len(duplicates)):,} calls could have been "
        f"answered from a response cache."
    )
    st.dataframe(
        duplicates,
        hide_index=True,
        key="exact_duplicates",
        column_config={"cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.6f")},
    )


filters = ui.page_header(
    "cache",
    "Tokens the providers served from their prompt caches, and questions asked again "
    "that a response cache could answer.",
)
session = ui.current()
with ui.section("Cache metrics"):
    if not show_cache_metrics(filters):
        st.info(
            "Savings and the near-duplicate report need `GET /api/v1/metrics/cache`, not "
            "available on this collector yet; below are the figures read from the calls.",
            icon=":material/hourglass_empty:",
        )
        if session and ui.may_open(session.role, "spend"):
            with ui.section("Prompt cache"):
                show_spend_cache(filters)
        if session and session.role in ("engineer", "admin"):
            with ui.section("Repeated prompts"):
                show_exact_duplicates(filters)

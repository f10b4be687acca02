"""Spend (finance): total and trend, by any attribution with drill-down, budgets
with burn-down and forecast, alerts, cost per call, CSV of the table shown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboards import data, ui
from dashboards.api import Rows
from dashboards.filters import DIMENSIONS, Filters, parse_moment

GROUPS = {
    "team": "Team",
    "project": "Project",
    "user": "User",
    "app": "App",
    "route": "Route",
    "model": "Model",
    "provider": "Provider",
}
# Drill-down: choosing a group's value filters on it and groups by the next level.
NEXT_LEVEL = {
    "team": "project",
    "project": "app",
    "app": "model",
    "model": "provider",
    "provider": "model",
}
TOP_IN_CHART = 8


def spend_rows(filters: Filters, group_by: list[str], granularity: str | None = None) -> Rows:
    """Spend rows grouped by ``group_by`` plus the filters the endpoint cannot apply."""
    groups = data.spend_query_groups(group_by, filters)
    window = filters.window()
    return ui.api().spend(window, groups, granularity, filters.team, filters.project)


def show_totals(frame: pd.DataFrame) -> None:
    total = data.totals(frame)
    calls = total["calls"]
    cols = st.columns(5)
    cols[0].metric("Total spend", ui.usd(total["cost_usd"]))
    cols[1].metric("Calls", ui.count(calls))
    cols[2].metric("Cost per call", ui.usd(total["cost_usd"] / calls) if calls else "—")
    cols[3].metric(
        "Tokens in / out",
        f"{ui.compact(total['input_tokens'])} / {ui.compact(total['output_tokens'])}",
        help="Input includes cache reads and writes; output includes reasoning.",
    )
    cols[4].metric("Failed calls", ui.count(total["error_calls"]))
    if total["unpriced_calls"]:
        st.warning(
            f"{ui.count(total['unpriced_calls'])} calls used models with no known price and "
            "count $0 here: add them to the price overrides file (TOKENTRAIL_PRICES_FILE)."
        )


def show_trend(filters: Filters, group: str) -> None:
    granularity = filters.granularity()
    series = data.spend_frame(spend_rows(filters, [group], granularity), [group], filters)
    if series.empty:
        return
    top = series.groupby(group)["cost_usd"].sum().nlargest(TOP_IN_CHART).index
    series[group] = series[group].where(series[group].isin(top), "other").replace("", "(none)")
    series = series.groupby(["period", group], as_index=False)["cost_usd"].sum()
    figure = px.bar(
        series,
        x="period",
        y="cost_usd",
        color=group,
        labels={"period": "", "cost_usd": "USD", group: GROUPS[group]},
        title=f"Spend per {granularity} by {GROUPS[group].lower()}",
    )
    figure.update_layout(height=320, margin={"t": 40, "b": 10}, legend_title_text="")
    st.plotly_chart(figure, key="spend_trend")


def show_table(frame: pd.DataFrame, group: str) -> None:
    table = frame.sort_values("cost_usd", ascending=False)
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            group: GROUPS[group],
            "calls": "Calls",
            "input_tokens": "Input tokens",
            "cache_read_tokens": "Cached",
            "cache_write_tokens": "Cache writes",
            "output_tokens": "Output tokens",
            "reasoning_tokens": "Reasoning",
            "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.6f"),
            "unpriced_calls": "Unpriced",
            "error_calls": "Failed",
            "cost_per_call": st.column_config.NumberColumn("Cost per call", format="$%.6f"),
        },
        key="spend_table",
    )
    st.download_button(
        "Download CSV",
        table.to_csv(index=False).encode(),
        file_name=f"tokentrail-spend-by-{group}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
    if group in DIMENSIONS and NEXT_LEVEL.get(group):
        values = [str(v) for v in table[group] if str(v)]
        if values:
            st.selectbox(
                f"Drill into a {GROUPS[group].lower()}",
                [""] + values,
                format_func=lambda v: v or "choose…",
                key="spend_drill",
                on_change=drill,
                args=(group,),
            )


def drill(group: str) -> None:
    value = st.session_state.get("spend_drill")
    if value:
        ui.set_filter(**{group: value})
        st.session_state["spend_group"] = NEXT_LEVEL[group]
        st.session_state["spend_drill"] = ""


STATUS_TEXT = {  # the budgets job's status → (severity, words)
    "over": ("error", "over budget"),
    "forecast_over": ("warning", "on track to go over"),
    "warning": ("warning", "past 80%"),
}
BUDGETS_EXAMPLE = """[[budget]]
team = "payments"
monthly_usd = 5000"""


def show_budgets(filters: Filters) -> None:
    st.subheader("Budgets")
    answer = ui.api().budgets()
    budgets = [
        b
        for b in answer.get("rows") or []
        if all(
            b.get(d) in ("", None, getattr(filters, d))
            for d in ("team", "project")
            if getattr(filters, d)
        )
    ]
    if not answer.get("configured"):
        st.info(
            "No budgets configured. Write them in a TOML file and point "
            "`TOKENTRAIL_BUDGETS_FILE` at it (re-read at every run, no restart):",
            icon=":material/savings:",
        )
        st.code(BUDGETS_EXAMPLE, language="toml")
        return
    if not budgets:
        st.info(
            f"{answer['configured']} budgets configured; none matches the filters, or the "
            "budgets job has not run yet (every few minutes).",
            icon=":material/savings:",
        )
        return
    names = {b["budget"] for b in budgets}
    for alert in answer.get("alerts") or []:
        if alert.get("budget") in names:
            st.warning(alert.get("message") or str(alert), icon=":material/notifications:")
    for budget in budgets:
        show_budget(budget)


def show_budget(budget: dict[str, Any]) -> None:
    amount = float(budget.get("amount_usd") or 0)
    spent = float(budget.get("spent_usd") or 0)
    forecast = float(budget.get("forecast_usd") or 0)
    start = parse_moment(str(budget.get("period_start") or "")) or datetime.now(UTC)
    end = parse_moment(str(budget.get("period_end") or "")) or datetime.now(UTC)
    scope = (
        " · ".join(
            f"{label} {budget[key]}"
            for key, label in (
                ("team", "team"),
                ("project", "project"),
                ("user_id", "user"),
                ("api_key_fingerprint", "key"),
            )
            if budget.get(key)
        )
        or "all spend"
    )
    kind, words = STATUS_TEXT.get(str(budget.get("status")), ("success", "within budget"))
    cols = st.columns([2, 1, 1, 1, 1])
    color = {"error": "red", "warning": "orange"}.get(kind, "green")
    cols[0].markdown(f"**{budget['budget']}** · {scope}  \n{start:%B %Y} · :{color}[{words}]")
    cols[1].metric("Budget", ui.usd(amount))
    cols[2].metric("Spent", ui.usd(spent), help=f"{budget.get('spent_pct', 0):.1f}% of the budget")
    cols[3].metric(
        "Month-end forecast",
        ui.usd(forecast),
        help=f"at {ui.usd(budget.get('trend_usd_per_day'))} a day",
    )
    cols[4].metric("Forecast", f"{budget.get('forecast_pct', 0):.0f}%")
    daily = pd.DataFrame(budget.get("daily") or [])
    if amount and not daily.empty:
        series = pd.DataFrame(
            {"period": pd.to_datetime(daily["day"], utc=True), "cost_usd": daily["cost_usd"]}
        )
        chart = data.burn_down(series, amount, start, end, forecast)
        figure = px.line(
            chart,
            x="time",
            y="remaining",
            color="kind",
            markers=True,
            labels={"time": "", "remaining": "USD left", "kind": ""},
        )
        figure.update_layout(height=220, margin={"t": 10, "b": 10})
        st.plotly_chart(figure, key=f"burn_{budget['budget']}")


filters = ui.page_header(
    "spend", "What was spent, by whom, on what: exact token costs from the calls captured."
)
group = st.session_state.setdefault("spend_group", st.query_params.get("group", "team"))
if group not in GROUPS:
    group = st.session_state["spend_group"] = "team"
st.segmented_control(
    "Group by", list(GROUPS), format_func=GROUPS.__getitem__, key="spend_group", required=True
)
group = st.session_state["spend_group"] or "team"
ui.url_param("group", "" if group == "team" else group)
if filters.active():
    st.caption(
        "Filtered by "
        + ", ".join(f"{k} = **{v}**" for k, v in filters.active().items())
        + " (change or clear in the sidebar)"
    )

with ui.section("Spend"):
    frame = data.spend_frame(spend_rows(filters, [group]), [group], filters)
    show_totals(frame)
    if frame.empty or not data.totals(frame)["calls"]:
        ui.nothing_yet()
    else:
        show_trend(filters, group)
        show_table(frame, group)

with ui.section("Budgets"):
    show_budgets(filters)

"""Reliability (engineers, finance): error rate by provider and model over time,
outage windows, retries and fallbacks, and the dollars lost to failures."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboards import data, ui
from dashboards.api import NotAvailable
from dashboards.filters import Filters

RECENT_CALLS = 1000
RECENT_FAILURES = 300


def failover_granularity(filters: Filters) -> str:
    window = filters.window()
    span = window.end - window.start
    return (
        "5m" if span <= pd.Timedelta(days=2) else "hour" if span <= pd.Timedelta(days=14) else "day"
    )


def unknown_provider(frame: pd.DataFrame) -> pd.DataFrame:
    """Name the provider of calls no provider was recognised for."""
    for column in ("provider", "from_provider", "to_provider"):
        if column in frame:
            frame[column] = frame[column].replace("", "(unknown)")
    return frame


def show_failover(filters: Filters) -> bool:
    """The failover job's figures; False when this collector does not serve them yet."""
    granularity = failover_granularity(filters)
    try:
        answer = ui.api().failover_metrics(
            filters.window(), granularity, provider=filters.provider, model=filters.model
        )
    except NotAvailable:
        return False
    totals = answer.get("totals") or {}
    st.subheader("Failures, retries and fallbacks")
    ignored = [d for d in ("team", "project", "app") if getattr(filters, d)]
    st.caption(
        "From the failover job (5-minute windows, updated every few minutes)"
        + (
            f"; it is kept per provider and model, so the {', '.join(ignored)} filter does not "
            "apply here."
            if ignored
            else "."
        )
    )
    if not totals.get("attempts"):
        st.info(
            "No failover figures for this period yet: the failover job runs every few "
            "minutes (an admin can run it now: `POST /api/v1/jobs/run`).",
            icon=":material/hourglass_empty:",
        )
        return True
    cols = st.columns(5)
    cols[0].metric("Attempts", ui.count(totals.get("attempts")))
    cols[1].metric(
        "Error rate",
        ui.percent(totals.get("error_rate")),
        help=f"{ui.count(totals.get('errors_429'))} rate limits, "
        f"{ui.count(totals.get('errors_5xx'))} server errors, "
        f"{ui.count(totals.get('errors_timeout'))} timeouts",
    )
    cols[2].metric("Retries", ui.count(totals.get("retries")))
    cols[3].metric(
        "Fallbacks (recovered)",
        f"{ui.count(totals.get('fallback_chains'))} "
        f"({ui.count(totals.get('fallback_chains_recovered'))})",
    )
    cols[4].metric(
        "Lost to failures",
        ui.usd(totals.get("failed_cost_usd")),
        help="Tokens billed for attempts that failed.",
    )
    rows = pd.DataFrame(answer.get("rows") or [])
    if not rows.empty and "period" in rows:
        rows["provider"] = rows["provider"].replace("", "(unknown)")
        rate = rows.groupby(["period", "provider"], as_index=False)[["errors", "attempts"]].sum()
        rate["error_rate"] = rate["errors"] / rate["attempts"].where(rate["attempts"] > 0)
        rate["period"] = pd.to_datetime(rate["period"], utc=True, format="ISO8601")
        figure = px.line(
            rate,
            x="period",
            y="error_rate",
            color="provider",
            markers=True,
            labels={"period": "", "error_rate": "error rate", "provider": ""},
            title=f"Error rate per {granularity} window by provider",
        )
        figure.update_layout(height=320, margin={"t": 40, "b": 10}, yaxis_tickformat=".0%")
        st.plotly_chart(figure, key="failover_rate")
        by_model = rows.groupby(["provider", "model"], as_index=False)[
            [
                "attempts",
                "errors",
                "errors_429",
                "errors_5xx",
                "retries",
                "fallback_chains",
                "failed_cost_usd",
            ]
        ].sum()
        by_model["error_rate"] = by_model["errors"] / by_model["attempts"]
        st.dataframe(
            by_model.sort_values("errors", ascending=False),
            hide_index=True,
            key="failover_by_model",
            column_config={
                "error_rate": st.column_config.NumberColumn("Error rate", format="percent"),
                "failed_cost_usd": st.column_config.NumberColumn("Lost (USD)", format="$%.6f"),
            },
        )
    st.subheader("Outages")
    outages = unknown_provider(pd.DataFrame(answer.get("outages") or []))
    if outages.empty:
        st.success(
            "No outages in this period (an outage: error rate over the threshold in "
            "consecutive 5-minute windows).",
            icon=":material/check_circle:",
        )
    else:
        st.dataframe(outages, hide_index=True, key="outages")
    paths = unknown_provider(pd.DataFrame(answer.get("fallbacks") or []))
    if not paths.empty:
        st.subheader("Fallback paths")
        st.dataframe(
            paths,
            hide_index=True,
            key="fallback_paths",
            column_config={
                "success_rate": st.column_config.NumberColumn("Recovered", format="percent")
            },
        )
    return True


def show_spend_errors(filters: Filters) -> None:
    """Error rate per hour from spend (finance and admin keys)."""
    window, groups = filters.window(), data.spend_query_groups(["provider", "model"], filters)
    rows = ui.api().spend(window, groups, filters.granularity(), filters.team, filters.project)
    frame = data.error_rate_frame(rows, filters)
    if frame.empty:
        ui.nothing_yet()
        return
    status = ui.api().spend(window, ["status"], None, filters.team, filters.project)
    lost = sum(r["cost_usd"] for r in status if r.get("status") == "error")
    calls, errors = frame["calls"].sum(), frame["error_calls"].sum()
    cols = st.columns(4)
    cols[0].metric("Calls", ui.count(calls))
    cols[1].metric("Failed calls", ui.count(errors))
    cols[2].metric("Error rate", ui.percent(errors / calls if calls else None))
    cols[3].metric(
        "Spent on failed calls",
        ui.usd(lost),
        help="Tokens billed for calls that still failed (e.g. cut streams).",
    )
    frame["series"] = frame["provider"].replace("", "(unknown)") + " / " + frame["model"]
    figure = px.line(
        frame,
        x="period",
        y="error_rate",
        color="series",
        markers=True,
        labels={"period": "", "error_rate": "error rate", "series": ""},
        title=f"Error rate per {filters.granularity()}",
    )
    figure.update_layout(height=320, margin={"t": 40, "b": 10}, yaxis_tickformat=".0%")
    st.plotly_chart(figure, key="spend_error_rate")


def show_recent_calls(filters: Filters) -> None:
    """Error rate, outages, retries and fallbacks in the newest calls (engineer, admin)."""
    calls = ui.api().calls(filters.window(), RECENT_CALLS, **filters.active())
    if not calls:
        ui.nothing_yet()
        return
    frame = pd.DataFrame(calls)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame["provider"] = frame["provider"].replace("", "(unknown)")
    failed = frame[frame["status"] == "error"]
    fallbacks = fallback_chains(frame)
    span = frame["ts"].max() - frame["ts"].min()
    st.caption(
        f"From the newest {len(frame):,} calls in the period, over "
        f"{ui.duration(span.total_seconds())}."
    )
    cols = st.columns(6)
    cols[0].metric("Attempts", ui.count(len(frame)))
    cols[1].metric("Failed", ui.count(len(failed)))
    cols[2].metric("Error rate", ui.percent(len(failed) / len(frame)))
    cols[3].metric("SDK retries", ui.count(int((frame["attempt"] > 0).sum())))
    cols[4].metric(
        "Fallbacks (recovered)", f"{len(fallbacks)} ({sum(1 for f in fallbacks if f['recovered'])})"
    )
    cols[5].metric(
        "Spent on failed calls",
        ui.usd(float(failed["cost_usd"].fillna(0).sum())),
        help="Tokens billed for attempts that still failed (e.g. cut streams).",
    )
    step, unit = bucket_for(span)
    rate = frame.assign(bucket=frame["ts"].dt.floor(step), failed=frame["status"] == "error")
    rate = rate.groupby(["bucket", "provider"], as_index=False).agg(
        calls=("failed", "size"), failed=("failed", "sum")
    )
    rate["error_rate"] = rate["failed"] / rate["calls"]
    figure = px.line(
        rate,
        x="bucket",
        y="error_rate",
        color="provider",
        markers=True,
        labels={"bucket": "", "error_rate": "error rate", "provider": ""},
        title=f"Error rate per {unit} by provider",
    )
    figure.update_layout(height=320, margin={"t": 40, "b": 10}, yaxis_tickformat=".0%")
    st.plotly_chart(figure, key="recent_error_rate")
    st.subheader("Outage windows")
    outages = data.outage_windows(calls)
    if outages.empty:
        st.success("No provider outages in these calls.", icon=":material/check_circle:")
    else:
        st.dataframe(outages, hide_index=True, key="recent_outages")
    if not failed.empty:
        st.subheader("Failures by provider and model")
        by = failed.groupby(
            ["provider", "request_model", "http_status", "error_type"], as_index=False
        ).size()
        by = by.rename(columns={"size": "failed", "request_model": "model"})
        st.dataframe(by.sort_values("failed", ascending=False), hide_index=True, key="failures")
    if fallbacks:
        st.subheader("Fallbacks")
        st.dataframe(pd.DataFrame(fallbacks), hide_index=True, key="fallbacks")


def show_recent_failures(filters: Filters) -> None:
    """The newest failed calls, as they happen (the failover job sums them every few minutes)."""
    failed = pd.DataFrame(
        ui.api().calls(filters.window(), RECENT_FAILURES, status="error", **filters.active())
    )
    if failed.empty:
        st.success("No failed calls in this period.", icon=":material/check_circle:")
        return
    failed["ts"] = pd.to_datetime(failed["ts"], utc=True, format="ISO8601")
    failed["provider"] = failed["provider"].replace("", "(unknown)")
    span = failed["ts"].max() - failed["ts"].min()
    step, unit = bucket_for(span)
    st.caption(
        f"The newest {len(failed):,} failed calls, over {ui.duration(span.total_seconds())}."
    )
    counts = (
        failed.assign(bucket=failed["ts"].dt.floor(step))
        .groupby(["bucket", "provider"], as_index=False)
        .size()
    )
    figure = px.bar(
        counts,
        x="bucket",
        y="size",
        color="provider",
        labels={"bucket": "", "size": "failed calls", "provider": ""},
        title=f"Failed calls per {unit} by provider",
    )
    figure.update_layout(height=280, margin={"t": 40, "b": 10})
    st.plotly_chart(figure, key="recent_failures")
    outages = data.outage_windows(failed.assign(ts=failed["ts"].astype(str)).to_dict("records"))
    if not outages.empty:
        st.markdown("**Provider-side failure streaks** (5xx or no answer, seconds apart)")
        st.dataframe(outages, hide_index=True, key="recent_outages")
    by = failed.groupby(
        ["provider", "request_model", "http_status", "error_type"], as_index=False
    ).size()
    by = by.rename(columns={"size": "failed", "request_model": "model"})
    st.dataframe(by.sort_values("failed", ascending=False), hide_index=True, key="failures")


def bucket_for(span: pd.Timedelta) -> tuple[str, str]:
    """A bucket size that gives a readable number of points over ``span``."""
    for limit, step, unit in (
        (pd.Timedelta(minutes=15), "10s", "10 seconds"),
        (pd.Timedelta(hours=3), "1min", "minute"),
        (pd.Timedelta.max, "1h", "hour"),
    ):
        if span <= limit:
            return step, unit
    return "1h", "hour"


def fallback_chains(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per trace: a model that failed (after its retries) followed by a call to another model."""
    chains = []
    frame = frame.assign(
        model=frame["response_model"].where(frame["response_model"] != "", frame["request_model"])
    )
    for trace_id, calls in frame.sort_values("ts").groupby("trace_id"):
        failed_models = set(calls.loc[calls["status"] == "error", "request_model"])
        for model in failed_models:
            later = calls[
                (calls["request_model"] != model)
                & (calls["ts"] > calls.loc[calls["request_model"] == model, "ts"].min())
            ]
            if (
                not later.empty
                and not (calls[calls["request_model"] == model]["status"] == "ok").any()
            ):
                chains.append(
                    {
                        "trace_id": trace_id,
                        "from": model,
                        "to": later["model"].iloc[0],
                        "recovered": bool((later["status"] == "ok").any()),
                    }
                )
    return chains


filters = ui.page_header(
    "reliability",
    "How often calls fail, where, and what it costs; SDK retries and app fallbacks.",
)
session = ui.current()
has_failover = False
with ui.section("Failover metrics"):
    has_failover = show_failover(filters)
    if not has_failover:
        st.info(
            "Failover metrics need `GET /api/v1/metrics/failover`, not available on this "
            "collector yet; below are the figures read from the calls.",
            icon=":material/hourglass_empty:",
        )
if session and session.role in ("engineer", "admin"):
    if has_failover:
        st.subheader("Failed calls as they happen")
        with ui.section("Recent failures"):
            show_recent_failures(filters)
    else:
        st.subheader("Failures, retries and fallbacks in the newest calls")
        with ui.section("Recent calls"):
            show_recent_calls(filters)
elif session and ui.may_open(session.role, "spend") and not has_failover:
    st.subheader("Error rate by provider and model")
    with ui.section("Error rate"):
        show_spend_errors(filters)

"""The dashboards' page logic with Streamlit's AppTest, against a real collector
holding a known data set (sent as OTLP by the real OpenTelemetry SDK)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import ui
from dashboards.api import ApiClient, NotAvailable
from tests.conftest import ROOT, CollectorProcess
from tests.dashboards_support import CALLS, SECRET_EMAIL, send_dataset, wait_for_calls

APP = str(ROOT / "dashboards" / "app.py")


@pytest.fixture(scope="module")
def loaded(collector: CollectorProcess) -> CollectorProcess:
    send_dataset(collector.url, collector.create_key("ingest", "dataset"))
    wait_for_calls(collector.url, collector.admin_key, len(CALLS))
    return collector


@pytest.fixture()
def app(loaded: CollectorProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("TOKENTRAIL_API_URL", loaded.url)
    monkeypatch.delenv("TOKENTRAIL_DASHBOARDS_DEMO_KEY", raising=False)
    yield AppTest.from_file(APP, default_timeout=60)


def signed_in(at: AppTest, key: str) -> AppTest:
    at.run()
    at.text_input(key="sign_in_key").input(key)
    at.button(key="sign_in_submit").click().run()
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("info", "warning", "error", "success", "caption", "markdown")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def spend_total(collector: CollectorProcess, **params: Any) -> float:
    rows = collector.get("/api/v1/spend", **params).json()["rows"]
    return sum(r["cost_usd"] for r in rows)


def test_sign_in_is_required_and_an_unknown_key_refused(app: AppTest) -> None:
    app.run()
    assert not app.exception
    assert app.text_input(key="sign_in_key").label == "API key"
    app.text_input(key="sign_in_key").input("tt_000000000000_not-a-key")
    app.button(key="sign_in_submit").click().run()
    assert "does not know this key" in app.error[0].value
    assert ui.SESSION not in app.session_state


def test_finance_key_lands_on_spend_with_the_api_total(app: AppTest, loaded) -> None:
    signed_in(app, loaded.create_key("finance", "cfo"))
    assert not app.exception
    assert app.session_state[ui.SESSION].role == "finance"
    assert app.title[0].value == "Spend"
    assert metric(app, "Total spend") == ui.usd(spend_total(loaded))
    assert metric(app, "Calls") == ui.count(len(CALLS))
    assert metric(app, "Failed calls") == "1"
    # The table shown is grouped by team: one row per team, downloadable.
    table = app.dataframe[0].value
    assert sorted(table["team"]) == sorted({c[0] for c in CALLS})
    assert abs(table["cost_usd"].sum() - spend_total(loaded)) < 1e-9
    assert app.download_button[0].label == "Download CSV"


def test_finance_key_sees_no_traces_content(app: AppTest, loaded) -> None:
    signed_in(app, loaded.create_key("finance", "analyst"))
    app.switch_page("views/traces.py").run()
    assert not app.exception
    assert "needs an engineer or admin key" in app.warning[0].value
    assert not app.dataframe and not app.code
    assert ui.pages_for("finance") == ["spend", "reliability", "cache"]


def test_compliance_key_sees_audit(app: AppTest, loaded) -> None:
    signed_in(app, loaded.create_key("compliance", "auditor"))
    assert not app.exception
    assert app.session_state[ui.SESSION].role == "compliance"
    assert app.title[0].value == "Audit"  # the first page a compliance key may open
    assert not [w for w in app.warning if "needs a" in w.value]
    assert ui.pages_for("compliance") == ["audit"]


def test_filters_come_from_the_url_and_are_written_back(app: AppTest, loaded) -> None:
    app.query_params.update({"team": "payments", "period": "7d"})
    signed_in(app, loaded.admin_key)
    assert metric(app, "Total spend") == ui.usd(spend_total(loaded, team="payments"))
    assert app.query_params.get("team") == "payments"
    assert app.query_params.get("period") == "7d"
    app.selectbox(key="tt_f_team").set_value("").run()
    assert metric(app, "Total spend") == ui.usd(spend_total(loaded))
    assert "team" not in app.query_params


def test_drill_down_filters_and_goes_one_level_deeper(app: AppTest, loaded) -> None:
    signed_in(app, loaded.admin_key)
    app.selectbox(key="spend_drill").set_value("support").run()
    assert app.session_state["tt_f_team"] == "support"
    assert app.session_state["spend_group"] == "project"
    table = app.dataframe[0].value
    assert sorted(table["project"]) == ["helpdesk", "tickets"]
    assert metric(app, "Total spend") == ui.usd(spend_total(loaded, team="support"))


def test_engineer_opens_a_trace_with_its_tool_call_and_redacted_prompt(app, loaded) -> None:
    signed_in(app, loaded.create_key("engineer", "sre"))
    assert app.title[0].value == "Traces"
    assert not app.exception
    # The first trace opened is the newest with a tool call or a failure.
    assert metric(app, "Tool calls") == "1" or metric(app, "Failed calls") == "1"
    choice = app.selectbox(key="tr_trace")
    choice.select_index(next(i for i, o in enumerate(choice.options) if "refund-agent" in o))
    app.run()
    assert metric(app, "Tool calls") == "1"
    assert app.query_params["trace"] == app.selectbox(key="tr_trace").value
    shown = "\n".join(c.value for c in app.code)
    assert "lookup_order" not in shown or "A-10042" in shown  # arguments shown with the tool
    assert "[REDACTED:email]" in shown and SECRET_EMAIL not in shown


def test_an_endpoint_the_collector_lacks_is_explained(loaded, monkeypatch) -> None:
    def script() -> None:
        import streamlit as st

        from dashboards import ui
        from dashboards.api import ApiClient

        st.session_state["tt_client"] = ApiClient(st.session_state["url"], st.session_state["key"])
        with ui.section("Forecasts"):
            st.session_state["tt_client"].get("/api/v1/forecasts-not-built")
        st.write("after the section")

    at = AppTest.from_function(script, default_timeout=30)
    at.session_state["url"] = loaded.url
    at.session_state["key"] = loaded.admin_key
    at.run()
    assert not at.exception
    assert "**Forecasts** needs `GET /api/v1/forecasts-not-built`" in at.info[0].value
    assert at.markdown[-1].value == "after the section"
    with pytest.raises(NotAvailable):
        ApiClient(loaded.url, loaded.admin_key).get("/api/v1/forecasts-not-built")


def test_role_is_inferred_without_reading_data(loaded) -> None:
    before = loaded.get("/api/v1/audit/log").json() if _has(loaded, "/api/v1/audit/log") else None
    roles = {
        role: ApiClient(loaded.url, loaded.create_key(role, f"probe-{role}")).role()
        for role in ("admin", "finance", "engineer", "compliance", "ingest", "router")
    }
    assert roles == {r: r for r in roles}
    if before is not None:
        after = loaded.get("/api/v1/audit/log").json()
        reads = [
            r
            for r in after["rows"]
            if r["action"] in ("calls.read", "trace.read")
            and r["seq"] > (before["rows"][0]["seq"] if before["rows"] else 0)
        ]
        assert reads == []


def _has(collector: CollectorProcess, path: str) -> bool:
    return path in collector.get("/openapi.json").json()["paths"]


def test_empty_collector_says_what_to_do(fresh_collector, monkeypatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_API_URL", fresh_collector.url)
    at = signed_in(AppTest.from_file(APP, default_timeout=60), fresh_collector.admin_key)
    assert not at.exception
    assert "No calls in this period. Point your app at the proxy" in texts(at)
    at.switch_page("views/traces.py").run()
    assert "No traces match in this period" in texts(at)


def test_compliance_exports_then_verifies_the_upload_and_spots_a_change(app, loaded) -> None:
    signed_in(app, loaded.create_key("compliance", "exporter"))
    assert "Audit log intact" in app.success[0].value
    app.selectbox(key="au_format").set_value("jsonl")
    app.button(key="au_create").click().run()
    assert not app.exception
    export = app.session_state["au_last"]
    manifest = json.loads(export.manifest)
    assert manifest["row_count"] == len(CALLS) and manifest["format"] == "jsonl"
    assert [b.label for b in app.download_button] == ["Download export", "Download manifest"]

    app.file_uploader(key="au_up").upload(export.filename, export.data)
    app.file_uploader(key="au_up_manifest").upload("m.json", export.manifest)
    app.run()
    assert any(s.value.startswith("Verified:") for s in app.success), texts(app)

    tampered = export.data.replace(b"payments", b"paymentz", 1)
    app.file_uploader(key="au_up").set_value((export.filename, tampered, "application/jsonl"))
    app.run()
    failure = next(e.value for e in app.error if "Verification failed" in e.value)
    assert "the file was changed" in failure


def test_a_custom_period_from_the_url_is_applied_and_kept(app, loaded) -> None:
    app.query_params.update({"from": "2020-01-01T10:00:00Z", "to": "2020-01-02T10:00:00Z"})
    signed_in(app, loaded.admin_key)
    assert app.session_state["tt_f_period"] == "custom"
    assert metric(app, "Total spend") == "$0.0000"
    assert "No calls in this period" in texts(app)
    assert app.query_params["from"] == "2020-01-01T10:00:00Z"  # exact times, not whole days
    app.selectbox(key="tt_f_period").set_value("7d").run()
    assert metric(app, "Total spend") == ui.usd(spend_total(loaded))
    assert "from" not in app.query_params and app.query_params["period"] == "7d"

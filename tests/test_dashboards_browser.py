"""The dashboards in headless Chromium: a real collector fed by the demo's apps
through the real capture proxy (simulated providers over HTTPS), the real
``tokentrail dashboards`` process, sign-in and every page, figures checked
against the API, a screenshot per page in test-artifacts/browser/."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboards import ui
from demo.simulator import Outage, SimulatorConfig, make_test_certificate, start_simulator
from tests.conftest import ROOT, CollectorProcess, free_port
from tests.dashboards_support import (
    ARTIFACTS,
    assert_no_exception,
    browser_fixture,  # noqa: F401 - the browser fixture
    dashboards_process,
    main_text,
    metric,
    new_page,
    open_page,
    openapi_paths,
    screenshot,
    sign_in,
    wait_for_calls,
    wait_loaded,
)
from tokentrail.supervisor import Child, Supervisor, child_env, cli, port_open, proxy_chatter

PAGE_BUDGET_S = 2.0


@pytest.fixture(scope="module")
def demo_data(collector: CollectorProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Seven seconds of the demo's traffic through a real proxy; returns the API's totals."""
    folder = tmp_path_factory.mktemp("demo")
    certfile, keyfile, ca = make_test_certificate(folder / "certs")
    config = SimulatorConfig(
        seed=3, outages=[Outage("anthropic", 0.0, 6.0)], rate_limit_burst_probability=0.04
    )
    proxy_port = free_port()
    proxy_ca = folder / "proxy" / "proxy" / "mitmproxy" / "mitmproxy-ca-cert.pem"
    group = Supervisor()
    try:
        group.start(
            Child(
                "proxy",
                cli(
                    "proxy",
                    "--data-dir",
                    str(folder / "proxy"),
                    "--port",
                    str(proxy_port),
                    "--collector-url",
                    collector.url,
                    "--upstream-ca",
                    ca,
                ),
                child_env(TOKENTRAIL_API_KEY=collector.create_key("ingest", "proxy")),
                port_open("127.0.0.1", proxy_port, also=proxy_ca.exists),
                noisy=proxy_chatter,
            )
        )
        # The outage clock starts with the simulator: the traffic starts right after.
        with start_simulator(certfile=certfile, keyfile=keyfile, config=config) as sim:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "demo.traffic",
                    "--proxy",
                    f"http://127.0.0.1:{proxy_port}",
                    "--proxy-ca",
                    str(proxy_ca),
                    "--upstream",
                    sim.url,
                    "--collector",
                    collector.url,
                    "--rate",
                    "12",
                    "--duration",
                    "7",
                    "--seed",
                    "5",
                ],
                cwd=ROOT,
                env=child_env(TOKENTRAIL_API_KEY=collector.create_key("ingest", "apps")),
                check=True,
                timeout=120,
                capture_output=True,
            )
        total = wait_for_calls(collector.url, collector.admin_key, 60)
    finally:
        group.stop()
    if "/api/v1/jobs/run" in openapi_paths(collector.url):
        # The analytics pages read job outputs: compute them now rather than in 5 minutes.
        assert collector.post("/api/v1/jobs/run", json={}).json()["ok"]
    return total


@pytest.fixture(scope="module")
def site(collector: CollectorProcess, demo_data: dict) -> Iterator[str]:
    with dashboards_process(collector.url, free_port()) as url:
        yield url


def api(collector: CollectorProcess, path: str, **params: Any) -> Any:
    response = collector.get(path, **params)
    response.raise_for_status()
    return response.json()


def test_admin_signs_in_and_every_page_shows_the_api_figures(
    browser: Any,
    site: str,
    collector: CollectorProcess,
    demo_data: dict,
) -> None:
    page = new_page(browser)
    page.goto(site)
    page.get_by_label("API key").wait_for()
    screenshot(page, "browser", "sign-in")
    sign_in(page, collector.admin_key)
    page.wait_for_url(f"{site}/spend")
    timings = {"spend": {"app_s": wait_loaded(page, "Spend")}}
    assert_no_exception(page)
    assert metric(page, "Total spend") == ui.usd(demo_data["cost_usd"])
    assert metric(page, "Calls") == ui.count(demo_data["calls"])
    assert metric(page, "Failed calls") == ui.count(demo_data["error_calls"])
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {r["team"] for r in rows} == {"payments", "support", "search", "growth"}
    assert abs(sum(float(r["cost_usd"]) for r in rows) - demo_data["cost_usd"]) < 1e-9
    screenshot(page, "browser", "spend")

    available = openapi_paths(collector.url)
    for name in ("traces", "reliability", "cache", "routing", "audit"):
        seconds, reported = open_page(page, name)
        timings[name] = {"browser_s": round(seconds, 2), "app_s": reported}
        assert_no_exception(page)
        check_page(page, name, collector, demo_data, available)
        screenshot(page, "browser", name)
        assert seconds < PAGE_BUDGET_S, f"{name} took {seconds:.2f} s"
    seconds, reported = open_page(page, "spend")
    timings["spend"]["browser_s"] = round(seconds, 2)
    assert seconds < PAGE_BUDGET_S
    (ARTIFACTS / "browser" / "timings.json").write_text(json.dumps(timings, indent=2))


def check_page(
    page: Any, name: str, collector: CollectorProcess, totals: dict, available: set[str]
) -> None:
    text = main_text(page)
    assert "No calls in this period" not in text and "No traces match" not in text
    assert (
        "not available on this collector yet" not in text
        or name == "routing"
        and ("/api/v1/routing/weights" not in available)
    )
    if name == "traces":
        assert "Trace " in text and page.locator('[data-testid="stPlotlyChart"]').count() >= 1
        assert int(metric(page, "Model calls")) >= 1
    elif name == "reliability" and "/api/v1/metrics/failover" in available:
        failover = api(collector, "/api/v1/metrics/failover")["totals"]
        assert metric(page, "Attempts") == ui.count(failover["attempts"])
        assert metric(page, "Error rate") == ui.percent(failover["error_rate"])
        assert failover["errors"] and "No failed calls" not in text
    elif name == "reliability":
        assert metric(page, "Attempts") == ui.count(min(totals["calls"], 1000))
        assert metric(page, "Failed") == ui.count(totals["error_calls"])
        # The simulator's anthropic outage shows as a window (the table is a canvas).
        assert "No provider outages" not in text and "Outage windows" in text
    elif name == "cache" and "/api/v1/metrics/cache" in available:
        cache = api(collector, "/api/v1/metrics/cache")["totals"]
        assert metric(page, "Prompt-cache hit rate") == ui.percent(cache["provider_cache_hit_rate"])
        assert metric(page, "Duplicate calls") == ui.count(cache["duplicate_calls"])
    elif name == "cache":
        rows = api(collector, "/api/v1/spend", group_by="provider")["rows"]
        read = sum(r["cache_read_tokens"] for r in rows)
        total = sum(r["input_tokens"] for r in rows)
        assert metric(page, "Prompt-cache hit rate") == ui.percent(read / total)
        assert "Repeated prompts" in text
    elif name == "routing" and "/api/v1/routing/weights" in available:
        routes = api(collector, "/api/v1/routing/weights")["routes"]
        first = sorted(r["route"] for r in routes)[0]
        assert f"route={first}" in page.url  # the route shown is in the link
        assert "Paste into your gateway" in text and "model_list:" in text
    elif name == "routing":
        assert "needs `GET /api/v1/routing/weights`" in text.replace("\n", " ") or (
            "needs GET /api/v1/routing/weights" in text
        )
    elif name == "audit" and "/api/v1/audit/log" in available:
        assert "Audit log intact" in text
        assert "Access log" in text
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=20_000)


def test_a_shared_link_keeps_its_filters_through_sign_in(
    browser: Any,
    site: str,
    collector: CollectorProcess,
    demo_data: dict,
) -> None:
    page = new_page(browser)
    page.goto(f"{site}/spend?team=payments&period=7d")
    sign_in(page, collector.admin_key)
    wait_loaded(page, "Spend")
    payments = api(collector, "/api/v1/spend", team="payments")["rows"]
    assert metric(page, "Total spend") == ui.usd(sum(r["cost_usd"] for r in payments))
    assert "team=payments" in page.url and "period=7d" in page.url
    open_page(page, "reliability")
    assert "team=payments" in page.url  # the filters follow to the next page
    screenshot(page, "browser", "shared-link-reliability")


def test_finance_key_sees_spend_but_not_traces(
    browser: Any,
    site: str,
    collector: CollectorProcess,
    demo_data: dict,
) -> None:
    page = new_page(browser)
    page.goto(f"{site}/traces")
    sign_in(page, collector.create_key("finance", "finance-team"))
    wait_loaded(page, "Traces")
    text = main_text(page)
    assert "needs an engineer or admin key; you are signed in with a finance key" in text
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 0
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Spend" in nav and "Traces" not in nav and "Audit" not in nav
    screenshot(page, "browser", "finance-traces")
    open_page(page, "spend")
    assert metric(page, "Total spend") == ui.usd(demo_data["cost_usd"])


def test_compliance_key_sees_audit(
    browser: Any,
    site: str,
    collector: CollectorProcess,
    demo_data: dict,
) -> None:
    page = new_page(browser)
    page.goto(site)
    sign_in(page, collector.create_key("compliance", "auditors"))
    page.wait_for_url(f"{site}/audit")
    wait_loaded(page, "Audit")
    assert_no_exception(page)
    text = main_text(page)
    assert "needs a" not in text and "needs an" not in text
    # Audit is this key's only page, so there is no page menu to show.
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.get_by_text("Signed in with a compliance key").count() == 1
    if "/api/v1/audit/log" in openapi_paths(collector.url):
        assert "Audit log intact" in text and "No audit records" not in text
        # The table renders after the text on a loaded machine: wait for it.
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=20_000)
    screenshot(page, "browser", "compliance-audit")

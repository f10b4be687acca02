"""Helpers for the dashboards and ``up`` tests: a known data set sent as OTLP, the
dashboards as a real process, and headless Chromium driven by Playwright."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import ROOT
from tokentrail.supervisor import Child, Supervisor, child_env, cli, http_ok

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Text Streamlit shows for an uncaught exception, and our own words for "no data".
EXCEPTION_TEXT = re.compile(
    r"Traceback \(most recent call last\)|StreamlitAPIException|This app has encountered an error"
)
PAGE_TITLES = {
    "spend": "Spend",
    "traces": "Traces",
    "reliability": "Reliability",
    "cache": "Cache",
    "routing": "Routing",
    "audit": "Audit",
}
SECRET_EMAIL = "jane.doe@example.com"

# (team, project, app, route, provider, model, input, cached, output, fails)
# fmt: off
CALLS = [
    ("payments", "refunds", "refund-agent", "agent", "openai", "gpt-4o", 1200, 0, 150, False),
    ("payments", "fraud", "fraud-screener", "classify", "anthropic", "claude-haiku-4-5",
     400, 0, 8, False),
    ("support", "helpdesk", "support-bot", "chat", "openai", "gpt-4o-mini", 300, 0, 90, False),
    ("support", "helpdesk", "support-bot", "chat", "openai", "gpt-4o-mini", 300, 0, 90, False),
    ("support", "tickets", "ticket-summarizer", "summarize", "openai", "gpt-4o",
     2048, 1024, 200, False),
    ("search", "ranking", "search-ranker", "rerank", "google", "gemini-2.0-flash",
     900, 0, 40, False),
    ("growth", "campaigns", "email-writer", "draft", "anthropic", "claude-sonnet-4-5",
     2500, 2048, 400, False),
    ("growth", "campaigns", "email-writer", "draft", "anthropic", "claude-sonnet-4-5",
     2500, 0, 0, True),
]
# fmt: on


def send_dataset(collector_url: str, ingest_key: str) -> None:
    """Four teams' calls as an instrumented app would export them: per request a
    server span, the model call(s) under it, and for the agent an executed tool."""
    for team, project, app, route, provider, model, tokens_in, cached, tokens_out, fails in CALLS:
        tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": app, "tokentrail.team": team})
        )
        exporter = OTLPSpanExporter(
            endpoint=f"{collector_url}/v1/traces",
            headers={"Authorization": f"Bearer {ingest_key}"},
        )
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = tracer_provider.get_tracer("tests")
        attribution = {
            "tokentrail.project": project,
            "tokentrail.route": route,
            "tokentrail.user": f"{team}-user",
        }
        question = f"Hello from {team}, write to me at {SECRET_EMAIL}"
        with tracer.start_as_current_span(
            f"POST /{route}", kind=SpanKind.SERVER, attributes=attribution
        ):
            call = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "gen_ai.input.messages": f'[{{"role": "user", "parts": [{{"type": "text", '
                f'"content": "{question}"}}]}}]',
                **attribution,
            }
            with tracer.start_as_current_span(
                f"chat {model}", kind=SpanKind.CLIENT, attributes=call
            ) as span:
                if fails:
                    span.set_attribute("error.type", "503")
                    span.set_attribute("http.response.status_code", 503)
                    span.set_status(Status(StatusCode.ERROR, "service unavailable"))
                else:
                    span.set_attributes(
                        {
                            "gen_ai.response.model": model,
                            "gen_ai.usage.input_tokens": tokens_in,
                            "gen_ai.usage.cache_read.input_tokens": cached,
                            "gen_ai.usage.output_tokens": tokens_out,
                            "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": '
                            '"text", "content": "Sure, done."}]}]',
                        }
                    )
            if app == "refund-agent":
                with tracer.start_as_current_span(
                    "execute_tool lookup_order",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "lookup_order",
                        "gen_ai.tool.call.id": "call_1",
                        "gen_ai.tool.call.arguments": '{"order_id": "A-10042"}',
                        "gen_ai.tool.call.result": '{"status": "delivered"}',
                        **attribution,
                    },
                ):
                    time.sleep(0.01)
        tracer_provider.shutdown()


def wait_for_calls(collector_url: str, key: str, count: int, timeout: float = 30) -> dict:
    """The spend total once ``count`` calls are stored and the figure holds still."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rows = httpx.get(
            f"{collector_url}/api/v1/spend", timeout=10, headers={"Authorization": f"Bearer {key}"}
        ).json()["rows"]
        total = rows[0] if rows else {"calls": 0}
        if total["calls"] >= count and total == last:
            return total
        last = total
        time.sleep(0.5)
    raise AssertionError(f"expected {count} calls, the collector has {last}")


@contextmanager
def dashboards_process(collector_url: str, port: int, **env: str) -> Iterator[str]:
    """``tokentrail dashboards`` as a real process; yields its URL."""
    group = Supervisor()
    url = f"http://127.0.0.1:{port}"
    try:
        group.start(
            Child(
                "dashboards",
                cli("dashboards", "--port", str(port), "--url", collector_url),
                child_env(**env),
                http_ok(f"{url}/_stcore/health"),
            ),
            timeout=60,
        )
        yield url
    finally:
        group.stop()


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("these tests need Debian's chromium: apt-get install -y chromium (.ci/run)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def new_page(browser: Any) -> Any:
    # Tall: Streamlit scrolls inside its own container, so a screenshot shows the viewport.
    context = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def wait_loaded(page: Any, title: str, timeout: float = 30_000) -> float:
    """Wait until the page's run finished; returns the render time the app reports."""
    caption = page.get_by_text(re.compile(rf"^{title} loaded in [\d.]+ s$"))
    caption.wait_for(timeout=timeout)
    return float(re.search(r"([\d.]+) s$", caption.inner_text()).group(1))


def sign_in(page: Any, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def open_page(page: Any, name: str) -> tuple[float, float]:
    """Click the page's link in the sidebar; (seconds until rendered, app-reported seconds)."""
    started = time.monotonic()
    page.locator('[data-testid="stSidebarNavLink"]', has_text=PAGE_TITLES[name]).click()
    page.wait_for_url(re.compile(rf"/{name}(\?.*)?$"))
    reported = wait_loaded(page, PAGE_TITLES[name])
    return time.monotonic() - started, reported


def metric(page: Any, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def main_text(page: Any) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def assert_no_exception(page: Any) -> None:
    text = page.locator("body").inner_text()
    assert not EXCEPTION_TEXT.search(text), text[:3000]
    assert page.locator('[data-testid="stException"]').count() == 0


def screenshot(page: Any, folder: str, name: str) -> Path:
    path = ARTIFACTS / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def openapi_paths(collector_url: str) -> set[str]:
    return set(httpx.get(f"{collector_url}/openapi.json", timeout=10).json()["paths"])

"""Analytics through a real collector: OTLP spans in, jobs run over the API and the
CLI, metrics, budgets with a webhook, routing weights in three formats, roles."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ROOT, CollectorProcess, collector_env, free_port

NOW = datetime.now(UTC)


def traffic_start(now: datetime) -> datetime:
    """Half an hour ago (inside routing's last hour), moved past an hour boundary
    if the 160 s of traffic would straddle one: the cache job counts exact
    duplicates within an hour."""
    start = now - timedelta(minutes=30)
    later = start + timedelta(minutes=3)
    return later.replace(minute=0, second=10, microsecond=0) if later.hour != start.hour else start


START = traffic_start(NOW)
QUESTION = "How do I export last month's invoices as CSV for the finance team?"


class Webhook:
    """A local HTTP server standing in for Slack: records every POST body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def analytics(
    tmp_path_factory: pytest.TempPathFactory, webhook: Webhook
) -> Iterator[CollectorProcess]:
    folder = tmp_path_factory.mktemp("analytics")
    (folder / "budgets.toml").write_text(
        '[[budget]]\nteam = "payments"\nmonthly_usd = "0.002"\n\n'
        '[[budget]]\nteam = "search"\nmonthly_usd = 1000000\n'
    )
    (folder / "routes.toml").write_text(
        '[[route]]\nname = "support-chat"\nobjective = "cost"\n'
        'candidates = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest",'
        ' "google/gemini-2.0-flash"]\n'
    )
    env = collector_env(
        TOKENTRAIL_BUDGETS_FILE=str(folder / "budgets.toml"),
        TOKENTRAIL_ROUTES_FILE=str(folder / "routes.toml"),
        TOKENTRAIL_ALERT_WEBHOOK_URL=webhook.url,
        TOKENTRAIL_ROUTING_MIN_CALLS="5",
        # No re-reading of just-ingested calls: a run with nothing new recomputes nothing.
        TOKENTRAIL_JOBS_LATE_OVERLAP_SECONDS="0",
        TOKENTRAIL_GRPC_PORT="0",
    )
    proc = CollectorProcess(folder / "data", free_port(), env)
    proc.start()
    send_traffic(proc)
    yield proc
    proc.stop()


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def span(at: datetime, provider: str, model: str, team: str, failed: bool = False, **extra: Any):
    start = int(at.timestamp() * 1e9)
    attributes = [
        attr("gen_ai.operation.name", "chat"),
        attr("gen_ai.provider.name", provider),
        attr("gen_ai.request.model", model),
        attr("gen_ai.usage.input_tokens", 2000),
        attr("gen_ai.usage.output_tokens", 0 if failed else 200),
        attr("gen_ai.usage.cache_read.input_tokens", 0 if failed else 1000),
        attr("tokentrail.team", team),
        attr("tokentrail.route", "support-chat"),
        attr("tokentrail.tag.feature", "invoices" if team == "payments" else "search"),
        attr("tokentrail.tags", "beta,prod"),
        attr(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]),
        ),
    ]
    if failed:
        attributes += [
            attr("error.type", "overloaded_error"),
            attr("http.response.status_code", 503),
        ]
    else:
        attributes.append(attr("gen_ai.response.model", model))
    attributes += [attr(k, v) for k, v in extra.items()]
    return {
        "traceId": secrets.token_hex(16),
        "spanId": secrets.token_hex(8),
        "name": f"chat {model}",
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 900_000_000),
        "attributes": attributes,
        "status": {"code": 2 if failed else 0},
    }


def send_traffic(proc: CollectorProcess) -> None:
    spans = []
    for i in range(8):
        at = START + timedelta(seconds=20 * i)
        spans.append(span(at, "openai", "gpt-4o-mini", "payments"))
        spans.append(span(at, "anthropic", "claude-3-5-haiku-latest", "search"))
        spans.append(span(at, "google", "gemini-2.0-flash", "search", failed=True))
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "helpdesk")]},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}],
            }
        ]
    }
    key = proc.create_key("ingest")
    response = proc.post(
        "/v1/traces",
        key=key,
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    frm = (START - timedelta(minutes=1)).isoformat()
    assert proc.wait_for(lambda: len(proc.calls(**{"from": frm}, limit=100)) == 24)
    ran = proc.post("/api/v1/jobs/run", json={})
    assert ran.status_code == 200 and ran.json()["ok"], ran.text


def test_job_runs_are_audited_and_checked(analytics: CollectorProcess) -> None:
    one = analytics.post("/api/v1/jobs/run", json={"name": "cost"}).json()
    assert [r["job"] for r in one["runs"]] == ["cost"] and one["ok"]
    assert one["runs"][0]["windows"] == 0  # nothing new since the last run
    full = analytics.post("/api/v1/jobs/run", params={"name": "cost", "full": "true"}).json()
    assert full["runs"][0]["full"] and full["runs"][0]["windows"] >= 1
    bad = analytics.post("/api/v1/jobs/run", json={"name": "nope"})
    assert bad.status_code == 400 and "cost, budgets, cache" in bad.json()["detail"]
    finance = analytics.create_key("finance")
    assert analytics.post("/api/v1/jobs/run", key=finance, json={}).status_code == 403
    runs = analytics.get("/api/v1/audit/log", action="jobs.run").json()["rows"]
    assert {r["object"] for r in runs} >= {"all", "cost"}
    recent = analytics.get("/api/v1/jobs").json()["rows"]
    assert {"cost", "budgets", "cache", "duplicates", "failover", "routing"} <= {
        r["job"] for r in recent
    }


def test_cli_runs_the_jobs(analytics: CollectorProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokentrail.cli",
            "jobs",
            "run",
            "failover",
            "--url",
            analytics.url,
            "--data-dir",
            str(analytics.data_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failover    ok")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokentrail.cli",
            "jobs",
            "run",
            "nope",
            "--url",
            analytics.url,
            "--data-dir",
            str(analytics.data_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 1 and "no job named 'nope'" in bad.stderr


def test_routing_weights_in_three_formats_with_etag(analytics: CollectorProcess) -> None:
    router = analytics.create_key("router")
    answer = analytics.get("/api/v1/routing/weights", key=router, route="support-chat")
    assert answer.status_code == 200
    native = answer.json()
    assert native["route"] == "support-chat" and native["version"] >= 1 and native["computed_at"]
    weights = {w["model"]: w for w in native["weights"]}
    assert weights["gemini-2.0-flash"]["weight"] == 0
    assert weights["gemini-2.0-flash"]["reason"].startswith("weight 0: 100.0% errors")
    assert weights["gpt-4o-mini"]["weight"] == 0.9  # cheaper than Haiku per call
    assert weights["gpt-4o-mini"]["reason"].startswith("cheapest at $")
    assert weights["claude-3-5-haiku-latest"]["weight"] == 0.1
    assert sum(w["weight"] for w in native["weights"]) == pytest.approx(1.0)

    tag = answer.headers["etag"]
    again = analytics.get("/api/v1/routing/weights", key=router, route="support-chat")
    assert again.headers["etag"] == tag
    cached = httpx.get(
        f"{analytics.url}/api/v1/routing/weights",
        params={"route": "support-chat"},
        headers={**analytics.headers(router), "If-None-Match": tag},
    )
    assert cached.status_code == 304 and cached.content == b""

    litellm = analytics.get(
        "/api/v1/routing/weights", key=router, route="support-chat", format="litellm"
    ).json()
    assert litellm == {
        "model_list": [
            {
                "model_name": "support-chat",
                "litellm_params": {"model": "openai/gpt-4o-mini", "weight": 0.9},
            },
            {
                "model_name": "support-chat",
                "litellm_params": {"model": "anthropic/claude-3-5-haiku-latest", "weight": 0.1},
            },
        ]
    }
    portkey = analytics.get(
        "/api/v1/routing/weights", key=router, route="support-chat", format="portkey"
    ).json()
    assert portkey == {
        "strategy": {"mode": "loadbalance"},
        "targets": [
            {"provider": "openai", "override_params": {"model": "gpt-4o-mini"}, "weight": 0.9},
            {
                "provider": "anthropic",
                "override_params": {"model": "claude-3-5-haiku-latest"},
                "weight": 0.1,
            },
        ],
    }
    assert analytics.get("/api/v1/routing/weights", key=router, route="nope").status_code == 404
    assert analytics.get("/api/v1/routing/weights", key=router, format="xml").status_code == 400
    assert analytics.get("/api/v1/routing/weights", key=router, format="portkey").status_code == 400
    everything = analytics.get("/api/v1/routing/weights", key=router).json()
    assert [r["route"] for r in everything["routes"]] == ["support-chat"]
    finance = analytics.create_key("finance")
    assert analytics.get("/api/v1/routing/weights", key=finance).status_code == 403


def test_failover_metrics(analytics: CollectorProcess) -> None:
    answer = analytics.get(
        "/api/v1/metrics/failover", granularity="", **{"from": START.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    rows = {r["model"]: r for r in answer.json()["rows"]}
    flash = rows["gemini-2.0-flash"]
    assert (flash["attempts"], flash["errors"], flash["errors_5xx"]) == (8, 8, 8)
    assert flash["error_rate"] == 1.0 and flash["failed_input_tokens"] == 8 * 2000
    assert rows["gpt-4o-mini"]["errors"] == 0
    assert answer.json()["totals"]["attempts"] == 24
    router = analytics.create_key("router")
    assert analytics.get("/api/v1/metrics/failover", key=router).status_code == 403


def test_cache_metrics_and_duplicates_without_content_for_finance(
    analytics: CollectorProcess,
) -> None:
    params = {"from": START.isoformat(), "group_by": "team,model"}
    finance = analytics.create_key("finance")
    answer = analytics.get("/api/v1/metrics/cache", key=finance, **params).json()
    mini = next(r for r in answer["rows"] if r["model"] == "gpt-4o-mini")
    assert mini["calls"] == 8 and mini["provider_cache_hit_rate"] == 0.5
    # 8 x 1,000 cached tokens x ($0.15 - $0.075)/M
    assert Decimal(str(mini["provider_cache_savings_usd"])) == Decimal("0.0006")
    # The same question to the same model, 8 times: 7 an exact cache would answer.
    assert (mini["hashed_calls"], mini["duplicate_calls"]) == (8, 7)
    groups = answer["near_duplicates"]["groups"]
    assert groups and answer["near_duplicates"]["examples_included"] is False
    assert all("example" not in g and "variants" not in g for g in groups)
    assert "How do I export" not in json.dumps(answer)

    engineer = analytics.create_key("engineer", name="eng-reader")
    seen = analytics.get("/api/v1/metrics/cache", key=engineer, **params).json()
    examples = [g["example"] for g in seen["near_duplicates"]["groups"]]
    assert "how do i export last month s invoices as csv for the finance team" in examples
    reads = analytics.get("/api/v1/audit/log", action="metrics.duplicates.read").json()["rows"]
    assert [(r["actor"], r["role"]) for r in reads] == [("eng-reader", "engineer")]


def test_spend_by_any_attribute_or_tag(analytics: CollectorProcess) -> None:
    frm = {"from": (START - timedelta(minutes=1)).isoformat()}
    by_feature = analytics.get("/api/v1/spend", group_by="attr:feature", **frm).json()["rows"]
    assert {r["attr:feature"]: r["calls"] for r in by_feature} == {"invoices": 8, "search": 16}
    by_tag = analytics.get("/api/v1/spend", group_by="attr:tags", **frm).json()["rows"]
    assert {r["attr:tags"]: r["calls"] for r in by_tag} == {"beta": 24, "prod": 24}
    by_key = analytics.get("/api/v1/spend", group_by="team,attr:gen_ai.provider.name", **frm)
    assert by_key.status_code == 200
    bad = analytics.get("/api/v1/spend", group_by="attr:")
    assert bad.status_code == 400
    # The rollup answers the same as the raw calls: one team's spend both ways.
    total = analytics.get("/api/v1/spend", **frm).json()["rows"][0]
    by_team = analytics.get("/api/v1/spend", group_by="team", **frm).json()["rows"]
    assert sum(r["calls"] for r in by_team) == total["calls"] == 24
    assert sum(r["cost_usd"] for r in by_team) == pytest.approx(total["cost_usd"], abs=1e-12)


def test_budgets_alert_once_through_the_webhook(
    analytics: CollectorProcess, webhook: Webhook
) -> None:
    finance = analytics.create_key("finance")
    answer = analytics.get("/api/v1/budgets", key=finance).json()
    rows = {r["budget"]: r for r in answer["rows"]}
    assert set(rows) == {"team=payments", "team=search"}
    payments = rows["team=payments"]
    assert payments["status"] == "over" and payments["spent_usd"] > 0.002
    assert payments["daily"][-1]["cost_usd"] == pytest.approx(payments["spent_usd"])
    assert rows["team=search"]["status"] == "ok"
    kinds = {(a["budget"], a["kind"], a["threshold_pct"]) for a in answer["alerts"]}
    assert kinds == {("team=payments", k, t) for k in ("spend", "forecast") for t in (80, 100)}
    assert all(a["delivered_at"] for a in answer["alerts"])
    posted = [m for m in webhook.received if m["alert"]["budget"] == "team=payments"]
    assert len(posted) == 4 and posted[0]["text"].startswith("Budget team=payments: ")
    analytics.post("/api/v1/jobs/run", json={"name": "budgets"})
    assert len([m for m in webhook.received if m["alert"]["budget"] == "team=payments"]) == 4
    engineer = analytics.create_key("engineer")
    assert analytics.get("/api/v1/budgets", key=engineer).status_code == 403


MY_ROUTES = {
    ("GET", "/api/v1/metrics/cost"): {"finance", "engineer", "admin"},
    ("GET", "/api/v1/metrics/cache"): {"finance", "engineer", "admin"},
    ("GET", "/api/v1/metrics/failover"): {"finance", "engineer", "admin"},
    ("GET", "/api/v1/budgets"): {"finance", "admin"},
    ("GET", "/api/v1/routing/weights"): {"router", "admin"},
    ("POST", "/api/v1/jobs/run"): {"admin"},
    ("GET", "/api/v1/jobs"): {"admin"},
}


def test_every_analytics_route_checks_its_roles(analytics: CollectorProcess) -> None:
    keys = {
        role: analytics.create_key(role)
        for role in ("ingest", "finance", "engineer", "router", "compliance")
    }
    keys["admin"] = analytics.admin_key
    for (method, path), allowed in MY_ROUTES.items():
        anonymous = httpx.request(method, f"{analytics.url}{path}", json={"name": "routing"})
        assert anonymous.status_code == 401, path
        for role, key in keys.items():
            response = httpx.request(
                method,
                f"{analytics.url}{path}",
                headers=analytics.headers(key),
                json={"name": "routing"},
                params={"route": "support-chat"} if "routing" in path else None,
                timeout=60,
            )
            expected = 200 if role in allowed else 403
            assert response.status_code == expected, (method, path, role, response.text)


def test_the_scheduler_runs_the_jobs_and_stops_cleanly(tmp_path: Path) -> None:
    env = collector_env(TOKENTRAIL_JOBS_INTERVAL_MINUTES="0.01", TOKENTRAIL_GRPC_PORT="0")
    proc = CollectorProcess(tmp_path / "data", free_port(), env)
    proc.start()
    try:

        def scheduled() -> list[dict]:
            rows = proc.get("/api/v1/jobs", limit=100).json()["rows"]
            return [r for r in rows if r["trigger"] == "schedule"]

        runs = proc.wait_for(lambda: len({r["run_id"] for r in scheduled()}) >= 12, timeout=60)
        assert runs, "the scheduler did not run the jobs twice"
        assert {r["job"] for r in scheduled()} == {
            "cost",
            "budgets",
            "cache",
            "duplicates",
            "failover",
            "routing",
        }
        assert all(r["status"] == "ok" for r in scheduled())
        # SIGTERM: uvicorn shuts down (Runtime.close stops the scheduler thread),
        # then re-raises the signal, so the exit status is the signal's.
        assert proc.process is not None
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(30) in (0, -signal.SIGTERM)
        log = proc.log_path.read_text()
        assert "Traceback" not in log and "still running" not in log
    finally:
        proc.stop()

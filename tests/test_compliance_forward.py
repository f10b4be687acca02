"""Forwarding: what a collector stores goes on, redacted, to an OTLP endpoint
(here a second real collector) and a SIEM webhook; a dead target never
slows or fails ingest."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.compliance_helpers import MARKER, PERIOD, PHONE, chat_span, seed_calls, send
from tests.conftest import CollectorProcess, collector_env, free_port


class Webhook:
    """A SIEM stand-in: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.bodies.append(json.loads(body))
                received.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/siem"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [row for body in self.bodies if body["table"] == table for row in body["rows"]]


@pytest.fixture()
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def start(tmp_path: Path, name: str, **env: str) -> CollectorProcess:
    proc = CollectorProcess(tmp_path / name, free_port(), collector_env(**env))
    proc.start()
    return proc


def test_forwarded_redacted_to_otlp_and_webhook(tmp_path: Path, webhook: Webhook) -> None:
    target = start(tmp_path, "target")
    source = None
    try:
        target_key = target.create_key("ingest", "forwarded")
        source = start(
            tmp_path,
            "source",
            TOKENTRAIL_FORWARD_OTLP_URL=f"{target.url}/v1/traces",
            TOKENTRAIL_FORWARD_OTLP_HEADERS=json.dumps({"Authorization": f"Bearer {target_key}"}),
            TOKENTRAIL_FORWARD_WEBHOOK_URL=webhook.url,
            TOKENTRAIL_FORWARD_WEBHOOK_HEADERS=json.dumps({"X-Siem-Token": "s3cret"}),
        )
        seed_calls(source, teams=("fwd",), per_team=3)

        calls = source.wait_for(
            lambda: len(webhook.rows("llm_calls")) >= 3 and webhook.rows("llm_calls")
        )
        assert len(calls) == 3 and {c["team"] for c in calls} == {"fwd"}
        assert webhook.headers[0]["X-Siem-Token"] == "s3cret"
        for call in calls:
            assert MARKER in call["input_content"] and "[REDACTED:" in call["input_content"]
            assert (
                PHONE not in call["input_content"]
                and "dave@corp.example" not in call["input_content"]
            )
        tools = source.wait_for(lambda: webhook.rows("tool_calls"))
        assert tools and all("carol@example.org" not in t["arguments"] for t in tools)

        # The OTLP target is another collector: it now holds the same calls.
        forwarded = target.wait_for(lambda: len(c := target.calls(**PERIOD)) == 3 and c)
        assert forwarded, target.log_path.read_text()[-2000:]
        assert {c["span_id"] for c in forwarded} == {c["span_id"] for c in calls}
        for call in forwarded:
            assert call["team"] == "fwd" and call["input_tokens"] == 120
            assert MARKER in call["input_content"] and PHONE not in call["input_content"]

        status = source.get("/api/v1/audit/forwarding").json()
        sent = {t["target"]: t for t in status["targets"]}
        assert sent["otlp"]["sent_batches"] >= 1 and sent["webhook"]["sent_rows"] >= 3
        assert sent["otlp"]["failed_batches"] == sent["webhook"]["failed_batches"] == 0
    finally:
        if source is not None:
            source.stop()
        target.stop()


def test_metadata_only_forwarding(tmp_path: Path, webhook: Webhook) -> None:
    proc = start(
        tmp_path,
        "meta",
        TOKENTRAIL_FORWARD_WEBHOOK_URL=webhook.url,
        TOKENTRAIL_FORWARD_CONTENT="false",
    )
    try:
        seed_calls(proc, teams=("meta",), per_team=1)
        calls = proc.wait_for(lambda: webhook.rows("llm_calls"))
        assert calls and "input_content" not in calls[0] and calls[0]["team"] == "meta"
        assert MARKER not in json.dumps(webhook.bodies)
    finally:
        proc.stop()


def test_a_hanging_target_never_slows_or_fails_ingest(tmp_path: Path) -> None:
    # A target that accepts connections and never answers: the worst case.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(100)
    dead = f"http://127.0.0.1:{hanging.getsockname()[1]}"
    proc = start(
        tmp_path,
        "dead",
        TOKENTRAIL_FORWARD_OTLP_URL=f"{dead}/v1/traces",
        TOKENTRAIL_FORWARD_WEBHOOK_URL=f"{dead}/siem",
        TOKENTRAIL_FORWARD_QUEUE_BATCHES="2",
    )
    try:
        key = proc.create_key("ingest")
        slowest = 0.0
        for n in range(10):
            spans = [chat_span(secrets.token_hex(16), f"dead-{n}", time.time_ns(), "hello")]
            started = time.monotonic()
            send(proc, key, spans)
            slowest = max(slowest, time.monotonic() - started)
            proc.wait_for(lambda n=n: len(proc.calls(**PERIOD)) == n + 1)
        assert len(proc.calls(**PERIOD)) == 10
        assert slowest < 2.0, f"a request took {slowest:.1f} s"

        def dropped() -> list[dict] | None:
            targets = proc.get("/api/v1/audit/forwarding").json()["targets"]
            return targets if sum(t["dropped_batches"] for t in targets) >= 1 else None

        targets = proc.wait_for(dropped, timeout=30)
        assert targets and all(t["sent_batches"] == 0 for t in targets)
        assert proc.get("/healthz").json()["writer"]["store_failures"] == 0
    finally:
        proc.stop()
        hanging.close()

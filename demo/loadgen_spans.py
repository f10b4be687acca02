"""GenAI spans to the collector's OTLP/HTTP endpoint for the load generator.

The spans are SDK ``ReadableSpan`` objects handed to the real ``OTLPSpanExporter``
(HTTP protobuf) in batches, on a thread of their own, so the sender knows
exactly which span ids the collector acknowledged (``SpanExportResult.SUCCESS``).
"""

from __future__ import annotations

import concurrent.futures
import queue
import random
import threading
import time
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

SCOPE = InstrumentationScope("tokentrail.loadgen", "0.1.0")
SPAN_BATCH_MAX = 512  # spans per scheduled OTLP request
SPAN_PERIOD_S = 0.5  # how often the span thread sends what is due


class SpanSender:
    """GenAI spans to the collector's OTLP/HTTP endpoint, on a thread of its own."""

    def __init__(
        self,
        collector_url: str,
        ingest_key: str | None,
        spans_per_second: float,
        team: str,
        models: tuple[tuple[str, str], ...],
        seed: int,
    ) -> None:
        session = requests.Session()
        session.trust_env = False  # never through an HTTP(S)_PROXY from the environment
        headers = {"Authorization": f"Bearer {ingest_key}"} if ingest_key else {}
        self.exporter = OTLPSpanExporter(
            endpoint=collector_url.rstrip("/") + "/v1/traces",
            headers=headers,
            timeout=30,
            session=session,
        )
        self.rate = spans_per_second
        self.team = team
        self.models = models
        self.resource = Resource.create({"service.name": "tokentrail-loadgen"})
        self.rng = random.Random(seed)
        self.ok_span_ids: list[str] = []
        self.failed = 0
        self.emitted = 0
        self._extra: queue.SimpleQueue[tuple[int, concurrent.futures.Future[bool]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen-spans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self.exporter.shutdown()

    def send_batch(self, count: int) -> concurrent.futures.Future[bool]:
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._extra.put((count, done))
        return done

    def _run(self) -> None:
        started = time.monotonic()
        scheduled = 0
        while True:
            stopping = self._stop.wait(SPAN_PERIOD_S)
            due = int(self.rate * (time.monotonic() - started)) - scheduled
            while due > 0:
                count = min(due, SPAN_BATCH_MAX)
                self._export(count)
                scheduled += count
                due -= count
            while not self._extra.empty():
                count, done = self._extra.get()
                done.set_result(self._export(count))
            if stopping:
                return

    def _export(self, count: int) -> bool:
        now = time.time_ns()
        spans = [self._span(now) for _ in range(count)]
        self.emitted += count
        try:
            ok = self.exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception:  # noqa: BLE001 - a failed export is counted, never fatal
            ok = False
        if ok:
            self.ok_span_ids.extend(f"{span.context.span_id:016x}" for span in spans)
        else:
            self.failed += count
        return ok

    def _span(self, now_ns: int) -> ReadableSpan:
        rng = self.rng
        trace_id, span_id = rng.getrandbits(128) or 1, rng.getrandbits(64) or 1
        provider, model = rng.choice(self.models)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"loadgen-{span_id:016x}",
            "gen_ai.usage.input_tokens": rng.randint(20, 400),
            "gen_ai.usage.output_tokens": rng.randint(10, 200),
            "tokentrail.team": self.team,
        }
        return ReadableSpan(
            name=f"chat {model}",
            context=SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED)),
            resource=self.resource,
            attributes=attributes,
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.OK),
            start_time=now_ns - rng.randint(50, 2000) * 1_000_000,
            end_time=now_ns,
            instrumentation_scope=SCOPE,
        )

"""Demo traffic: four teams' applications calling LLM providers through the real proxy.

Each request an app handles is one trace: the app's own span (exported by the
OpenTelemetry SDK to the collector), the model calls it makes through the
capture proxy (``traceparent`` joins them to the trace), and for the agent the
tool it executes between two model calls. The mix has streaming, tool calls,
cached prompts, repeated and near-repeated questions, prompts with personal
data (redacted at capture), SDK retries of the simulator's 429 bursts and
outage, and application-level fallbacks to another provider when a call still
fails. The rate is bounded; it runs until stopped (or ``--duration``).

    python -m demo.traffic --proxy http://127.0.0.1:8080 --proxy-ca CA.pem \\
        --upstream https://127.0.0.1:9000 --collector http://127.0.0.1:4318 --rate 4

The apps' spans are sent with the ingest key in ``TOKENTRAIL_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from demo import calls
from demo.apps import APPS, REFUND_TOOLS, App, Model
from demo.calls import CallFailed, Prompt, Reply
from demo.texts import (
    LONG_BRIEF,
    faq_question,
    fraud_case,
    search_query,
    ticket_text,
)
from tokentrail.settings import Settings


class Traffic:
    def __init__(
        self,
        proxy: str,
        proxy_ca: str,
        upstream: str,
        collector: str,
        ingest_key: str,
        rate: float,
        seed: int = 0,
        workers: int = 16,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(workers)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="demo-app")
        self.stopping = threading.Event()
        self.counts = {"requests": 0, "ok": 0, "fallbacks": 0, "failed": 0, "skipped": 0}
        self.count_lock = threading.Lock()
        verify = ssl.create_default_context(cafile=proxy_ca)
        self.http = httpx.Client(
            proxy=proxy, verify=verify, timeout=60, limits=httpx.Limits(max_connections=workers * 2)
        )
        # One credential per team: the proxy stores only its fingerprint.
        self.openai = {
            team: calls.openai.OpenAI(
                base_url=f"{self.upstream}/v1",
                api_key=f"sk-demo-{team}",
                http_client=self.http,
                max_retries=2,
            )
            for team in {a.team for a in APPS}
        }
        self.anthropic = {
            team: calls.anthropic.Anthropic(
                base_url=self.upstream,
                api_key=f"sk-ant-demo-{team}",
                http_client=self.http,
                max_retries=2,
            )
            for team in {a.team for a in APPS}
        }
        self.providers: list[TracerProvider] = []
        self.tracers: dict[str, Tracer] = {}
        for app in APPS:
            if app.name in self.tracers:
                continue
            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": app.name,
                        "tokentrail.team": app.team,
                        "deployment.environment": "demo",
                    }
                )
            )
            exporter = OTLPSpanExporter(
                endpoint=f"{collector.rstrip('/')}/v1/traces",
                headers={"Authorization": f"Bearer {ingest_key}"},
            )
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
            self.providers.append(provider)
            self.tracers[app.name] = provider.get_tracer("tokentrail.demo")

    # -- the mix -----------------------------------------------------------
    def pick(self) -> tuple[App, random.Random]:
        with self.rng_lock:
            app = self.rng.choices(APPS, weights=[a.weight for a in APPS])[0]
            return app, random.Random(self.rng.getrandbits(64))

    def count(self, name: str) -> None:
        with self.count_lock:
            self.counts[name] += 1

    def handle(self, app: App, rng: random.Random) -> None:
        """One request to ``app``: its span, its model calls, fallbacks on failure."""
        user = f"{app.team}-user-{rng.randrange(app.users) + 1:02d}"
        tracer = self.tracers[app.name]
        kind = SpanKind.INTERNAL if app.kind == "agent" else SpanKind.SERVER
        name = f"invoke_agent {app.name}" if app.kind == "agent" else f"POST /{app.route}"
        with tracer.start_as_current_span(name, kind=kind) as span:
            span.set_attributes(
                {
                    "tokentrail.team": app.team,
                    "tokentrail.project": app.project,
                    "tokentrail.user": user,
                    "tokentrail.route": app.route,
                }
            )
            if app.kind == "agent":
                span.set_attribute("gen_ai.operation.name", "invoke_agent")
                span.set_attribute("gen_ai.agent.name", app.name)
            try:
                used = getattr(self, f"_{app.kind}")(app, rng, user)
            except CallFailed as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                self.count("failed")
                return
            span.set_attribute("demo.answered_by", f"{used[0]}/{used[1]}")
        self.count("ok")

    def headers(self, app: App, user: str) -> dict[str, str]:
        headers = {
            "x-tokentrail-team": app.team,
            "x-tokentrail-project": app.project,
            "x-tokentrail-app": app.name,
            "x-tokentrail-route": app.route,
            "x-tokentrail-user": user,
        }
        TraceContextTextMapPropagator().inject(headers)
        return headers

    def ask(
        self, app: App, rng: random.Random, user: str, prompt: Prompt, prefer: Model | None = None
    ) -> Reply:
        """The app's routing: a weighted primary (or the model already in use), and on
        failure the fallback model."""
        shares = [p[2] for p in app.primaries]
        provider, model, _ = rng.choices(app.primaries, weights=shares)[0]
        chain = [prefer or (provider, model)]
        if app.fallback != chain[0]:
            chain.append(app.fallback)
        failure: CallFailed | None = None
        for index, (provider, model) in enumerate(chain):
            if index:
                self.count("fallbacks")
            try:
                return self.call(provider, model, app, prompt, self.headers(app, user))
            except CallFailed as exc:
                failure = exc
        assert failure is not None
        raise failure

    def call(
        self, provider: str, model: str, app: App, prompt: Prompt, headers: dict[str, str]
    ) -> Reply:
        if provider == "openai":
            return calls.openai_chat(self.openai[app.team], model, prompt, headers)
        if provider == "anthropic":
            return calls.anthropic_messages(self.anthropic[app.team], model, prompt, headers)
        return calls.gemini_generate(self.http, self.upstream, model, prompt, headers)

    # -- scenarios: one per kind of app -------------------------------------------
    def _chat(self, app: App, rng: random.Random, user: str) -> Model:
        prompt = Prompt(
            "You are the support assistant of Acme Pay. Be brief and friendly.",
            [{"role": "user", "content": faq_question(rng)}],
            stream=rng.random() < 0.6,
            output_tokens=rng.randint(40, 220),
        )
        reply = self.ask(app, rng, user, prompt)
        return reply.provider, reply.model

    def _summarize(self, app: App, rng: random.Random, user: str) -> Model:
        # Long tickets (1024+ tokens) get the providers' implicit prompt caching.
        prompt = Prompt(
            "Summarize the support ticket in three bullet points.",
            [{"role": "user", "content": ticket_text(rng)}],
            output_tokens=rng.randint(80, 300),
        )
        reply = self.ask(app, rng, user, prompt)
        return reply.provider, reply.model

    def _classify(self, app: App, rng: random.Random, user: str) -> Model:
        prompt = Prompt(
            "Answer FRAUD or OK, then one reason.",
            [{"role": "user", "content": fraud_case(rng)}],
            max_tokens=16,
            output_tokens=rng.randint(3, 12),
        )
        reply = self.ask(app, rng, user, prompt)
        return reply.provider, reply.model

    def _rerank(self, app: App, rng: random.Random, user: str) -> Model:
        prompt = Prompt(
            "Rank the candidate documents for the query; answer with their ids.",
            [{"role": "user", "content": search_query(rng)}],
            stream=rng.random() < 0.3,
            output_tokens=rng.randint(20, 80),
        )
        reply = self.ask(app, rng, user, prompt)
        return reply.provider, reply.model

    def _embed(self, app: App, rng: random.Random, user: str) -> Model:
        texts = [search_query(rng) for _ in range(rng.randint(1, 4))]
        headers = self.headers(app, user)
        for model in ("text-embedding-3-small", "text-embedding-3-large"):
            try:
                calls.openai_embed(self.openai[app.team], model, texts, headers)
                return "openai", model
            except CallFailed:
                self.count("fallbacks")
        raise CallFailed("both embedding models failed")

    def _draft(self, app: App, rng: random.Random, user: str) -> Model:
        # A long brand brief as system prompt, cached by the provider most of the time.
        cached = rng.random() < 0.8
        prompt = Prompt(
            LONG_BRIEF,
            [
                {
                    "role": "user",
                    "content": f"Draft a {rng.choice(['welcome', 'win-back', 'upsell'])} "
                    f"e-mail for customer segment {rng.randint(1, 40)}.",
                }
            ],
            stream=rng.random() < 0.7,
            max_tokens=900,
            output_tokens=rng.randint(200, 600),
            cache_read=2048 if cached else 0,
            cache_write=0 if cached else 2048,
        )
        reply = self.ask(app, rng, user, prompt)
        return reply.provider, reply.model

    def _agent(self, app: App, rng: random.Random, user: str) -> Model:
        order = f"A-{rng.randint(10000, 10400)}"
        turns: list[dict[str, Any]] = [
            {"role": "user", "content": f"I want a refund for order {order}, it arrived broken."}
        ]
        prompt = Prompt(
            "You are Acme Pay's refund agent. Look the order up before deciding.",
            turns,
            tools=REFUND_TOOLS,
            stream=rng.random() < 0.3,
        )
        reply = self.ask(app, rng, user, prompt)
        for call in reply.tool_calls[:2]:
            result = self.run_tool(app, call, order, rng)
            turns.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                    ],
                }
            )
            turns.append({"role": "tool", "tool_call_id": call.id, "content": result})
        if reply.tool_calls:
            prompt.output_tokens = rng.randint(60, 160)
            reply = self.ask(app, rng, user, prompt, prefer=(reply.provider, reply.model))
        return reply.provider, reply.model

    def run_tool(self, app: App, call: calls.ToolCall, order: str, rng: random.Random) -> str:
        tracer = self.tracers[app.name]
        with tracer.start_as_current_span(f"execute_tool {call.name}") as span:
            time.sleep(rng.uniform(0.02, 0.12))
            result = json.dumps(
                {
                    "order_id": order,
                    "status": "delivered",
                    "amount_usd": round(rng.uniform(12, 240), 2),
                    "damaged_reported": True,
                }
            )
            span.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": call.name,
                    "gen_ai.tool.call.id": call.id,
                    "gen_ai.tool.call.arguments": call.arguments,
                    "gen_ai.tool.call.result": result,
                    "tokentrail.team": app.team,
                    "tokentrail.project": app.project,
                }
            )
            return result

    # -- running ---------------------------------------------------------------
    def run(self, duration: float | None = None) -> None:
        started = last_report = time.monotonic()
        next_at = started
        while not self.stopping.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now - last_report >= 15:
                last_report = now
                print(
                    "demo traffic: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
                    flush=True,
                )
            if now < next_at:
                self.stopping.wait(min(next_at - now, 0.5))
                continue
            with self.rng_lock:
                next_at += self.rng.expovariate(self.rate)  # Poisson arrivals at `rate`
            if not self.slots.acquire(blocking=False):
                self.count("skipped")  # bounded: never more than `workers` in flight
                continue
            app, rng = self.pick()
            self.count("requests")
            self.pool.submit(self._one, app, rng)
        self.close()

    def _one(self, app: App, rng: random.Random) -> None:
        try:
            self.handle(app, rng)
        except Exception as exc:  # a demo app must not die of one bad request
            print(f"demo traffic: {app.name} request failed unexpectedly: {exc!r}", flush=True)
        finally:
            self.slots.release()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for provider in self.providers:
            provider.shutdown()
        self.http.close()
        print(
            "demo traffic: stopped; " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Demo LLM traffic through the capture proxy")
    parser.add_argument("--proxy", required=True, help="the capture proxy, http://host:port")
    parser.add_argument("--proxy-ca", required=True, help="the proxy's CA certificate (PEM)")
    parser.add_argument("--upstream", required=True, help="the simulated providers' base URL")
    parser.add_argument("--collector", required=True, help="where the apps' spans go")
    parser.add_argument("--rate", type=float, default=4.0, help="requests started per second")
    parser.add_argument("--duration", type=float, default=None, help="seconds; default forever")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    key = Settings().api_key
    if not key:
        parser.error("set TOKENTRAIL_API_KEY to an ingest key for the apps' spans")
    traffic = Traffic(
        args.proxy, args.proxy_ca, args.upstream, args.collector, key, args.rate, args.seed
    )

    def stop(signum: int, _frame: object) -> None:
        traffic.stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(
        f"demo traffic: {args.rate:g} requests/s from {len(APPS)} apps of "
        f"{len({a.team for a in APPS})} teams via {args.proxy}",
        flush=True,
    )
    traffic.run(args.duration)


if __name__ == "__main__":
    main()

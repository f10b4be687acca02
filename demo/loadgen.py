"""Sustained load: real OpenAI and Anthropic SDK calls, through the capture proxy or
direct, plus GenAI OTLP spans straight to the collector.

::

    with LoadGenerator(
        proxy_url="http://127.0.0.1:8080",
        ca_file=".tokentrail/proxy/mitmproxy/mitmproxy-ca-cert.pem",
        provider_base_url=sim.url,
        collector_url="http://127.0.0.1:4318",
        ingest_key=key,
        calls_per_second=50,
        spans_per_second=20,
    ) as load:
        time.sleep(10)
    report = load.stop()   # stop() after the block returns the same final report

Model calls are scheduled open-loop: call n starts at ``n / calls_per_second``
whether or not earlier calls have finished, up to ``concurrency`` in flight
(beyond that the schedule waits for a free slot and catches up). The mix is
OpenAI chat completions (plain, and streamed with ``include_usage``) and
Anthropic messages (plain and streamed), half each, ``stream_share`` of them
streamed. Each call carries ``x-tokentrail-team`` and ``x-sim-*`` headers that
set the simulated provider's answer length and latency. The calls run on one
asyncio loop (uvloop when installed) in a thread of their own, with one
keep-alive ``httpx.AsyncClient`` shared by both SDKs. ``client="http"`` sends
the same requests without the SDKs (demo/loadgen_http.py), and ``client="raw"``
the same bytes on asyncio protocols (demo/loadgen_raw.py): at a high rate the
SDKs' CPU, and even httpx's, would otherwise dominate the run.

Spans are built as SDK ``ReadableSpan`` objects and handed to the real
``OTLPSpanExporter`` (HTTP protobuf) in batches from a second thread, so the
generator knows exactly which span ids the collector acknowledged
(``SpanExportResult.SUCCESS``: the collector answers 200 only for spans it has
durably accepted). ``send_large_stream`` and ``send_span_batch`` add one ~N-byte
streamed answer or one N-span OTLP request on top of the schedule (memory tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import anthropic
import httpx
import openai

from demo import loadgen_http, loadgen_raw, loadgen_sdk
from demo.loadgen_spans import SpanSender

__all__ = ["CLIENTS", "KINDS", "LoadGenerator", "LoadReport"]

# "sdk": the openai and anthropic SDKs; "http": the same requests through plain
# httpx (demo/loadgen_http.py); "raw": the same bytes on asyncio protocols
# (demo/loadgen_raw.py), for rates where even httpx's CPU would dominate.
CLIENTS = ("sdk", "http", "raw")
KINDS = ("openai_chat", "openai_chat_stream", "anthropic_messages", "anthropic_messages_stream")
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
MODELS = (("openai", OPENAI_MODEL), ("anthropic", ANTHROPIC_MODEL))  # provider, model
# A long answer is made of this word repeated (the simulator streams one word per
# event), so a large stream is ~1 KB events rather than millions of tiny ones.
LARGE_WORD = "tokentrail" * 100
ERROR_TEXT_MAX = 300


@dataclass
class LoadReport:
    """What the client saw. Lists are copies; the generator keeps appending to its own."""

    ok_response_ids: list[str] = field(default_factory=list)
    failed_calls: list[str] = field(default_factory=list)
    ok_span_ids: list[str] = field(default_factory=list)
    failed_spans: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sent: int = 0
    duration_s: float = 0.0
    # Beyond the shared contract: the extra large streams (their ids are in
    # ok_response_ids, their latencies only here), the schedule's worst lag behind
    # the open-loop plan, and calls started per kind.
    large_stream_ms: list[float] = field(default_factory=list)
    large_stream_bytes: int = 0
    max_schedule_lag_ms: float = 0.0
    in_flight: int = 0
    sent_by_kind: dict[str, int] = field(default_factory=dict)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoadGenerator:
    """Open-loop model calls (and OTLP spans) until ``stop()``; see the module doc."""

    def __init__(
        self,
        *,
        proxy_url: str | None,
        ca_file: str | None,
        provider_base_url: str,
        collector_url: str | None,
        ingest_key: str | None,
        calls_per_second: float,
        stream_share: float = 0.5,
        spans_per_second: float = 0.0,
        concurrency: int = 64,
        max_retries: int = 5,
        team: str = "load",
        output_tokens: int = 24,
        response_delay_ms: int = 0,
        token_delay_ms: int = 0,
        timeout_s: float = 60.0,
        seed: int = 0,
        client: str = "sdk",
    ) -> None:
        if calls_per_second < 0 or spans_per_second < 0:
            raise ValueError("calls_per_second and spans_per_second must not be negative")
        if not 0 <= stream_share <= 1:
            raise ValueError("stream_share must be between 0 and 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if spans_per_second and not collector_url:
            raise ValueError("spans_per_second needs a collector_url")
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}")
        self.client = client
        self.proxy_url = proxy_url
        self.ca_file = ca_file
        self.base_url = provider_base_url.rstrip("/")
        self.rate = calls_per_second
        self.stream_share = stream_share
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.team = team
        self.timeout_s = timeout_s
        self.sim_headers = {"x-tokentrail-team": team, "x-sim-output-tokens": str(output_tokens)}
        if response_delay_ms:
            self.sim_headers["x-sim-delay-ms"] = str(response_delay_ms)
        if token_delay_ms:
            self.sim_headers["x-sim-token-delay-ms"] = str(token_delay_ms)
        self.rng = random.Random(seed)
        self.spans = (
            SpanSender(collector_url, ingest_key, spans_per_second, team, MODELS, seed + 1)
            if collector_url
            else None
        )
        self._report = LoadReport(sent_by_kind=dict.fromkeys(KINDS, 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # calls started and not yet ended (the tasks outlive them briefly)
        self._scheduler: asyncio.Task[None] | None = None

    # -- lifecycle (any thread) ---------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this LoadGenerator was already started")
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="loadgen-calls", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=30)
        self._started_at = time.monotonic()
        if self.spans is not None:
            self.spans.start()

    def stop(self, drain_s: float | None = None) -> LoadReport:
        """Stop scheduling, let in-flight calls finish (at most ``drain_s``, default the
        call timeout), flush due spans; returns the final report."""
        if self._thread is None or self._loop is None or self._stopped:
            return self.report()
        self._stopped = True
        self._report.duration_s = time.monotonic() - self._started_at
        drain = self.timeout_s if drain_s is None else drain_s
        closing = asyncio.run_coroutine_threadsafe(self._close(drain), self._loop)
        closing.result(timeout=drain + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        if self.spans is not None:
            self.spans.stop()
        return self.report()

    def report(self) -> LoadReport:
        """A snapshot (the final report once stopped)."""
        r = self._report
        spans = self.spans
        return LoadReport(
            ok_response_ids=list(r.ok_response_ids),
            failed_calls=list(r.failed_calls),
            ok_span_ids=list(spans.ok_span_ids) if spans else [],
            failed_spans=spans.failed if spans else 0,
            latencies_ms=list(r.latencies_ms),
            sent=r.sent,
            duration_s=r.duration_s if self._stopped else time.monotonic() - self._started_at,
            large_stream_ms=list(r.large_stream_ms),
            large_stream_bytes=r.large_stream_bytes,
            max_schedule_lag_ms=r.max_schedule_lag_ms,
            in_flight=self._in_flight,
            sent_by_kind=dict(r.sent_by_kind),
        )

    def send_large_stream(self, size_bytes: int) -> concurrent.futures.Future[None]:
        """One extra streamed OpenAI answer of about ``size_bytes`` of text."""
        if self._loop is None or self._stopped:
            raise RuntimeError("the generator is not running")
        tokens = max(1, size_bytes // 4)  # the simulator's tokenizer: 4 characters a token
        headers = {
            "x-sim-output-tokens": str(tokens),
            "x-sim-response-text": LARGE_WORD,
            "x-sim-token-delay-ms": "0",
        }
        coro = self._call(-1, "openai_chat_stream", headers, large=True)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def send_span_batch(self, count: int) -> concurrent.futures.Future[bool]:
        """One extra OTLP request of ``count`` spans; resolves to True if acknowledged."""
        if self.spans is None:
            raise RuntimeError("spans need a collector_url")
        return self.spans.send_batch(count)

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- on the loop thread -------------------------------------------------
    async def _open(self) -> None:
        verify = ssl.create_default_context(cafile=self.ca_file)
        limits = httpx.Limits(
            max_connections=self.concurrency + 8, max_keepalive_connections=self.concurrency
        )
        timeout = httpx.Timeout(self.timeout_s, connect=10.0)
        self._http = httpx.AsyncClient(
            proxy=self.proxy_url, verify=verify, limits=limits, trust_env=False, timeout=timeout
        )
        self._openai = openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1",
            api_key="sk-loadgen-openai",
            max_retries=self.max_retries,
            timeout=timeout,
            http_client=self._http,
        )
        self._anthropic = anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key="sk-ant-loadgen",
            max_retries=self.max_retries,
            timeout=timeout,
            http_client=self._http,
        )
        # httpcore checks every pooled connection for every request (a poll()
        # each), so one pool of 128 connections costs more CPU than the calls:
        # the light client spreads its connections over pools of ~16.
        shards = max(1, self.concurrency // 16) if self.client == "http" else 0
        shard_limits = httpx.Limits(
            max_connections=self.concurrency // max(shards, 1) + 4,
            max_keepalive_connections=self.concurrency // max(shards, 1),
        )
        self._http_shards = [
            httpx.AsyncClient(
                proxy=self.proxy_url,
                verify=verify,
                limits=shard_limits,
                trust_env=False,
                timeout=timeout,
            )
            for _ in range(shards)
        ]
        self._next_shard = 0
        self._raw = (
            loadgen_raw.RawClient(self.base_url, self.proxy_url, verify, self.timeout_s)
            if self.client == "raw"
            else None
        )
        self._slots = asyncio.Semaphore(self.concurrency)
        if self.rate > 0:
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def _close(self, drain_s: float) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=drain_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for client in [self._http, *self._http_shards]:
            await client.aclose()
        if self._raw is not None:
            self._raw.close()
        await asyncio.get_running_loop().shutdown_asyncgens()

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        start = loop.time()
        report = self._report
        n = 0
        while True:
            due = start + n * interval
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._slots.acquire()
            report.max_schedule_lag_ms = max(report.max_schedule_lag_ms, (loop.time() - due) * 1e3)
            kind = self._pick_kind()
            report.sent += 1
            report.sent_by_kind[kind] += 1
            task = loop.create_task(self._call(n, kind, {}, slot=True))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1

    def _pick_kind(self) -> str:
        provider = "openai" if self.rng.random() < 0.5 else "anthropic"
        streamed = self.rng.random() < self.stream_share
        base = "openai_chat" if provider == "openai" else "anthropic_messages"
        return base + ("_stream" if streamed else "")

    async def _call(
        self, n: int, kind: str, extra: dict[str, str], *, slot: bool = False, large: bool = False
    ) -> None:
        report = self._report
        if large:  # scheduled from another thread: stop() must wait for it too
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        headers = {**self.sim_headers, **extra}
        prompt = f"Load call {n}: name three colours of the sea in one short sentence."
        started = time.perf_counter()
        self._in_flight += 1
        try:
            response_id, received = await self._one_call(kind, prompt, headers)
        except asyncio.CancelledError:
            report.failed_calls.append(f"{kind}: still in flight when the generator stopped")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal
            report.failed_calls.append(f"{kind}: {type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX])
            return
        finally:
            self._in_flight -= 1
            if slot:
                self._slots.release()
        elapsed_ms = (time.perf_counter() - started) * 1e3
        report.ok_response_ids.append(response_id)
        if large:
            report.large_stream_ms.append(elapsed_ms)
            report.large_stream_bytes += received
        else:
            report.latencies_ms.append(elapsed_ms)

    async def _one_call(self, kind: str, prompt: str, headers: dict[str, str]) -> tuple[str, int]:
        stream = kind.endswith("stream")
        openai_kind = kind.startswith("openai")
        model = OPENAI_MODEL if openai_kind else ANTHROPIC_MODEL
        if self.client == "raw":
            raw = loadgen_raw.openai_chat if openai_kind else loadgen_raw.anthropic_messages
            assert self._raw is not None
            return await raw(self._raw, model, prompt, headers, stream)
        if self.client == "http":
            call = loadgen_http.openai_chat if openai_kind else loadgen_http.anthropic_messages
            self._next_shard = (self._next_shard + 1) % len(self._http_shards)
            http = self._http_shards[self._next_shard]
            return await call(http, self.base_url, model, prompt, headers, stream)
        if openai_kind:
            return await loadgen_sdk.openai_call(self._openai, model, prompt, headers, stream)
        return await loadgen_sdk.anthropic_call(self._anthropic, model, prompt, headers, stream)

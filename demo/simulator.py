"""A simulated LLM provider that speaks the real wire formats.

Tests and the demo point the real ``openai``/``anthropic`` SDKs (or raw HTTP
clients, or the capture proxy) at it::

    with start_simulator() as sim:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test")
        client.chat.completions.create(...)
        sim.requests[-1].headers["x-stainless-retry-count"]

Routes: OpenAI ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``,
``/v1/embeddings``; Azure ``/openai/deployments/{deployment}/...`` (and the v1
``/openai/v1/...`` routes); Anthropic ``/v1/messages``; Gemini
``.../models/{model}:generateContent`` and ``:streamGenerateContent``; Bedrock
``/model/{modelId}/converse`` and ``/converse-stream``.

Request headers it understands (all optional):

- usage: ``x-sim-prompt-tokens`` (the whole prompt, cache included),
  ``x-sim-output-tokens`` (visible output; a text answer is made exactly 4*N
  characters), ``x-sim-reasoning-tokens``, ``x-sim-cached-tokens`` (=
  ``x-sim-cache-read``), ``x-sim-cache-write``, ``x-sim-response-text``;
- failures: ``x-sim-fail: STATUS`` with ``x-sim-fail-attempts: N`` (default 1) fails
  while the SDK's ``x-stainless-retry-count`` (absent = 0) is below N, or, with
  ``x-sim-fail-key: K``, for the first N requests carrying K; ``x-sim-fail-always:
  STATUS``; injected failures carry ``retry-after-ms: 10`` and ``retry-after: 0``;
- streams: ``x-sim-interrupt-after: N`` (cut after N events), ``x-sim-interrupt-mode:
  close|eof``, ``x-sim-token-delay-ms``; latency: ``x-sim-delay-ms``.

Without them usage is computed from the request: count_tokens(text) = max(1,
len(text) // 4); prompt = sum over messages (and system) of count_tokens + 3, plus
count_tokens(JSON of the tools); output = count_tokens(answer text) (a tool
call: of its name or preamble plus JSON arguments); reasoning = max(16, 2 * output) for
OpenAI o*/gpt-5 and Gemini "2.5"/"thinking" models; OpenAI and Gemini prompts of
1024+ tokens get half the prompt (down to a multiple of 128) as cache reads.
``RunningSimulator.requests[i].usage`` holds the usage the client saw, normalized to
WIRE-FORMATS.md's rule (None if the response carried none).

Load runs pass ``record_requests=False`` (``--no-record``): the request log, which keeps
every request and response body, would otherwise grow for as long as the run lasts.

Run standalone: ``python -m demo.simulator --port 9000 [--certfile F --keyfile F]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from demo import sim_anthropic, sim_bedrock, sim_gemini, sim_openai, sim_openai_responses
from demo.sim_common import (
    InterruptLogFilter,
    Outage,
    RecordedRequest,
    SimContext,
    SimError,
    SimulatorConfig,
    SimulatorState,
)
from demo.sim_tls import make_test_certificate

__all__ = [
    "Outage",
    "RecordedRequest",
    "RunningSimulator",
    "SimulatorConfig",
    "create_simulator",
    "make_test_certificate",
    "start_simulator",
]

Handler = Callable[[SimContext], Response]
ErrorBuilder = Callable[[SimContext, int, str], Response]

_ERRORS: dict[str, ErrorBuilder] = {
    "openai": sim_openai.error_response,
    "azure": sim_openai.error_response,
    "anthropic": sim_anthropic.error_response,
    "gemini": sim_gemini.error_response,
    "bedrock": sim_bedrock.error_response,
}
# Injected failures tell SDKs to retry almost at once so retry tests stay fast.
_FAST_RETRY_HEADERS = {"retry-after-ms": "10", "retry-after": "0"}

# Idle keep-alive before the server closes a connection. uvicorn's default (5 s)
# equals httpx's client-side expiry, so a client reusing a connection at 4.99 s
# races the server closing it at 5 s: through a proxy that answers 502 (the
# proxy cannot know the request was not seen). Real APIs sit behind front ends
# that keep idle connections far longer (nginx's default is 75 s).
KEEP_ALIVE_S = 75


def _request_id(provider: str) -> str:
    if provider in ("openai", "azure"):
        return "req_" + secrets.token_hex(16)
    if provider == "anthropic":
        return "req_011C" + secrets.token_hex(10)
    return str(uuid.uuid4())


def _failure_message(status: int) -> str:
    if status == 429:
        return "Rate limit reached for requests (simulated). Please try again shortly."
    if status >= 500:
        return f"The server had an error while processing your request (simulated {status})."
    return f"Simulated failure with status {status}."


def _retry_count(ctx: SimContext) -> int:
    try:
        return int(ctx.header("x-stainless-retry-count") or 0)
    except ValueError:
        return 0


def _injected_failure(ctx: SimContext) -> tuple[int, dict[str, str]] | None:
    """The status to fail with and extra response headers, or None to answer normally."""
    always = ctx.header_int("x-sim-fail-always")
    if always:
        return always, dict(_FAST_RETRY_HEADERS)
    status = ctx.header_int("x-sim-fail")
    if status:
        attempts = ctx.header_int("x-sim-fail-attempts")
        attempts = 1 if attempts is None else attempts
        key = ctx.header("x-sim-fail-key")
        # Clients without x-stainless-retry-count (raw HTTP, other SDKs) can name the
        # logical request with a key and let the simulator count its attempts.
        attempt = ctx.state.next_attempt(key) if key else _retry_count(ctx)
        if attempt < attempts:
            return status, dict(_FAST_RETRY_HEADERS)
    realism = ctx.state.realism_failure(ctx.provider)
    if realism == 429:
        return 429, {"retry-after": "1"}
    if realism is not None:
        return realism, {}
    return None


def _headers_of(request: Request) -> dict[str, str]:
    return {k: ", ".join(request.headers.getlist(k)) for k in dict.fromkeys(request.headers.keys())}


async def _serve(
    request: Request, provider: str, handler: Handler, params: dict[str, str]
) -> Response:
    state: SimulatorState = request.app.state.sim
    raw = await request.body()
    record = RecordedRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers=_headers_of(request),
        body=raw,
        provider=provider,
        received_at=time.time(),
    )
    if request.app.state.record_requests:
        state.log.append(record)
    ctx = SimContext(request, state, record, {}, provider, _request_id(provider), params)
    errors = _ERRORS[provider]
    try:
        delay = state.latency() + (ctx.header_int("x-sim-delay-ms") or 0) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        failure = _injected_failure(ctx)
        if failure is not None:
            status, extra = failure
            response = errors(ctx, status, _failure_message(status))
            response.headers.update(extra)
        else:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise SimError(400, f"Could not parse the JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise SimError(400, "The request body must be a JSON object.")
            ctx.body = body
            response = handler(ctx)
    except SimError as exc:
        response = errors(ctx, exc.status, exc.message)
    record.status = response.status_code
    if not request.app.state.record_requests:
        return response
    return _RecordingBody(response, record)  # type: ignore[return-value]


class _RecordingBody:
    """Sends ``response`` while copying its body bytes into the record."""

    def __init__(self, response: Response, record: RecordedRequest) -> None:
        self.response = response
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.record.response_body += message.get("body", b"")
            await send(message)

        await self.response(scope, receive, recording_send)


def _route(path: str, provider: str, handler: Handler, **fixed: str) -> Route:
    async def endpoint(request: Request) -> Response:
        params = {**request.path_params, **fixed}
        return await _serve(request, provider, handler, params)

    return Route(path, endpoint, methods=["POST"])


async def _fallback(request: Request) -> Response:
    """Gemini paths (any prefix: v1, v1beta, Vertex AI) or a recorded 404."""
    match = sim_gemini.PATH_RE.search(request.url.path)
    if request.method == "POST" and match:
        return await _serve(request, "gemini", sim_gemini.generate_content, match.groupdict())
    state: SimulatorState = request.app.state.sim
    record = RecordedRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers=_headers_of(request),
        body=await request.body(),
        provider="unknown",
        received_at=time.time(),
        status=404,
    )
    if request.app.state.record_requests:
        state.log.append(record)
    body = {"error": {"message": f"No simulated route for {request.method} {request.url.path}"}}
    return JSONResponse(body, status_code=404)


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


_log_filter_installed = False


def create_simulator(
    config: SimulatorConfig | None = None, record_requests: bool = True
) -> Starlette:
    """The simulator as an ASGI app; ``app.state.sim`` holds its state and request log
    (left empty with ``record_requests=False``)."""
    global _log_filter_installed
    if not _log_filter_installed:
        logging.getLogger("uvicorn.error").addFilter(InterruptLogFilter())
        _log_filter_installed = True
    chat = sim_openai.chat_completions
    routes = [
        Route("/health", _health, methods=["GET"]),
        _route("/v1/chat/completions", "openai", chat),
        _route("/v1/completions", "openai", sim_openai.completions),
        _route("/v1/responses", "openai", sim_openai_responses.responses),
        _route("/v1/embeddings", "openai", sim_openai.embeddings),
        _route("/openai/deployments/{deployment}/chat/completions", "azure", chat),
        _route("/openai/deployments/{deployment}/completions", "azure", sim_openai.completions),
        _route("/openai/deployments/{deployment}/embeddings", "azure", sim_openai.embeddings),
        _route("/openai/v1/chat/completions", "azure", chat),
        _route("/openai/v1/embeddings", "azure", sim_openai.embeddings),
        _route("/openai/responses", "azure", sim_openai_responses.responses),
        _route("/openai/v1/responses", "azure", sim_openai_responses.responses),
        _route("/v1/messages", "anthropic", sim_anthropic.messages),
        _route("/model/{model_id:path}/converse", "bedrock", sim_bedrock.converse),
        _route(
            "/model/{model_id:path}/converse-stream", "bedrock", sim_bedrock.converse, stream="1"
        ),
        Route("/{path:path}", _fallback, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = SimulatorState(config or SimulatorConfig())
    app.state.record_requests = record_requests
    return app


class RunningSimulator:
    """A simulator served by uvicorn in a background thread (a context manager)."""

    def __init__(
        self,
        app: Starlette,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.app = app
        self.state: SimulatorState = app.state.sim
        self.host = host
        self.scheme = "https" if certfile else "http"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Binding here, not in uvicorn, gives port=0 its real number before start.
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"llm-simulator-{self.port}",
            daemon=True,
        )

    def start(self, timeout: float = 10.0) -> RunningSimulator:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        return self.state.log.snapshot()

    def clear_requests(self) -> None:
        self.state.log.clear()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    certfile: str | None = None,
    keyfile: str | None = None,
    config: SimulatorConfig | None = None,
    record_requests: bool = True,
) -> RunningSimulator:
    """Serve a new simulator in a background thread; returns once it is listening.

    ``record_requests=False`` keeps no request log (``requests`` stays empty), so memory
    stays flat under sustained load."""
    app = create_simulator(config, record_requests)
    return RunningSimulator(app, host, port, certfile, keyfile).start()


def _parse_outage(text: str) -> Outage:
    provider, start, end = text.split(":")
    return Outage(provider, float(start), float(end))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Simulated LLM provider (OpenAI, Azure, "
        "Anthropic, Gemini, Bedrock wire formats)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument(
        "--no-record", action="store_true", help="keep no request log (long load runs)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's (warning: no access log)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--outage",
        action="append",
        default=[],
        type=_parse_outage,
        metavar="PROVIDER:START_S:END_S",
        help="503s in a window; repeatable",
    )
    parser.add_argument("--rate-limit-probability", type=float, default=0.0)
    parser.add_argument("--rate-limit-burst", type=int, default=3)
    parser.add_argument(
        "--azure-deployment",
        action="append",
        default=[],
        metavar="DEPLOYMENT=MODEL",
        help="repeatable",
    )
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    config = SimulatorConfig(
        seed=args.seed,
        token_delay_s=args.token_delay_ms / 1000,
        base_latency_s=args.latency_ms / 1000,
        latency_jitter_s=args.jitter_ms / 1000,
        outages=args.outage,
        rate_limit_burst_probability=args.rate_limit_probability,
        rate_limit_burst_length=args.rate_limit_burst,
        azure_deployments=dict(item.split("=", 1) for item in args.azure_deployment),
    )
    uvicorn.run(
        create_simulator(config, record_requests=not args.no_record),
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level=args.log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


if __name__ == "__main__":
    main()

"""The capture addon: mitmproxy hooks that turn model calls into spans.

Run by ``tokentrail proxy`` (``mitmdump -s proxy_addon/mitmdump_script.py``). Each hook
does the least it can on the proxy's path — recognize the call, strip our
headers, tap a stream, journal the finished call — and leaves parsing and
export to the exporter process it starts (``proxy_addon/exporter.py``).
Every hook fails open: an exception is logged and counted, and the client's
request and response pass through unchanged.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from mitmproxy import ctx, http

from proxy_addon import coalesce
from proxy_addon.attribution import (
    OUR_PREFIX,
    api_key_fingerprint,
    attribute_request,
    attribution_body,
    strip_our_headers,
)
from proxy_addon.export import CapturedCall
from proxy_addon.exporter import read_stats
from proxy_addon.gateway import gateway_attributes
from proxy_addon.journal import JournalWriter
from proxy_addon.providers import identify
from proxy_addon.providers.base import RequestFacts
from proxy_addon.retries import RetryTracker, request_key
from proxy_addon.streams import StreamCapture, ends_stream, is_streamed
from proxy_addon.views import header_dict, parse_traceparent, request_view

log = logging.getLogger("tokentrail.proxy")
STATE = "tokentrail"  # key in flow.metadata
# mitmproxy's per-connection logger: "client connect", "server connect",
# "Streaming response from ..." at INFO, several per call. Each record is
# formatted and dispatched to every addon as an ``add_log`` event on the
# event loop (~0.1 ms a streamed call); the stats line says what happened.
CONNECTION_LOGGER = "mitmproxy.proxy.server"


@dataclass
class FlowState:
    provider: str
    request: RequestFacts
    retry_key: str
    start_ns: int
    trace_id: int
    span_id: int
    parent_span_id: int | None
    attributes: dict[str, Any]
    capture: StreamCapture | None = None
    end_lines: tuple[bytes, ...] = ()  # the wire format's STREAM_END_LINES
    first_chunk_ns: int | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def fail_open(hook: Callable[..., None]) -> Callable[..., None]:
    """Log and count any exception; never let it reach mitmproxy's flow."""

    @functools.wraps(hook)
    def guarded(self: TokentrailAddon, *args: Any) -> None:
        try:
            if self.chaos:
                raise RuntimeError("tokentrail_chaos: deliberate failure in " + hook.__name__)
            hook(self, *args)
        except Exception:
            self.hook_errors += 1
            log.exception(
                "tokentrail addon: %s failed; the flow passes through unchanged", hook.__name__
            )

    return guarded


class TokentrailAddon:
    def __init__(self) -> None:
        self.retries = RetryTracker()
        self.journal: JournalWriter | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self.folder = Path()
        self.key_teams: dict[str, str] = {}
        self.hook_errors = 0
        self.exporter_restarts = 0
        self.chaos = False
        self._stats_stop = threading.Event()
        self._exporter_command: list[str] = []
        self._exporter_env: dict[str, str] = {}
        # Held while the exporter is started or stopped, so the watchdog never
        # starts one after done() stopped it.
        self._exporter_lock = threading.Lock()

    # -- configuration -----------------------------------------------------
    def load(self, loader: Any) -> None:
        coalesce.install()  # streamed bodies: one event per socket read
        loader.add_option("tokentrail_data_dir", str, ".tokentrail", "Tokentrail data directory")
        loader.add_option("tokentrail_collector_url", str, "http://127.0.0.1:4318", "Collector URL")
        loader.add_option("tokentrail_api_key", str, "", "Ingest key for the collector")
        loader.add_option(
            "tokentrail_content", bool, True, "Capture (redacted) prompts and responses"
        )
        loader.add_option("tokentrail_key_teams", str, "", "JSON file: API-key fingerprint → team")
        loader.add_option("tokentrail_spool_max_mb", int, 512, "Spool size bound in MiB")
        loader.add_option("tokentrail_stats_seconds", int, 60, "Seconds between stats log lines")
        loader.add_option(
            "tokentrail_chaos", bool, False, "Make every hook raise (fail-open tests)"
        )

    def configure(self, updated: set[str]) -> None:
        self.chaos = ctx.options.tokentrail_chaos
        if "termlog_verbosity" in updated:
            # Connection lines only when asked for debug output.
            debug = ctx.options.termlog_verbosity == "debug"
            logging.getLogger(CONNECTION_LOGGER).setLevel(
                logging.NOTSET if debug else logging.WARNING
            )
        if ctx.options.tokentrail_key_teams and "tokentrail_key_teams" in updated:
            self.key_teams = orjson.loads(Path(ctx.options.tokentrail_key_teams).read_bytes())
        if self.journal is None:
            self.folder = (Path(ctx.options.tokentrail_data_dir) / "proxy").resolve()
            self.journal = JournalWriter(self.folder / "journal")
            self._exporter_command, self._exporter_env = self._exporter_command_line()
            self.exporter = subprocess.Popen(self._exporter_command, env=self._exporter_env)
            threading.Thread(target=self._log_stats, name="tokentrail-stats", daemon=True).start()
            threading.Thread(
                target=self._watch_exporter, name="tokentrail-exporter-watch", daemon=True
            ).start()

    def _exporter_command_line(self) -> tuple[list[str], dict[str, str]]:
        api_key = ctx.options.tokentrail_api_key or os.environ.get("TOKENTRAIL_API_KEY", "")
        command = [
            sys.executable,
            "-m",
            "proxy_addon.exporter",
            "--folder",
            str(self.folder),
            "--collector-url",
            ctx.options.tokentrail_collector_url,
            "--spool-max-mb",
            str(ctx.options.tokentrail_spool_max_mb),
            "--parent-pid",
            str(os.getpid()),
        ]
        if not ctx.options.tokentrail_content:
            command.append("--no-content")
        return command, {**os.environ, "TOKENTRAIL_API_KEY": api_key}

    def _watch_exporter(self) -> None:
        """Journaled calls reach the collector only through the exporter: when it
        dies on its own (out of memory, killed), start another, which resumes at
        the journal cursor the last one saved. One that keeps dying right away
        is restarted less and less often (up to once a minute)."""
        started, backoff = time.monotonic(), 1.0
        while not self._stats_stop.wait(1.0):
            with self._exporter_lock:
                if self._stats_stop.is_set() or self.exporter is None:
                    return
                code = self.exporter.poll()
                if code is None:
                    continue
                ran = time.monotonic() - started
                if ran < backoff:  # it died soon after its start: wait a little more
                    continue
                log.error("tokentrail exporter exited (code %s); starting another", code)
                self.exporter = subprocess.Popen(self._exporter_command, env=self._exporter_env)
                self.exporter_restarts += 1
                # Each quick death doubles the wait; a run past a minute resets it.
                backoff = 1.0 if ran > 60 else min(backoff * 2, 60.0)
                started = time.monotonic()

    def running(self) -> None:
        # Everything allocated so far (mitmproxy, parsers, price data) lives
        # for the whole run: keep it out of every full collection, which
        # otherwise shows up as p99 latency on the proxied requests.
        gc.freeze()

    def done(self) -> None:
        with self._exporter_lock:
            self._stats_stop.set()
        if self.journal:
            self.journal.close()
        if self.exporter and self.exporter.poll() is None:
            self.exporter.terminate()  # it drains the journal, then the spool for a moment
            try:
                self.exporter.wait(30)
            except subprocess.TimeoutExpired:
                self.exporter.kill()

    def stats(self) -> dict[str, int]:
        exported = read_stats(self.folder)
        return {
            "journaled": self.journal.appended if self.journal else 0,
            "hook_errors": self.hook_errors,
            "exporter_restarts": self.exporter_restarts,
            **{
                key: exported.get(key, 0)
                for key in (
                    "captured",
                    "failed_to_parse",
                    "journal_bytes_behind",
                    "spooled",
                    "sent",
                    "dropped",
                    "dropped_calls",
                    "spool_bytes",
                )
            },
        }

    def _log_stats(self) -> None:
        while not self._stats_stop.wait(ctx.options.tokentrail_stats_seconds):
            log.warning(
                "tokentrail stats %s", " ".join(f"{k}={v}" for k, v in self.stats().items())
            )

    # -- hooks -------------------------------------------------------------
    @fail_open
    def request(self, flow: http.HTTPFlow) -> None:
        view = request_view(flow.request)
        known = identify(view)
        if known is None:
            return
        provider, module, facts = known
        if any(name.startswith(OUR_PREFIX) for name in view.headers):
            strip_our_headers(flow.request.headers)
        body = attribution_body(view.body)
        fingerprint = api_key_fingerprint(view.headers, view.query)
        attributes = {
            f"tokentrail.{k}": v
            for k, v in attribute_request(view.headers, body, fingerprint, self.key_teams).items()
        }
        if fingerprint:
            attributes["tokentrail.api_key_fingerprint"] = fingerprint
        span_id = random.getrandbits(64) or 1
        joined = parse_traceparent(view.headers.get("traceparent", ""))
        retry_key = request_key(fingerprint, view.host, view.path, view.body)
        sdk_retry = view.headers.get("x-stainless-retry-count", "")
        attempt = self.retries.start(
            retry_key, f"{span_id:016x}", int(sdk_retry) if sdk_retry.isdigit() else None
        )
        attributes["tokentrail.attempt"] = attempt.number
        if attempt.retry_of:
            attributes["tokentrail.retry_of"] = attempt.retry_of
        flow.metadata[STATE] = FlowState(
            provider=provider,
            request=facts,
            retry_key=retry_key,
            start_ns=time.time_ns(),
            trace_id=joined[0] if joined else random.getrandbits(128) or 1,
            span_id=span_id,
            parent_span_id=joined[1] if joined else None,
            attributes=attributes,
            end_lines=getattr(module, "STREAM_END_LINES", ()),
        )

    @fail_open
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(STATE)
        if state is None or flow.response is None:
            return
        if not is_streamed(state.request, flow.response.status_code, flow.response.headers):
            return
        encoding = flow.response.headers.get("content-encoding", "")
        state.capture = StreamCapture(encoding)
        if encoding not in ("", "identity"):
            state.end_lines = ()  # compressed: the lines are not visible in the chunks
        flow.response.stream = functools.partial(self._tap_chunk, flow, state)

    def _tap_chunk(self, flow: http.HTTPFlow, state: FlowState, chunk: bytes) -> bytes:
        """Called by mitmproxy for each streamed chunk: keep it, pass it on
        unchanged — journaling the call first when the chunk ends the answer."""
        if not chunk:  # mitmproxy's end-of-stream call: nothing to keep
            return chunk
        try:
            if state.first_chunk_ns is None:
                state.first_chunk_ns = time.time_ns()
            if self.chaos:
                raise RuntimeError("tokentrail_chaos: deliberate failure in the stream tap")
            if state.capture is not None:
                state.capture.keep(chunk)
                if state.end_lines and not state.done and ends_stream(chunk, state.end_lines):
                    self._finish_response(flow, state)
        except Exception:
            self.hook_errors += 1
            state.capture = None  # stop capturing; the client still gets every byte
            log.exception("tokentrail addon: stream tap failed; the stream passes through")
        return chunk

    @fail_open
    def response(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(STATE)
        if state is None or state.done or flow.response is None:
            return
        self._finish_response(flow, state)

    def _finish_response(self, flow: http.HTTPFlow, state: FlowState) -> None:
        assert flow.response is not None
        response = flow.response
        headers = header_dict(response.headers)
        streamed = state.capture is not None or bool(response.stream)
        body = b"" if streamed else response.get_content(strict=False) or b""
        state.attributes.update(gateway_attributes(headers))
        self._finish(flow, state, response.status_code, headers, body, streamed, "")

    @fail_open
    def error(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(STATE)
        if state is None or state.done:
            return
        message = flow.error.msg if flow.error else "connection failed"
        status = flow.response.status_code if flow.response else 0
        self._finish(flow, state, status, {}, b"", state.capture is not None, message)

    def _finish(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        status: int,
        headers: dict[str, str],
        body: bytes,
        streamed: bool,
        error: str,
    ) -> None:
        """Journal the call: mitmproxy sends the response's end only after
        this hook returns, and the exporter process takes it from there."""
        state.done = True
        self.retries.finish(state.retry_key, failed=status >= 400 or status == 0)
        address = (
            flow.server_conn.address if flow.server_conn and flow.server_conn.address else None
        )
        call = CapturedCall(
            provider=state.provider,
            request=state.request,
            http_status=status,
            response_headers=headers,
            body=body,
            streamed=streamed,
            stream=state.capture,
            error=error,
            start_ns=state.start_ns,
            end_ns=time.time_ns(),
            first_chunk_ns=state.first_chunk_ns,
            trace_id=state.trace_id,
            span_id=state.span_id,
            parent_span_id=state.parent_span_id,
            server_address=flow.request.host,
            server_port=address[1] if address else flow.request.port,
            attributes=state.attributes,
        )
        assert self.journal is not None
        self.journal.append(call)

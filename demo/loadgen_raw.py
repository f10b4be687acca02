"""The load generator's raw client: HTTP/1.1 over TLS on asyncio protocols.

Why: even the httpx light client cost about 2.5 ms of CPU a call at 200
calls/s (httpcore's pool bookkeeping, anyio streams, a coroutine hop per read),
a quarter of the 2-core machine that the proxy under test needs. This client
sends the very bytes the other clients send (demo/loadgen_http.py builds them
and checks the answers the same way), with TLS (through the proxy's
``CONNECT`` tunnel, or direct), on keep-alive connections reused most recently
used first, as a real SDK's pool reuses them. Responses are parsed by
httptools (llhttp, the parser uvicorn uses), SSE events one by one as they
arrive; a call succeeds only with status 200, a complete body and the checks
of ``OpenAIStream``/``AnthropicStream``. No retries: a failure is a failure.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

from demo.loadgen_http import (
    AnthropicStream,
    CallFailed,
    OpenAIStream,
    anthropic_answer,
    anthropic_request,
    openai_answer,
    openai_request,
)

# Idle connections older than this are closed rather than reused: well under the
# simulator's 75 s keep-alive, so a reused connection is never one the server is
# closing at that moment.
IDLE_EXPIRY_S = 20.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._connect_reply: asyncio.Future[bytes] | None = None
        self._head = bytearray()
        self._done: asyncio.Future[int] | None = None
        self._sink: Callable[[bytes], None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._connect_reply is not None:  # the proxy's answer to CONNECT
            self._head += data
            if b"\r\n\r\n" in self._head and not self._connect_reply.done():
                self._connect_reply.set_result(bytes(self._head))
            return
        if self._done is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - a parse error fails this call only
            self._fail(CallFailed(f"bad response: {type(exc).__name__}: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._connect_reply is not None and not self._connect_reply.done():
            self._connect_reply.set_exception(ConnectionError("proxy closed the connection"))
        self._fail(CallFailed("connection closed before the response was complete"))

    # -- httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(body)

    def on_message_complete(self) -> None:
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.close()

    # -- use
    async def tunnel(self, target: str, timeout: float) -> None:
        """``CONNECT`` through the proxy; raises unless it answers 200."""
        self._connect_reply = asyncio.get_running_loop().create_future()
        self.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        reply = await asyncio.wait_for(self._connect_reply, timeout)
        self._connect_reply = None
        status = reply.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise ConnectionError(f"proxy refused CONNECT: {reply[:80]!r}")

    def write(self, data: bytes) -> None:
        # uvloop's transports do not subclass asyncio.WriteTransport; they do write.
        cast(asyncio.WriteTransport, self.transport).write(data)

    async def exchange(self, request: bytes, sink: Callable[[bytes], None], timeout: float) -> int:
        """Send ``request``, feed the body to ``sink``; the status once it is complete."""
        done = self._done = asyncio.get_running_loop().create_future()
        self._sink = sink
        try:
            self.write(request)
            return await asyncio.wait_for(done, timeout)
        finally:
            self._done = self._sink = None

    def _fail(self, exc: Exception) -> None:
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawClient:
    """Keep-alive HTTPS connections to one origin, direct or through an explicit proxy."""

    def __init__(
        self,
        base_url: str,
        proxy_url: str | None,
        verify: ssl.SSLContext,
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> None:
        origin = urlsplit(base_url)
        if origin.scheme != "https" or origin.hostname is None:
            raise ValueError(f"the raw client speaks HTTPS only, not {base_url}")
        self.host = origin.hostname
        self.port = origin.port or 443
        self.authority = origin.netloc
        self.proxy = urlsplit(proxy_url) if proxy_url else None
        self.verify = verify
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []  # most recently used last
        self.opened = 0  # connections (and TLS handshakes) so far

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self.opened += 1
        if self.proxy is None:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.verify, server_hostname=self.host
                ),
                self.connect_timeout_s,
            )
            return conn
        transport, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.proxy.hostname, self.proxy.port),
            self.connect_timeout_s,
        )
        try:
            await conn.tunnel(f"{self.host}:{self.port}", self.connect_timeout_s)
            conn.transport = await asyncio.wait_for(
                loop.start_tls(transport, conn, self.verify, server_hostname=self.host),
                self.connect_timeout_s,
            )
        except BaseException:
            transport.close()
            raise
        return conn

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_EXPIRY_S:
                return conn
            conn.close()
        return await self._open()

    def _release(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], sink: Callable[[bytes], None]
    ) -> int:
        """POST ``body``; the response body goes to ``sink``; returns the status."""
        head = [
            f"POST {path} HTTP/1.1\r\nhost: {self.authority}\r\n"
            f"content-length: {len(body)}\r\naccept: application/json\r\n"
        ]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append("\r\n")
        request = "".join(head).encode() + body
        conn = await self._acquire()
        try:
            status = await conn.exchange(request, sink, self.timeout_s)
        except BaseException:
            conn.close()  # half-read or timed out: never reuse it
            raise
        self._release(conn)
        return status

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _SSE:
    """Splits a body into SSE ``data:`` events as it arrives, hands each one's JSON on."""

    def __init__(self, on_event: Callable[[Any], None]) -> None:
        self.on_event = on_event
        self.rest = b""

    def feed(self, data: bytes) -> None:
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload != b"[DONE]":
                    self.on_event(orjson.loads(payload))


async def _call(
    client: RawClient,
    request: tuple[str, bytes, dict[str, str]],
    reader: OpenAIStream | AnthropicStream | None,
) -> Any:
    """The parsed JSON answer (whole calls) or None (streams, fed to ``reader``)."""
    path, body, headers = request
    if reader is None:
        chunks: list[bytes] = []
        status = await client.post(path, body, headers, chunks.append)
        if status != 200:
            raise CallFailed(f"HTTP {status}")
        return orjson.loads(b"".join(chunks))
    events = _SSE(reader.event)
    status = await client.post(path, body, headers, events.feed)
    if status != 200:
        raise CallFailed(f"HTTP {status}")
    events.feed(b"\n")  # a last event without its blank line still counts
    return None


async def openai_chat(
    client: RawClient, model: str, prompt: str, headers: dict[str, str], stream: bool
) -> tuple[str, int]:
    """(response id, characters received) of one chat completion."""
    request = openai_request(model, prompt, headers, stream)
    if not stream:
        return openai_answer(await _call(client, request, None))
    reader = OpenAIStream()
    await _call(client, request, reader)
    return reader.result()


async def anthropic_messages(
    client: RawClient, model: str, prompt: str, headers: dict[str, str], stream: bool
) -> tuple[str, int]:
    """(message id, characters received) of one Messages call."""
    request = anthropic_request(model, prompt, headers, stream)
    if not stream:
        return anthropic_answer(await _call(client, request, None))
    reader = AnthropicStream()
    await _call(client, request, reader)
    return reader.result()

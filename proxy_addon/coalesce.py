"""One streamed piece per socket read, not per HTTP/1 chunk.

mitmproxy's HTTP/1 body reader turns each ``Transfer-Encoding: chunked``
chunk into its own ``ResponseData`` event. A streamed (SSE) response is
then one pass through every protocol layer, one call of the stream tap and
one TLS record and ``send`` to the client per chunk — and providers send one
chunk per token event. Measured on the bench's mix that per-chunk path was
what made a streamed response cost ~0.6 ms more CPU than a buffered one.

``install`` makes the reader hand on all the body bytes that one read
brought as one event. Nothing waits for more data: what has arrived is
forwarded when the read is processed, exactly as before, so time to first
token is unchanged and a slow stream still reaches the client chunk by
chunk. The client sees the same bytes in fewer, larger chunks (mitmproxy
re-frames chunked bodies anyway).

It replaces ``Http1Client.read_body`` (the upstream side only) with a copy
of mitmproxy 11.0's that joins consecutive ``h11.Data`` events — only when
the installed mitmproxy's reader is the very code it was copied from (its
source hash); otherwise it does nothing and the stock reader runs.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Generator
from typing import Any

import h11
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp

log = logging.getLogger("tokentrail.proxy")
# SHA-256 of the source of mitmproxy 11.0's Http1Connection.read_body, which
# read_body below copies: any other reader is left alone.
STOCK_READER_SHA256 = "303e41dd550c1819f89b335b7abb4f12c035a9d9451c2e53dded1b3b20a9699a"


def read_body(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    """mitmproxy 11's ``Http1Connection.read_body``, with the body bytes of
    one read passed on as one ``ResponseData`` (before anything else is)."""
    assert self.stream_id is not None
    pending: list[bytes] = []
    while True:
        try:
            if isinstance(event, events.DataReceived):
                h11_event = self.body_reader(self.buf)
            elif isinstance(event, events.ConnectionClosed):
                h11_event = self.body_reader.read_eof()
            else:
                raise AssertionError(f"Unexpected event: {event}")
        except h11.ProtocolError as e:
            if pending:  # what arrived intact still reaches the client first
                yield ReceiveHttp(self.ReceiveData(self.stream_id, b"".join(pending)))
            yield commands.CloseConnection(self.conn)
            yield ReceiveHttp(
                self.ReceiveProtocolError(self.stream_id, f"HTTP/1 protocol error: {e}")
            )
            return

        if isinstance(h11_event, h11.Data):
            if h11_event.data:
                pending.append(bytes(h11_event.data))
            continue
        if pending:
            yield ReceiveHttp(self.ReceiveData(self.stream_id, b"".join(pending)))
            pending = []
        if h11_event is None:
            return  # the read is used up: forward now, wait for the next one
        if isinstance(h11_event, h11.EndOfMessage):
            assert self.request
            if h11_event.headers:
                raise NotImplementedError("HTTP trailers are not implemented yet.")
            if self.request.data.method.upper() != b"CONNECT":
                yield ReceiveHttp(self.ReceiveEndOfMessage(self.stream_id))
            is_request = isinstance(self, _http1.Http1Server)
            yield from self.mark_done(request=is_request, response=not is_request)
            return


def install() -> bool:
    """Use ``read_body`` for upstream responses; False (and the stock reader)
    when mitmproxy's reader is not the one this copy was made from."""
    if _http1.Http1Client.read_body is read_body:
        return True
    try:
        source = inspect.getsource(_http1.Http1Connection.read_body)
    except (OSError, TypeError):
        source = ""
    if hashlib.sha256(source.encode()).hexdigest() != STOCK_READER_SHA256:
        log.warning(
            "this mitmproxy's HTTP/1 body reader is not the one tokentrail knows: "
            "streamed responses are forwarded per HTTP chunk"
        )
        return False
    _http1.Http1Client.read_body = read_body  # type: ignore[method-assign]
    return True

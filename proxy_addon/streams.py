"""Deciding to tap a response as a stream, keeping its chunks, decoding them.

A streamed response is passed to the client chunk by chunk as upstream sends
it (mitmproxy's ``flow.response.stream``). On that path the proxy only keeps a
reference to each chunk (``StreamCapture``); decompressing and parsing happen
later in the export worker, so the client's stream never waits for our parser.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from types import ModuleType

import brotli

from proxy_addon.providers.base import CallFacts, RequestFacts, ResponseView

STREAM_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")


def is_streamed(request: RequestFacts, status: int, headers: Mapping[str, str]) -> bool:
    """Stream successful responses that are streams; buffer everything else
    (errors are small, and a whole body is simpler to parse)."""
    if not 200 <= status < 300:
        return False
    content_type = headers.get("content-type", "").lower()
    if any(kind in content_type for kind in STREAM_TYPES):
        return True
    # Gemini's streamGenerateContent without alt=sse streams a JSON array.
    return request.is_stream and "json" in content_type


def ends_stream(chunk: bytes, end_lines: tuple[bytes, ...]) -> bool:
    """Whether one of the format's last lines starts a line in this chunk.
    (Content is JSON in ``data:`` lines, so it cannot start a line itself;
    a line split across chunks is missed, and the call is journaled at the
    stream's end instead.)"""
    for line in end_lines:  # a plain loop: this runs for every chunk of every stream
        if line in chunk and (chunk.startswith(line) or b"\n" + line in chunk):
            return True
    return False


class Decompressor:
    """Incremental gzip/deflate/br decoding; identity passes through."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding == "br":
            self._decoder = brotli.Decompressor()
        elif encoding in ("", "identity"):
            self._decoder = None
        else:
            raise ValueError(f"cannot decode a stream with content-encoding {encoding!r}")

    def feed(self, chunk: bytes) -> bytes:
        if self._decoder is None or not chunk:
            return chunk
        if isinstance(self._decoder, brotli.Decompressor):
            return self._decoder.process(chunk)
        return self._decoder.decompress(chunk)


class StreamCapture:
    """The chunks of one streamed response, up to ``max_bytes``.

    Past the bound the rest still flows to the client but is not kept; the
    call is recorded with what was kept and a note (usage, which comes last,
    is then unknown rather than invented).
    """

    def __init__(self, encoding: str, max_bytes: int = 64 << 20) -> None:
        self.encoding = encoding
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def keep(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_bytes:
            self.truncated = True
            return
        self.chunks.append(chunk)
        self.size += len(chunk)

    def parse(self, module: ModuleType, request: RequestFacts, response: ResponseView) -> CallFacts:
        tap = module.StreamTap(request)
        decompressor = Decompressor(self.encoding)
        for chunk in self.chunks:
            plain = decompressor.feed(chunk)
            if plain:
                tap.feed(plain)
        facts: CallFacts = tap.finish(response)
        if self.truncated:
            facts.body_note = (facts.body_note + "; " if facts.body_note else "") + (
                f"stream longer than {self.max_bytes} bytes: only the start was parsed"
            )
        return facts

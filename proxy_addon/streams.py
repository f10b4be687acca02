"""Deciding to tap a response as a stream, and undoing its content encoding.

A streamed response is passed to the client chunk by chunk as upstream sends
it (mitmproxy's ``flow.response.stream``); the tap sees the same chunks,
decompressed here when the provider compressed the stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import brotli

from proxy_addon.providers.base import RequestFacts

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

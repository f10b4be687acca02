"""The OTLP receive step both transports share: decode → process_spans → WAL.

OTLP/HTTP (``collector/routers/otlp.py``) and OTLP/gRPC
(``collector/grpc_server.py``) differ only in how a request arrives and how the
answer is framed; what a request does to the store is this one function.
"""

from __future__ import annotations

import threading

from collector.runtime import Runtime, wal_kind

_COUNTING = threading.Lock()  # both transports' threads update runtime.received


def accept_export(
    runtime: Runtime,
    body: bytes,
    content_type: str,
    encoding: str | None,
    maybe_stored: bool = False,
) -> tuple[int, str]:
    """Make one export request durable and queue its rows.

    Returns (rejected span count, why) for the OTLP partial-success answer and
    counts it in ``runtime.received`` (/metrics). ``maybe_stored`` marks a
    resend: rows the store already has are dropped at write time. Raises ``UnsupportedMediaType``
    / ``OtlpDecodeError`` for bad input and ``QueueFull`` when the store is
    behind (nothing was accepted then); the caller counts those."""
    assert runtime.decoder is not None
    # Decoding runs in the decode pool (collector/decode_pool.py); the WAL
    # append (I/O) happens here, overlapping the next request's decoding.
    done = runtime.decoder.process(body, content_type, encoding)
    done.batch.maybe_stored = maybe_stored
    runtime.writer.accept(body, wal_kind(content_type, encoding == "gzip"), done.batch)
    with _COUNTING:
        counters = runtime.received
        counters.requests += 1
        counters.spans += done.spans
        counters.rejected_spans += done.rejected
    return done.rejected, "; ".join(done.errors)

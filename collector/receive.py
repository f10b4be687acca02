"""The OTLP receive step both transports share: decode → process_spans → WAL.

OTLP/HTTP (``collector/routers/otlp.py``) and OTLP/gRPC
(``collector/grpc_server.py``) differ only in how a request arrives and how the
answer is framed; what a request does to the store is this one function.
"""

from __future__ import annotations

import threading

from collector.runtime import Runtime, wal_kind
from ingest.otlp import decode_request
from ingest.pipeline import process_spans

# Decoding and normalizing are pure-Python CPU work: requests contending for
# the GIL made throughput drop by a quarter, so one request at a time does it,
# whichever transport brought it. The WAL append (I/O) happens outside.
_DECODE_ONE_AT_A_TIME = threading.Lock()
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
    with _DECODE_ONE_AT_A_TIME:
        decoded = decode_request(
            body, content_type, encoding, max_bytes=runtime.settings.max_request_bytes
        )
        batch = process_spans(decoded["spans"], runtime.pipeline)
    batch.maybe_stored = maybe_stored
    runtime.writer.accept(body, wal_kind(content_type, encoding == "gzip"), batch)
    with _COUNTING:
        counters = runtime.received
        counters.requests += 1
        counters.spans += len(decoded["spans"])
        counters.rejected_spans += decoded["rejected"]
    return decoded["rejected"], "; ".join(decoded["errors"])

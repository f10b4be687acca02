"""bench/ingest.py's in-process stages: raw parse, decode, pipeline, and a cProfile.

Each takes the pre-built request bodies and returns how many spans it handled
and the seconds it took; nothing here starts a process or opens a socket.
The project's ``ingest`` package is imported inside the functions, after
bench/ingest.py has put the project root (not bench/) first on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def rate(spans: int, seconds: float) -> float:
    return spans / seconds if seconds > 0 else float("inf")


def bench_raw_parse(bodies: list[bytes]) -> tuple[int, float]:
    """FromString + touch every span id and every attribute key/value."""
    from_string = ExportTraceServiceRequest.FromString
    count = 0
    started = time.perf_counter()
    for body in bodies:
        req = from_string(body)
        for rs in req.resource_spans:
            for kv in rs.resource.attributes:
                kv.key, kv.value.WhichOneof("value")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id, sp.span_id, sp.parent_span_id  # noqa: B018
                    for kv in sp.attributes:
                        v = kv.value
                        w = v.WhichOneof("value")
                        kv.key, getattr(v, w)  # noqa: B018
                    count += 1
    return count, time.perf_counter() - started


def bench_decode(bodies: list[bytes], reference: bool = False) -> tuple[int, float]:
    """``decode_protobuf`` (the C decoder when built), or with ``reference``
    the upb decoder it falls back to."""
    from ingest.otlp import decode_protobuf, decode_protobuf_upb

    decode = decode_protobuf_upb if reference else decode_protobuf
    count = 0
    started = time.perf_counter()
    for body in bodies:
        count += len(decode(body)["spans"])
    return count, time.perf_counter() - started


def native_decoder_built() -> bool:
    from ingest import otlp

    return otlp._native is not None


# Names process_spans looks up in its module at call time; wrapping them there
# gives a per-stage split without duplicating the pipeline's logic.
STAGES = (
    ("normalize", "normalize_spans"),
    ("price", "price_rows"),
    ("redact", "redact_rows"),
    ("arrow spans (+redact attrs)", "spans_table"),
    ("arrow llm/tool rows", "rows_table"),
)


@contextlib.contextmanager
def stage_timers(module: Any) -> Iterator[dict[str, float]]:
    totals: dict[str, float] = {}
    saved: dict[str, Any] = {}

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t

        return wrapper

    for label, name in STAGES:
        fn = getattr(module, name, None)
        if callable(fn):
            saved[name] = fn
            setattr(module, name, timed(label, fn))
    try:
        yield totals
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def pipeline_config() -> Any:
    """As collector/runtime.py builds it, with default prices and redaction."""
    from ingest.pipeline import PipelineConfig
    from ingest.pricing import PriceBook
    from ingest.redact import RedactionRules

    return PipelineConfig(prices=PriceBook.load(None), redaction=RedactionRules.default())


def bench_pipeline(bodies: list[bytes]) -> tuple[int, float, dict[str, float], int]:
    """process_spans per body on already-decoded spans (decode untimed)."""
    import ingest.pipeline as pipeline
    from ingest.otlp import decode_protobuf

    config = pipeline_config()
    # Warm the per-PriceBook lookup cache and imports outside the timing.
    pipeline.process_spans(decode_protobuf(bodies[0])["spans"][:50], config)
    count = rows = 0
    elapsed = 0.0
    with stage_timers(pipeline) as stages:
        for body in bodies:
            spans = decode_protobuf(body)["spans"]
            started = time.perf_counter()
            batch = pipeline.process_spans(spans, config)
            elapsed += time.perf_counter() - started
            count += len(spans)
            rows += batch.rows
    return count, elapsed, dict(stages), rows


def profile_in_process(bodies: list[bytes], top: int = 30) -> str:
    """cProfile of decode + process_spans, top functions by own time."""
    from ingest.otlp import decode_protobuf
    from ingest.pipeline import process_spans

    config = pipeline_config()
    profiler = cProfile.Profile()
    profiler.enable()
    for body in bodies:
        process_spans(decode_protobuf(body)["spans"], config)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()

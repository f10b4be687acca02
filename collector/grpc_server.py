"""OTLP/gRPC: ``TraceService/Export`` on port 4317 beside OTLP/HTTP on 4318.

Same key check (metadata ``authorization: Bearer <key>``, ingest role), same
pipeline (``collector.receive.accept_export``: decode → normalize → price →
redact → WAL), same durability: OK means the request is in the write-ahead
log. The request arrives as raw bytes (no deserializer), which the collector's
own protobuf decoder reads and the WAL logs as they came; gRPC has already
undone any gzip compression.

Status codes: UNAUTHENTICATED (no, unknown or revoked key), PERMISSION_DENIED
(a key of another role), INVALID_ARGUMENT (not an ExportTraceServiceRequest),
RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` (the store is behind; the
OTel exporters wait that long and resend).
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from collector.auth import Principal
from collector.receive import accept_export
from collector.runtime import Runtime
from ingest.otlp import OtlpDecodeError, encode_response
from ingest.writer import QueueFull

log = logging.getLogger("tokentrail.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
ALLOWED_ROLES = frozenset({"ingest", "admin"})
RETRY_AFTER_SECONDS = 5  # as OTLP/HTTP's Retry-After
PROTOBUF = "application/x-protobuf"
# Requests queue in gRPC's core beyond these; decoding is as wide as the decode
# pool (accept_export), the others wait on the WAL's fsync or on the key check.
WORKERS = 4
GRACE_SECONDS = 5.0


def _bearer(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def retry_trailers(message: str, seconds: int) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata telling exporters when to retry: the standard
    ``grpc-status-details-bin`` (a google.rpc.Status whose details hold a
    RetryInfo; read by the Go and Java exporters) and the bare RetryInfo under
    ``google.rpc.retryinfo-bin`` (read by the Python exporter)."""
    retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds))
    detail = AnyProto()
    detail.Pack(retry)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )


class TraceService:
    """The one RPC, over the collector's runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _authorize(self, context: grpc.ServicerContext) -> Principal:
        token = _bearer(context)
        if not token:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing API key: send metadata 'authorization: Bearer <key>'",
            )
        principal = self.runtime.keys.authenticate(token)
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        if principal.role not in ALLOWED_ROLES:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {principal.role} key may not export traces; it needs an ingest key",
            )
        return principal

    def export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._authorize(context)
        runtime = self.runtime
        try:
            rejected, errors = accept_export(runtime, request, PROTOBUF, None)
        except OtlpDecodeError as exc:
            runtime.received.bad_requests += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except QueueFull as exc:
            runtime.received.refused_busy += 1
            message = f"the store is behind ({exc}); retry later"
            context.set_trailing_metadata(retry_trailers(message, RETRY_AFTER_SECONDS))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        return encode_response(rejected, errors, as_json=False)

    def handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: the request stays bytes, the response is bytes.
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self.export)}
        )


class GrpcReceiver:
    """The gRPC server the collector process starts beside uvicorn."""

    def __init__(self, runtime: Runtime, host: str, port: int) -> None:
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="tokentrail-grpc"),
            handlers=[TraceService(runtime).handler()],
            options=[
                ("grpc.max_receive_message_length", runtime.settings.max_request_bytes),
                # A taken port must fail to bind, not be shared with another process.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = 0

    def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        try:
            self.port = self.server.add_insecure_port(self.address)
        except RuntimeError as exc:  # grpcio raises on a failed bind
            raise OSError(f"cannot listen for OTLP/gRPC on {self.address}: {exc}") from exc
        if not self.port:
            raise OSError(f"cannot listen for OTLP/gRPC on {self.address}")
        self.server.start()

    def stop(self) -> None:
        """Refuse new calls, let running ones finish (they are WAL-bound)."""
        self.server.stop(GRACE_SECONDS).wait(GRACE_SECONDS + 1)


def start_grpc_receiver(runtime: Runtime) -> GrpcReceiver | None:
    """Start OTLP/gRPC on ``settings.grpc_port`` (0 disables it).

    A port given explicitly (flag or TOKENTRAIL_GRPC_PORT) that cannot be
    bound stops the collector; the default port being taken (another collector
    or an OTel Collector agent on 4317) only costs the gRPC receiver, with a
    warning, since OTLP/HTTP still works."""
    settings = runtime.settings
    if not settings.grpc_port:
        return None
    receiver = GrpcReceiver(runtime, settings.host, settings.grpc_port)
    try:
        receiver.start()
    except OSError as exc:
        if "grpc_port" in settings.model_fields_set:
            raise
        log.warning("%s; OTLP/gRPC is off (set --grpc-port to use another port)", exc)
        return None
    log.info("OTLP/gRPC on %s", receiver.address)
    return receiver

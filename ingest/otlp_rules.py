"""What both OTLP decoders (``ingest.otlp`` for protobuf, ``ingest.otlp_json``
for JSON) share: their errors and the rules that reject a span.

* A span whose trace id is not 16 bytes (32 hex chars) or is all zeroes, whose
  span id is not 8 bytes or is all zeroes, or whose parent span id is neither
  empty nor 8 bytes, is rejected: it is counted in ``rejected`` and its reason
  is added once to ``errors``. The other spans are kept. (The OTLP proto
  declares all-zero ids invalid; storing them would merge unrelated spans.)
* Anything else that is structurally wrong fails the whole request with
  ``OtlpDecodeError`` (HTTP 400); ``UnsupportedMediaType`` means HTTP 415.
"""

from __future__ import annotations


class OtlpDecodeError(ValueError):
    """Body is not a valid OTLP ExportTraceServiceRequest.

    The message says what was wrong (user-facing, one sentence); HTTP 400.
    """


class UnsupportedMediaType(OtlpDecodeError):
    """Content-Type (or Content-Encoding) the receiver does not accept; answer HTTP 415."""


# Enum index -> name; unknown values (OTLP enums are open) map to the default.
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUSES = ("unset", "ok", "error")

ZERO_TRACE = bytes(16)
ZERO_SPAN = bytes(8)
U64 = 2**64 - 1
I64 = 2**63

BAD_TRACE = "span rejected: trace id must be 16 bytes (32 hex characters) and not all zeroes"
BAD_SPAN = "span rejected: span id must be 8 bytes (16 hex characters) and not all zeroes"
BAD_PARENT = "span rejected: parent span id must be empty or 8 bytes (16 hex characters)"

"""JSON helpers every wire-format module needs: tolerant parsing, bounded text.

orjson, because the proxy parses every body it records; content fields are
capped so one huge prompt cannot bloat a span.
"""

from __future__ import annotations

from typing import Any

import orjson

CONTENT_LIMIT = 64 * 1024  # bytes of UTF-8 kept per content field
MARKER = "…[truncated to 64 KiB]"


def truncate(text: str) -> str:
    # Encoding with "replace" also scrubs lone surrogates that JSON escapes can produce.
    raw = text.encode("utf-8", "replace")
    if len(raw) <= CONTENT_LIMIT:
        return raw.decode("utf-8")
    keep = CONTENT_LIMIT - len(MARKER.encode("utf-8"))
    return raw[:keep].decode("utf-8", "ignore") + MARKER


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, capped at CONTENT_LIMIT."""
    try:
        return truncate(orjson.dumps(value, default=str).decode("utf-8"))
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits
        import json

        return truncate(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def loads(body: bytes | str) -> Any:
    """Parsed JSON, or None when the body is not JSON."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        return None


def as_int(value: Any) -> int | None:
    # bool is an int subclass; a JSON true is not a token count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""

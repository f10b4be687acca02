"""The proxy's views of a mitmproxy request: plain data for the parsers.

Built once per call in the ``request`` hook, on the client's path, so each
reads mitmproxy's raw fields directly rather than through its conveniences.
"""

from __future__ import annotations

from mitmproxy import http

from proxy_addon.providers.base import RequestView


def parse_traceparent(value: str) -> tuple[int, int] | None:
    """(trace id, parent span id) from a W3C traceparent header."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, parent = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return (trace_id, parent) if trace_id and parent else None


def header_dict(headers: http.Headers) -> dict[str, str]:
    """Lowercase names → values in one pass over the raw fields (mitmproxy's
    ``Headers.items()`` rescans every field per name)."""
    found: dict[str, str] = {}
    for name, value in headers.fields:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}, {text}" if key in found else text
    return found


def request_view(request: http.Request) -> RequestView:
    headers = header_dict(request.headers)
    return RequestView(
        method=request.method,
        scheme=request.scheme,
        # The destination, also in reverse mode (where the Host header is ours).
        host=request.host.lower(),
        port=request.port,
        path=request.path.split("?", 1)[0],
        # Parsing the query costs a urlparse; most model calls have none.
        query=dict(request.query.items()) if "?" in request.path else {},
        headers=headers,
        body=request.get_content(strict=False) or b"",
    )

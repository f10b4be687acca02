"""Who made a call, read from the request as the proxy sees it.

In order: ``x-tokentrail-*`` headers (removed before forwarding), the
ecosystem's headers (Helicone, Portkey, LiteLLM), the OpenAI body's ``user``,
and the configured map from provider API-key fingerprint to team. The
provider key itself is never kept: only a short SHA-256 fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

OUR_HEADERS = ("team", "project", "user", "route", "app")
OUR_PREFIX = "x-tokentrail-"

# The body fields attribution reads, as JSON keys ("role": "user" is a value,
# and a quote inside a string is escaped, so neither matches).
_BODY_KEYS = re.compile(rb'"(?:user|metadata)"\s*:')

# Headers that carry a provider credential, by wire format convention.
KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def api_key_fingerprint(headers: dict[str, str], query: dict[str, str]) -> str:
    """First 12 hex chars of SHA-256 of the credential; "" when there is none."""
    for name in KEY_HEADERS:
        value = headers.get(name, "")
        if value:
            scheme, _, rest = value.partition(" ")
            secret = rest if scheme.lower() in ("bearer", "basic") and rest else value
            return hashlib.sha256(secret.strip().encode()).hexdigest()[:12]
    if query.get("key"):
        return hashlib.sha256(query["key"].encode()).hexdigest()[:12]
    return ""


def attribution_body(raw: bytes) -> dict[str, Any]:
    """The request body as a dict when it may carry ``user`` or ``metadata``,
    else {}: the wire-format parser has decoded it once already, and a large
    prompt is not decoded a second time for fields it does not have."""
    if raw[:1] != b"{" or not _BODY_KEYS.search(raw):
        return {}
    return _json_object(raw)


def _json_object(text: str | bytes) -> dict[str, Any]:
    if not text:  # the usual case: no header; don't pay for a decode error
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def attribute_request(
    headers: dict[str, str], body: dict[str, Any], fingerprint: str, key_teams: dict[str, str]
) -> dict[str, str]:
    """``tokentrail.*`` span attributes: team, project, user, route, app, tags."""
    found: dict[str, str] = {}

    def offer(field: str, value: Any) -> None:
        if value not in (None, "") and field not in found:
            found[field] = str(value)

    for field in OUR_HEADERS:
        offer(field, headers.get(OUR_PREFIX + field))

    # Helicone: Helicone-User-Id, Helicone-Property-<Name> (any name becomes a tag).
    offer("user", headers.get("helicone-user-id"))
    for name, value in headers.items():
        if name.startswith("helicone-property-"):
            prop = name.removeprefix("helicone-property-")
            if prop in OUR_HEADERS:
                offer(prop, value)
            found[f"tag.{prop}"] = value

    # Portkey: x-portkey-metadata JSON, `_user` is the user.
    portkey = _json_object(headers.get("x-portkey-metadata", ""))
    offer("user", portkey.get("_user"))
    for key in ("team", "project", "route", "app"):
        offer(key, portkey.get(key))

    # LiteLLM: end-user headers, spend-logs metadata JSON, tags.
    offer("user", headers.get("x-litellm-end-user-id") or headers.get("x-litellm-customer-id"))
    litellm = _json_object(headers.get("x-litellm-spend-logs-metadata", ""))
    body_meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    for source in (litellm, body_meta):
        for key in ("team", "project", "route", "app"):
            offer(key, source.get(key))
        offer("user", source.get("user") or source.get("user_id"))
    tags = headers.get("x-litellm-tags") or ",".join(
        str(t) for t in (body_meta.get("tags") or []) if isinstance(t, str)
    )
    if tags:
        found["tags"] = tags

    offer("user", body.get("user"))  # OpenAI's end-user field
    offer("team", key_teams.get(fingerprint))
    return found


def strip_our_headers(headers: Any) -> None:
    """Remove x-tokentrail-* so the provider never sees them (mitmproxy Headers).

    One rebuild of the raw fields: deleting names one by one rescans them each time."""
    prefix = OUR_PREFIX.encode()
    headers.fields = tuple(
        (name, value) for name, value in headers.fields if not name.lower().startswith(prefix)
    )

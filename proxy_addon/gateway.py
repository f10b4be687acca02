"""What gateways in front of the provider say in their response headers.

LiteLLM, Portkey, Helicone and Cloudflare AI Gateway report cache hits,
retries and fallbacks they did themselves; the proxy records them so cache
and failover metrics cover calls the client never saw fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TARGET_INDEX = re.compile(r"\[(\d+)\]")


def gateway_cache(headers: Mapping[str, str]) -> str:
    """ "hit", "miss" or "" (no gateway cache in play)."""
    if headers.get("x-litellm-cache-key"):
        return "hit"  # LiteLLM sends the key only on a hit
    for name in ("x-portkey-cache-status", "helicone-cache", "cf-aig-cache-status"):
        value = headers.get(name, "").strip().upper()
        if value in ("HIT", "SEMANTIC HIT"):
            return "hit"
        if value in ("MISS", "REFRESH", "EXPIRED"):
            return "miss"
    return ""


def gateway_attributes(headers: Mapping[str, str]) -> dict[str, str | int]:
    found: dict[str, str | int] = {}
    cache = gateway_cache(headers)
    if cache:
        found["tokentrail.gateway_cache"] = cache
    retries = headers.get("x-litellm-attempted-retries") or headers.get(
        "x-portkey-retry-attempt-count"
    )
    if retries and retries.strip().isdigit():
        found["tokentrail.gateway_retries"] = int(retries)
    fallbacks = headers.get("x-litellm-attempted-fallbacks", "").strip()
    if fallbacks.isdigit():
        found["tokentrail.gateway_fallbacks"] = int(fallbacks)
    option = _TARGET_INDEX.search(headers.get("x-portkey-last-used-option-index", ""))
    if option:
        # config.targets[0] is the primary; any later target is a fallback.
        found["tokentrail.gateway_fallbacks"] = int(option[1])
    for header, attribute in (
        ("x-litellm-model-group", "tokentrail.gateway_model_group"),
        ("x-litellm-response-cost", "tokentrail.gateway_cost_usd"),
        ("x-litellm-call-id", "tokentrail.gateway_call_id"),
        ("x-portkey-trace-id", "tokentrail.gateway_trace_id"),
    ):
        if headers.get(header):
            found[attribute] = headers[header]
    return found

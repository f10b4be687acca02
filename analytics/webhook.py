"""Alert delivery: one JSON POST per alert to the configured webhook.

The body has a ``text`` field (what Slack and Mattermost incoming webhooks
show) and the alert's fields under ``alert`` for anything that parses it.
"""

from __future__ import annotations

from typing import Any

import httpx


def post_alert(url: str, text: str, alert: dict[str, Any], timeout_s: float = 5.0) -> str:
    """POST the alert; return "" when the receiver took it, else what went wrong."""
    try:
        response = httpx.post(
            url,
            json={"text": text, "source": "tokentrail", "alert": alert},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if response.status_code >= 300:
        return f"the webhook answered {response.status_code}: {response.text[:200]}"
    return ""

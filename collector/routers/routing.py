"""Routing layers: the recommended weight of each route's candidate models.

``format=native`` is our JSON; ``litellm`` a LiteLLM ``model_list`` fragment
(``litellm_params.weight``, for ``routing_strategy: simple-shuffle``);
``portkey`` a Portkey config (``strategy.mode: loadbalance`` with weighted
``targets``). The exports list only models with a weight above zero: LiteLLM
divides by the weights of the deployments it still considers healthy, so a
zero-weight entry could leave it dividing by zero. Every answer carries an
ETag of the versions it shows; ``If-None-Match`` with it gets 304.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["routing"])

FORMATS = ("native", "litellm", "portkey")
# Our provider ids (genai-prices') → LiteLLM's model prefixes and Portkey's provider slugs.
LITELLM_PREFIX = {
    "google": "gemini",
    "aws": "bedrock",
    "together": "together_ai",
    "x-ai": "xai",
    "fireworks": "fireworks_ai",
}
PORTKEY_PROVIDER = {
    "aws": "bedrock",
    "azure": "azure-openai",
    "mistral": "mistral-ai",
    "together": "together-ai",
    "fireworks": "fireworks-ai",
    "perplexity": "perplexity-ai",
}

LATEST_SQL = """
SELECT * FROM routing_weights
WHERE (route, version) IN (
    SELECT route, max(version) FROM routing_weights
    WHERE ({route:String} = '' OR route = {route:String}) GROUP BY route)
ORDER BY route, weight DESC, provider, model
"""
HISTORY_SQL = """
SELECT * FROM routing_weights
WHERE route = {route:String} AND version < {below:UInt64}
  AND version + {count:UInt64} >= {below:UInt64}
ORDER BY version DESC, weight DESC, provider, model
"""


def _versions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of routing_weights → one entry per (route, version)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        entry = found.setdefault(
            (row["route"], row["version"]),
            {
                "route": row["route"],
                "version": row["version"],
                "computed_at": row["computed_at"],
                "objective": row["objective"],
                "window_minutes": row["window_minutes"],
                "weights": [],
            },
        )
        entry["weights"].append(
            {
                k: row[k]
                for k in (
                    "provider",
                    "model",
                    "weight",
                    "reason",
                    "calls",
                    "error_rate",
                    "cost_per_call",
                    "p50_ms",
                    "p95_ms",
                    "ttft_p50_ms",
                    "ttft_p95_ms",
                )
            }
        )
    return list(found.values())


def litellm_model(provider: str, model: str) -> str:
    return f"{LITELLM_PREFIX.get(provider, provider)}/{model}"


def litellm_fragment(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": entry["route"],
                "litellm_params": {
                    "model": litellm_model(w["provider"], w["model"]),
                    "weight": w["weight"],
                },
            }
            for entry in routes
            for w in entry["weights"]
            if w["weight"] > 0
        ]
    }


def portkey_config(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": {"mode": "loadbalance"},
        "targets": [
            {
                "provider": PORTKEY_PROVIDER.get(w["provider"], w["provider"]),
                "override_params": {"model": w["model"]},
                "weight": w["weight"],
            }
            for w in entry["weights"]
            if w["weight"] > 0
        ],
    }


def etag(fmt: str, routes: list[dict[str, Any]]) -> str:
    shown = ",".join(f"{e['route']}={e['version']}" for e in routes)
    return '"' + hashlib.sha256(f"{fmt}|{shown}".encode()).hexdigest()[:32] + '"'


def _matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    offered = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in offered or tag in offered


@router.get("/routing/weights", summary="Recommended weights per route, with reasons")
def weights(
    request: Request,
    _caller: Caller("router"),
    route: str = Query("", description="the route; omit for every route (native, litellm)"),
    fmt: str = Query("native", alias="format", description="native, litellm or portkey"),
    history: int = Query(0, ge=0, le=100, description="native: also this many earlier versions"),
) -> Response:
    runtime: Runtime = request.app.state.runtime
    if fmt not in FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "portkey" and not route:
        raise HTTPException(400, "format=portkey needs a route: a Portkey config is one route's")
    rows = json_rows(runtime.store.query_arrow(LATEST_SQL, {"route": route}))
    routes = _versions(rows)
    if route and not routes:
        raise HTTPException(
            404,
            f"no weights for route {route!r} yet: the routing job has not seen calls with that "
            "route (the tokentrail.route attribute or x-tokentrail-route header) nor a "
            "declaration in the routes file",
        )
    tag = etag(fmt, routes)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    if fmt == "litellm":
        body: dict[str, Any] = litellm_fragment(routes)
    elif fmt == "portkey":
        body = portkey_config(routes[0])
    elif route:
        body = routes[0]
        if history:
            older = runtime.store.query_arrow(
                HISTORY_SQL, {"route": route, "below": body["version"], "count": history}
            )
            body["history"] = _versions(json_rows(older))
    else:
        body = {"routes": routes}
    return JSONResponse(body, headers=headers)

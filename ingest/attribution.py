"""Who a call belongs to: team, project, user, app and route.

Span attributes win over resource attributes, so one service can serve many
teams; ``service.name`` names the app. The proxy adds its own sources
(headers, API-key mapping) before it exports its span, so the collector only
reads attributes.
"""

from __future__ import annotations

from typing import TypedDict

from ingest.records import AttrValue


class Attribution(TypedDict):
    team: str
    project: str
    user_id: str
    app: str
    route: str


_KEYS: dict[str, tuple[str, ...]] = {
    "team": ("tokentrail.team",),
    "project": ("tokentrail.project",),
    "user_id": ("tokentrail.user", "enduser.id", "user.id"),
    "app": ("tokentrail.app", "service.name"),
    "route": ("tokentrail.route",),
}


def _from(source: dict[str, AttrValue]) -> dict[str, str]:
    found: dict[str, str] = {}
    for field, keys in _KEYS.items():
        for key in keys:
            candidate = source.get(key)
            if candidate not in (None, ""):
                found[field] = str(candidate)
                break
    return found


_EMPTY = dict.fromkeys(_KEYS, "")


def attribute_call(
    attributes: dict[str, AttrValue],
    resource: dict[str, AttrValue],
    resource_cache: dict[int, dict[str, str]] | None = None,
) -> Attribution:
    """Span attributes win over resource attributes, field by field.

    ``resource_cache`` (keyed by id, valid while the resources live) lets a
    batch read each shared resource once instead of once per span."""
    if resource_cache is None:
        from_resource = _from(resource)
    else:
        cached = resource_cache.get(id(resource))
        if cached is None:
            cached = resource_cache[id(resource)] = _from(resource)
        from_resource = cached
    return Attribution(**(_EMPTY | from_resource | _from(attributes)))  # type: ignore[typeddict-item]

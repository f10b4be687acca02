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


def attribute_call(attributes: dict[str, AttrValue], resource: dict[str, AttrValue]) -> Attribution:
    found: dict[str, str] = {}
    for field, keys in _KEYS.items():
        value = ""
        for source in (attributes, resource):
            for key in keys:
                candidate = source.get(key)
                if candidate not in (None, ""):
                    value = str(candidate)
                    break
            if value:
                break
        found[field] = value
    return Attribution(**found)  # type: ignore[typeddict-item]

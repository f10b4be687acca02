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


# (column, attribute) from the lowest precedence to the highest: a later hit
# overwrites an earlier one, so each column ends with its first key present.
_LOOKUPS = tuple((column, key) for column, keys in _KEYS.items() for key in reversed(keys))


def _overlay(found: dict[str, str], source: dict[str, AttrValue]) -> dict[str, str]:
    """Write into ``found`` the columns ``source`` states (runs once per call)."""
    get = source.get
    for column, key in _LOOKUPS:
        value = get(key)
        if value is not None and value != "":
            found[column] = value if value.__class__ is str else str(value)
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
        from_resource = _overlay(dict(_EMPTY), resource)
    else:
        from_resource = resource_cache.get(id(resource)) or resource_cache.setdefault(
            id(resource), _overlay(dict(_EMPTY), resource)
        )
    return _overlay(dict(from_resource), attributes)  # type: ignore[return-value]

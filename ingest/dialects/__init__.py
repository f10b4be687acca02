"""One module per telemetry dialect, each a mapping from span attributes to
llm_calls / tool_calls facts. ``DIALECTS`` is tried in order; the first that
recognizes a span wins, so the most specific dialect comes first: OpenInference
spans say so (``openinference.span.kind``), OpenLLMetry spans carry GenAI names
plus their own markers, and plain GenAI semantic conventions come last.

Every dialect module has ``model_call_facts(span)``, ``executed_tool_facts(span)``,
``requested_tool_calls(output_content)``, ``CONTENT_ATTRIBUTE_KEYS`` (exact keys)
and ``CONTENT_ATTRIBUTE_PREFIXES`` (flattened keys: prefix → regex for the rest).
"""

from __future__ import annotations

import re

from ingest.dialects import genai, openinference, openllmetry
from ingest.records import AttrValue

DIALECTS = (openinference, openllmetry, genai)

CONTENT_ATTRIBUTE_KEYS: frozenset[str] = frozenset().union(
    *(d.CONTENT_ATTRIBUTE_KEYS for d in DIALECTS)
)
_PREFIXES = {
    prefix: rest for d in DIALECTS for prefix, rest in d.CONTENT_ATTRIBUTE_PREFIXES.items()
}
_PREFIX_TUPLE = tuple(_PREFIXES)
# One regex (RE2-compatible, for Arrow too) matching every flattened content key.
CONTENT_KEY_PATTERN = "^(?:" + "|".join(re.escape(p) + rest for p, rest in _PREFIXES.items()) + ")"
_CONTENT_KEY = re.compile(CONTENT_KEY_PATTERN)


def _content_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        key
        for key in names
        if key in CONTENT_ATTRIBUTE_KEYS
        or (key.startswith(_PREFIX_TUPLE) and _CONTENT_KEY.match(key) is not None)
    )


# Spans from one instrumentation repeat the same attribute names, so the answer
# is kept per tuple of names (bounded: cleared when full).
_SEEN: dict[tuple[str, ...], tuple[str, ...]] = {}
_SEEN_LIMIT = 4096


def content_keys_in(attributes: dict[str, AttrValue]) -> tuple[str, ...]:
    """The keys of ``attributes`` whose values are content (to redact, and to
    leave out of llm_calls.attributes). Runs for every span."""
    names = tuple(attributes)
    found = _SEEN.get(names)
    if found is None:
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        found = _SEEN[names] = _content_keys(names)
    return found

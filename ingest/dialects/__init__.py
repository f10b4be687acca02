"""One module per telemetry dialect, each a mapping from span attributes to
llm_calls / tool_calls facts. ``DIALECTS`` is tried in order; the first that
recognizes a span wins."""

from ingest.dialects import genai

DIALECTS = (genai,)

CONTENT_ATTRIBUTE_KEYS = frozenset().union(*(d.CONTENT_ATTRIBUTE_KEYS for d in DIALECTS))

"""The demo's cast: four teams, their apps and routes, and how each app picks
its models (a weighted primary and an application-level fallback)."""

from __future__ import annotations

from dataclasses import dataclass

from demo.calls import Tool

Model = tuple[str, str]  # (provider, model)

HAIKU = "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-4-5-20250929"


@dataclass(frozen=True)
class App:
    team: str
    project: str
    name: str
    route: str
    kind: str  # which scenario in demo.traffic handles its requests
    weight: float  # share of the traffic
    primaries: tuple[tuple[str, str, float], ...]  # (provider, model, share)
    fallback: Model
    users: int = 5


# fmt: off
APPS = (
    App("support", "helpdesk", "support-bot", "chat", "chat", 3.0,
        (("openai", "gpt-4o-mini", 0.7), ("anthropic", HAIKU, 0.3)),
        ("google", "gemini-2.0-flash"), users=12),
    App("support", "tickets", "ticket-summarizer", "summarize", "summarize", 1.2,
        (("openai", "gpt-4o", 1.0),), ("anthropic", SONNET)),
    App("payments", "refunds", "refund-agent", "agent", "agent", 1.8,
        (("openai", "gpt-4o", 0.6), ("anthropic", SONNET, 0.4)),
        ("openai", "gpt-4o-mini"), users=8),
    App("payments", "fraud", "fraud-screener", "classify", "classify", 1.5,
        (("anthropic", HAIKU, 0.8), ("openai", "gpt-4o-mini", 0.2)), ("openai", "gpt-4o-mini")),
    App("search", "ranking", "search-ranker", "rerank", "rerank", 1.8,
        (("google", "gemini-2.0-flash", 0.6), ("openai", "gpt-4o-mini", 0.4)),
        ("anthropic", HAIKU), users=20),
    App("search", "ranking", "search-ranker", "embed", "embed", 0.8,
        (("openai", "text-embedding-3-small", 1.0),), ("openai", "text-embedding-3-large")),
    App("growth", "campaigns", "email-writer", "draft", "draft", 1.2,
        (("anthropic", SONNET, 0.75), ("openai", "gpt-4o", 0.25)), ("google", "gemini-2.0-flash")),
)
# fmt: on

REFUND_TOOLS = [
    Tool(
        "lookup_order",
        "Find an order by its number",
        {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    ),
]

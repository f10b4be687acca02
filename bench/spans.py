"""The spans bench/ingest.py sends: one OpenAI chat call, as each dialect records it.

``draw_call`` draws the call (model, team, tokens, ...) from a seeded RNG;
``DIALECTS[name](call, content)`` turns it into exactly 20 span attributes
named the way that dialect's instrumentations name them:

- ``genai``: OpenTelemetry GenAI semantic conventions 1.37
  (opentelemetry-instrumentation-openai-v2);
- ``openinference``: openinference-instrumentation-openai (Arize Phoenix);
- ``openllmetry``: Traceloop's opentelemetry-instrumentation-openai, the
  older ``llm.*`` / flattened ``gen_ai.prompt.N`` generation.

With ``content`` some of the 20 carry prompt and answer (which exercises
redaction); without, request parameters take their place.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ATTRIBUTES_PER_SPAN = 20

MODELS = (  # (request model, response model), OpenAI ids genai-prices knows
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-4.1", "gpt-4.1-2025-04-14"),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    ("o3-mini", "o3-mini-2025-01-31"),
)
TEAMS = ("search", "support", "billing", "growth", "platform", "risk", "ml-infra", "mobile")
ROUTES = ("chat", "summarize", "classify", "extract", "rag-answer")
FINISH = (["stop"], ["stop"], ["stop"], ["length"], ["tool_calls"], ["stop", "length"])
PROMPTS = (
    "Summarize the attached ticket for the on-call engineer in two sentences.",
    "Customer jane.doe@example.com asks why invoice 4471 was charged twice.",
    "Classify this review as positive, negative or neutral: arrived late but works.",
    "Extract the order number and the shipping address from the message below.",
)


@dataclass(frozen=True)
class Call:
    request_model: str
    response_model: str
    team: str
    project: str
    user: str
    route: str
    input_tokens: int
    output_tokens: int
    cache_read: int
    failed: bool
    response_id: str
    finish: list[str]
    temperature: float
    max_tokens: int
    top_p: float
    prompt: str
    answer: str


def draw_call(rng: random.Random, i: int, content: bool) -> Call:
    """One call's facts (the draws keep the order the genai-only bench had)."""
    request_model, response_model = MODELS[i % len(MODELS)]
    team = TEAMS[rng.randrange(len(TEAMS))]
    input_tokens = rng.randint(120, 12_000)
    output_tokens = rng.randint(5, 1_500)
    cache_read = rng.choice((0, 0, input_tokens // 2, input_tokens // 1024 * 1024))
    failed = rng.random() < 0.02
    response_id = "" if failed else f"chatcmpl-{rng.getrandbits(96):024x}"
    finish = FINISH[rng.randrange(len(FINISH))]
    temperature = rng.choice((0.0, 0.2, 0.7, 1.0))
    max_tokens = rng.choice((256, 1024, 4096))
    project = f"{team}-{rng.randrange(4)}"
    user = f"user-{rng.randrange(5000):05d}"
    route = ROUTES[rng.randrange(len(ROUTES))]
    if content:
        prompt, answer, top_p = rng.choice(PROMPTS), rng.choice(PROMPTS), 1.0
    else:
        prompt, answer, top_p = "", "", rng.choice((0.9, 0.95, 1.0))
    return Call(
        request_model,
        response_model,
        team,
        project,
        user,
        route,
        input_tokens,
        0 if failed else output_tokens,
        cache_read,
        failed,
        response_id,
        finish,
        temperature,
        max_tokens,
        top_p,
        prompt,
        answer,
    )


def _attribution(call: Call) -> list[tuple[str, Any]]:
    return [
        ("tokentrail.team", call.team),
        ("tokentrail.project", call.project),
        ("tokentrail.user", call.user),
        ("tokentrail.route", call.route),
    ]


def _parts(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def genai(call: Call, content: bool) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", call.request_model),
        ("gen_ai.response.model", call.response_model),
        ("error.type", "RateLimitError")
        if call.failed
        else ("gen_ai.response.id", call.response_id),
        ("gen_ai.usage.input_tokens", call.input_tokens),
        ("gen_ai.usage.output_tokens", call.output_tokens),
        ("gen_ai.usage.cache_read.input_tokens", call.cache_read),
        ("gen_ai.response.finish_reasons", call.finish),
        ("gen_ai.request.temperature", call.temperature),
        ("gen_ai.request.max_tokens", call.max_tokens),
        ("server.address", "api.openai.com"),
        ("server.port", 443),
        ("http.response.status_code", 429 if call.failed else 200),
        *_attribution(call),
    ]
    if content:
        attrs += [
            ("gen_ai.input.messages", _parts("user", call.prompt)),
            ("gen_ai.output.messages", _parts("assistant", call.answer)),
        ]
    else:
        attrs += [("gen_ai.request.top_p", call.top_p), ("gen_ai.output.type", "text")]
    return attrs


def openinference(call: Call, content: bool) -> list[tuple[str, Any]]:
    parameters = {
        "model": call.request_model,
        "temperature": call.temperature,
        "max_tokens": call.max_tokens,
    }
    attrs: list[tuple[str, Any]] = [
        ("openinference.span.kind", "LLM"),
        ("llm.system", "openai"),
        ("llm.provider", "openai"),
        ("llm.model_name", call.response_model),
        ("llm.invocation_parameters", json.dumps(parameters)),
        ("llm.token_count.prompt", call.input_tokens),
        ("llm.token_count.completion", call.output_tokens),
        ("llm.token_count.total", call.input_tokens + call.output_tokens),
        ("llm.token_count.prompt_details.cache_read", call.cache_read),
        ("llm.finish_reason", call.finish[0]),
        ("input.mime_type", "application/json"),
        ("output.mime_type", "application/json"),
        *_attribution(call),
    ]
    if content:
        attrs += [
            ("llm.input_messages.0.message.role", "user"),
            ("llm.input_messages.0.message.content", call.prompt),
            ("llm.output_messages.0.message.role", "assistant"),
            ("llm.output_messages.0.message.content", call.answer),
        ]
    else:
        attrs += [
            ("llm.token_count.completion_details.reasoning", 0),
            ("llm.token_count.prompt_details.audio", 0),
            ("session.id", f"session-{call.user}"),
            ("tag.tags", [call.route]),
        ]
    return attrs


def openllmetry(call: Call, content: bool) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = [
        ("llm.request.type", "chat"),
        ("gen_ai.system", "openai"),
        ("gen_ai.request.model", call.request_model),
        ("gen_ai.response.model", call.response_model),
        ("error.type", "RateLimitError")
        if call.failed
        else ("gen_ai.response.id", call.response_id),
        ("gen_ai.usage.prompt_tokens", call.input_tokens),
        ("gen_ai.usage.completion_tokens", call.output_tokens),
        ("llm.usage.total_tokens", call.input_tokens + call.output_tokens),
        ("gen_ai.usage.cache_read_input_tokens", call.cache_read),
        ("llm.is_streaming", False),
        ("gen_ai.request.temperature", call.temperature),
        ("gen_ai.request.max_tokens", call.max_tokens),
        ("gen_ai.openai.api_base", "https://api.openai.com/v1/"),
        ("gen_ai.completion.0.finish_reason", call.finish[0]),
        *_attribution(call),
    ]
    if content:
        attrs += [
            ("gen_ai.prompt.0.content", call.prompt),
            ("gen_ai.completion.0.content", call.answer),
        ]
    else:
        attrs += [("gen_ai.request.top_p", call.top_p), ("llm.user", call.user)]
    return attrs


Builder = Callable[[Call, bool], list[tuple[str, Any]]]


@dataclass(frozen=True)
class Dialect:
    build: Builder
    span_name: Callable[[Call], str]
    scope: str  # the instrumentation's scope name


DIALECTS = {
    "genai": Dialect(
        genai, lambda c: f"chat {c.request_model}", "opentelemetry.instrumentation.openai_v2"
    ),
    "openinference": Dialect(
        openinference, lambda c: "ChatCompletion", "openinference.instrumentation.openai"
    ),
    "openllmetry": Dialect(
        openllmetry, lambda c: "openai.chat", "opentelemetry.instrumentation.openai.v1"
    ),
}
CHOICES = (*DIALECTS, "mix")


def dialect_of(choice: str, i: int) -> str:
    """The dialect of span ``i``: the one chosen, or all three in turn for ``mix``."""
    return tuple(DIALECTS)[i % len(DIALECTS)] if choice == "mix" else choice


def span_fields(choice: str, rng: random.Random, i: int, content: bool) -> dict[str, Any]:
    """Name, scope, attributes and failure of span ``i``."""
    dialect = DIALECTS[dialect_of(choice, i)]
    call = draw_call(rng, i, content)
    attrs = dialect.build(call, content)
    assert len(attrs) == ATTRIBUTES_PER_SPAN, (choice, i, len(attrs))
    return {
        "name": dialect.span_name(call),
        "scope": dialect.scope,
        "attributes": attrs,
        "failed": call.failed,
    }

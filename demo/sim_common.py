"""Shared pieces of the simulated provider: config, request log, usage, text and streaming.

Everything a test might want to predict is a pure function of the request:
the answer text, the tool call and the token counts. Randomness (ids aside)
only comes from ``SimulatorConfig`` realism knobs, which are off by default and
seeded when on.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import re
import secrets
import string
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# Chat formats charge a few tokens per message for role markers; 3 mirrors OpenAI's
# published tiktoken recipe closely enough to look plausible.
MESSAGE_OVERHEAD = 3
# Prompts at least this long get an implicit cache hit where the real provider has
# implicit caching (OpenAI, Gemini): half the prompt, rounded down to 128 tokens.
IMPLICIT_CACHE_MIN_TOKENS = 1024
IMPLICIT_CACHE_STEP = 128

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "bedrock")


class SimError(Exception):
    """A request the simulated provider rejects; rendered in the provider's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Outage:
    """Requests to ``provider`` ("*" = all) fail with 503 between start_s and end_s.

    Seconds are counted from when the simulator app was created.
    """

    provider: str
    start_s: float
    end_s: float


@dataclass
class SimulatorConfig:
    """Realism knobs for the demo. The defaults (all off) are what tests use."""

    seed: int = 0
    token_delay_s: float = 0.0  # pause between streamed events
    base_latency_s: float = 0.0  # before the first byte of every response
    latency_jitter_s: float = 0.0  # uniform extra latency in [0, jitter]
    outages: list[Outage] = field(default_factory=list)
    # Per request, the chance that a burst of 429s starts for that provider; the burst
    # covers this request and the next rate_limit_burst_length - 1 to the same provider.
    rate_limit_burst_probability: float = 0.0
    rate_limit_burst_length: int = 3
    # Azure deployment name -> real model name reported in responses (default: same name).
    azure_deployments: dict[str, str] = field(default_factory=dict)
    # Requested model -> model reported in responses (e.g. a dated snapshot name).
    response_models: dict[str, str] = field(default_factory=dict)


@dataclass
class Usage:
    """Token counts in Tokentrail's one rule (see WIRE-FORMATS.md).

    input_tokens is the whole prompt; cache_read/cache_write are parts of it;
    reasoning_tokens is part of output_tokens.
    """

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_input(self) -> int:
        """Anthropic's and Bedrock's ``input_tokens``: the prompt minus cache reads/writes."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def visible_output(self) -> int:
        return self.output_tokens - self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class RecordedRequest:
    """One request as it reached the simulator, plus what the simulator did with it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lowercase names
    body: bytes
    provider: str = ""
    received_at: float = 0.0  # time.time()
    status: int | None = None
    stream: bool = False
    model: str | None = None  # model reported in the response
    # Usage as the client saw it on the wire (normalized to the one rule), or None if the
    # response carried none (error, stream without include_usage, interrupted stream).
    usage: dict[str, int] | None = None
    # Usage the simulator computed for the call, whether or not it reached the client.
    planned_usage: dict[str, int] | None = None
    interrupted: bool = False
    events_sent: int = 0
    # The exact bytes of the response body as sent: tests compare them with what
    # a client received through the proxy.
    response_body: bytearray = field(default_factory=bytearray)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class RequestLog:
    """The server thread appends; test threads read snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class SimulatorState:
    """Per-app mutable state: config, log, seeded RNG, attempt counters, 429 bursts."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.log = RequestLog()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._attempts: dict[str, int] = {}
        self._burst_left: dict[str, int] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def next_attempt(self, key: str) -> int:
        """0 for the first request carrying ``key``, then 1, 2, ..."""
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            return attempt

    def latency(self) -> float:
        cfg = self.config
        if cfg.latency_jitter_s <= 0:
            return cfg.base_latency_s
        with self._lock:
            return cfg.base_latency_s + self._rng.uniform(0, cfg.latency_jitter_s)

    def realism_failure(self, provider: str) -> int | None:
        """503 during a configured outage, 429 during a random burst, else None."""
        now = self.elapsed()
        for outage in self.config.outages:
            if outage.provider in ("*", provider) and outage.start_s <= now < outage.end_s:
                return 503
        if self.config.rate_limit_burst_probability <= 0:
            return None
        with self._lock:
            left = self._burst_left.get(provider, 0)
            if left > 0:
                self._burst_left[provider] = left - 1
                return 429
            if self._rng.random() < self.config.rate_limit_burst_probability:
                self._burst_left[provider] = max(0, self.config.rate_limit_burst_length - 1)
                return 429
        return None


@dataclass
class SimContext:
    """What a format handler gets: the parsed request and the simulator state."""

    request: Request
    state: SimulatorState
    record: RecordedRequest
    body: dict[str, Any]
    provider: str
    request_id: str
    path_params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def header_int(self, name: str) -> int | None:
        value = self.request.headers.get(name)
        if value is None:
            return None
        try:
            return max(0, int(value))
        except ValueError as exc:
            raise SimError(400, f"header {name} must be an integer, got {value!r}") from exc

    def reported_model(self, requested: str) -> str:
        return self.state.config.response_models.get(requested, requested)

    def token_delay(self) -> float:
        ms = self.header_int("x-sim-token-delay-ms")
        return ms / 1000 if ms is not None else self.state.config.token_delay_s

    def answer(self, model: str, snippet: str, *, prefix: str = "") -> str:
        """The text answer: x-sim-response-text, else a deterministic echo of the prompt.

        With x-sim-output-tokens N the text is stretched or cut to exactly 4*N characters,
        so count_tokens(answer) == N.
        """
        text = self.header("x-sim-response-text")
        if text is None:
            snippet = " ".join(snippet.split())[:80]
            text = f"{prefix}Simulated answer from {model}. " + (
                f"You said: {snippet}" if snippet else "How can I help?"
            )
        wanted = self.header_int("x-sim-output-tokens")
        return fit_text(text, wanted) if wanted else text

    def plan_usage(
        self, prompt_tokens: int, visible_output: int, *, reasoning: bool, implicit_cache: bool
    ) -> Usage:
        """Usage from the computed counts, overridden by the x-sim-* usage headers."""
        forced_prompt = self.header_int("x-sim-prompt-tokens")
        input_tokens = forced_prompt if forced_prompt is not None else prompt_tokens
        read = self.header_int("x-sim-cache-read")
        if read is None:
            read = self.header_int("x-sim-cached-tokens")
        if read is None:
            read = implicit_cached_tokens(input_tokens) if implicit_cache else 0
        write = self.header_int("x-sim-cache-write") or 0
        # Cache counts are parts of the prompt: forced ones that do not fit grow it, keeping
        # one uncached token (the real APIs always have some) unless the prompt is forced too.
        input_tokens = max(input_tokens, read + write + (0 if forced_prompt is not None else 1))
        forced_out = self.header_int("x-sim-output-tokens")
        visible = forced_out if forced_out is not None else visible_output
        forced_reasoning = self.header_int("x-sim-reasoning-tokens")
        if forced_reasoning is not None:
            reasoning_tokens = forced_reasoning
        else:
            reasoning_tokens = max(16, 2 * visible) if reasoning else 0
        return Usage(input_tokens, visible + reasoning_tokens, read, write, reasoning_tokens)


def implicit_cached_tokens(prompt_tokens: int) -> int:
    if prompt_tokens < IMPLICIT_CACHE_MIN_TOKENS:
        return 0
    return (prompt_tokens // 2) // IMPLICIT_CACHE_STEP * IMPLICIT_CACHE_STEP


# ---------------------------------------------------------------- text and tokens

# Structural keys whose string values are not prompt text.
_SKIP_KEYS = frozenset(
    "role type id call_id tool_call_id tool_use_id toolUseId cache_control status"
    " mime_type mimeType media_type format".split()
)


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per 4 characters, at least 1."""
    return max(1, len(text) // 4)


def gather_text(obj: Any) -> str:
    """All prompt strings inside a message/content structure, space-joined."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key not in _SKIP_KEYS:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(obj)
    return " ".join(parts)


def count_prompt(messages: list[Any], *, system: Any = None, tools: Any = None) -> int:
    """Prompt tokens: per message count_tokens(text) + 3, the same for a system prompt,
    plus count_tokens(JSON of the tool definitions)."""
    total = sum(count_tokens(gather_text(m)) + MESSAGE_OVERHEAD for m in messages)
    if system:
        total += count_tokens(gather_text(system)) + MESSAGE_OVERHEAD
    if tools:
        total += count_tokens(json.dumps(tools, sort_keys=True))
    return max(1, total)


def fit_text(text: str, tokens: int) -> str:
    """Repeat or cut ``text`` to exactly 4*tokens characters."""
    target = 4 * tokens
    base = text.strip() or "token"
    # One join, not repeated concatenation: a 10 MB answer would be quadratic.
    out = " ".join([base] * (target // (len(base) + 1) + 1))[:target]
    # A trailing space would vanish in some clients' rendering; keep the length exact.
    return out[:-1] + "." if out.endswith(" ") else out


def truncate_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut the answer to max_tokens (the request's output limit); True if it was cut."""
    if not max_tokens or count_tokens(text) <= max_tokens:
        return text, False
    return text[: 4 * max_tokens], True


def split_words(text: str) -> list[str]:
    """Stream pieces: one word each, with its leading whitespace."""
    return re.findall(r"\s*\S+", text) or [text]


def split_fragments(text: str, size: int = 8) -> list[str]:
    """Split tool-call JSON into fragments (at least 2 when possible), as providers do."""
    if len(text) <= 1:
        return [text]
    size = max(1, min(size, len(text) // 2))
    return [text[i : i + size] for i in range(0, len(text), size)]


def sample_arguments(schema: Any) -> dict[str, Any]:
    """Arguments for a tool call that satisfy a JSON schema's declared properties."""
    value = _sample_value("arg", schema if isinstance(schema, dict) else {})
    return value if isinstance(value, dict) else {}


def _sample_value(name: str, schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini schemas spell types in upper case
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {key: _sample_value(key, sub or {}) for key, sub in props.items()}
    if kind == "array":
        return [_sample_value(name, schema.get("items") or {"type": "string"})]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return f"simulated {name}"


_ALNUM = string.ascii_letters + string.digits
_ID_RNG = random.Random(secrets.randbits(128))


def rand_id(prefix: str, length: int = 24, alphabet: str = _ALNUM) -> str:
    # Ids need to be unique, not secret: one choices() call on a generator seeded
    # from the OS costs ~3 us, where a secrets.choice per character cost ~70 us
    # a response (7 % of the simulator's CPU under load).
    return prefix + "".join(_ID_RNG.choices(alphabet, k=length))


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(data: Any, event: str | None = None, sep: str = "\n\n") -> bytes:
    """One Server-Sent Event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{sep}".encode()


# ---------------------------------------------------------------- streaming

# Set while a response deliberately stops mid-stream, so the "returned without completing
# response" error uvicorn logs for it (in the same task) can be dropped: it is intended.
_INTERRUPTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sim_interrupting", default=False
)
_INTERRUPT_LOG_MESSAGE = "ASGI callable returned without completing response."


class InterruptLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_INTERRUPTING.get() and record.msg == _INTERRUPT_LOG_MESSAGE)


class SimStreamResponse(StreamingResponse):
    """A precomputed stream with token delays and the x-sim-interrupt-after cut.

    ``usage_index`` is the chunk that delivers the final usage to the client; the
    record's ``usage`` is set only when that chunk is sent.

    Interrupt modes (header ``x-sim-interrupt-mode``): ``close`` (default) drops the
    connection without the chunked-encoding terminator, as a dying upstream does, so
    clients see a protocol error; ``eof`` ends the body cleanly but early.
    """

    def __init__(
        self,
        ctx: SimContext,
        chunks: list[bytes],
        *,
        usage: Usage | None,
        usage_index: int,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(iter(()), media_type=media_type, headers=headers)
        self.ctx = ctx
        self.chunks = chunks
        self.usage = usage
        self.usage_index = usage_index
        self.interrupt_after = ctx.header_int("x-sim-interrupt-after")
        self.interrupt_mode = (ctx.header("x-sim-interrupt-mode") or "close").lower()
        self.delay = ctx.token_delay()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = self.ctx.record
        record.stream = True
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for index, chunk in enumerate(self.chunks):
            if self.interrupt_after is not None and index >= self.interrupt_after:
                record.interrupted = True
                if self.interrupt_mode == "eof":
                    break
                _INTERRUPTING.set(True)
                return  # no final empty body message: uvicorn closes the connection
            if self.delay and index:
                await asyncio.sleep(self.delay)
            if index == self.usage_index and self.usage is not None:
                record.usage = self.usage.as_dict()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            record.events_sent = index + 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

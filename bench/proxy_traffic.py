"""bench/proxy.py's traffic: the request mix, and sending it to one target in
sequence or from a pool of keep-alive clients, timing each request."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness import Deadline

KINDS = ("openai_chat", "openai_chat_stream", "anthropic_messages", "anthropic_messages_stream")


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    headers: dict[str, str]
    body: bytes


def build_request(kind: str, i: int) -> Request:
    """One small request of ``kind``; the prompt is unique per request index."""
    prompt = f"Bench request {i}: say hello in five words."
    headers = {
        "content-type": "application/json",
        "x-tokentrail-team": "bench",
        "x-tokentrail-route": kind,
    }
    if kind.startswith("openai"):
        body: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
        }
        if kind.endswith("stream"):
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers["authorization"] = "Bearer sk-bench-openai-key"
        path = "/v1/chat/completions"
    else:
        body = {
            "model": "claude-3-5-haiku-20241022",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
        }
        if kind.endswith("stream"):
            body["stream"] = True
        headers |= {"x-api-key": "sk-ant-bench-key", "anthropic-version": "2023-06-01"}
        path = "/v1/messages"
    return Request(kind, path, headers, json.dumps(body).encode())


def build_plan(count: int, start: int, rng: random.Random) -> list[Request]:
    """``count`` requests, the kinds in equal shares (±1) and shuffled."""
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    return [build_request(kind, start + i) for i, kind in enumerate(kinds)]


def response_problem(request: Request, response: httpx.Response) -> str | None:
    """Why the response is not a complete, successful answer (None if it is)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    content = response.content
    if request.kind.endswith("stream"):
        end = b"data: [DONE]" if request.kind.startswith("openai") else b"message_stop"
        return None if end in content else f"stream without {end.decode()}"
    try:
        usage = json.loads(content).get("usage")
    except ValueError:
        return "body is not JSON"
    return None if usage else "no usage in the response"


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, kind: str, latency: float | None, error: str | None) -> None:
        self.sent += 1
        if error is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{kind}: {error}")
        elif latency is not None:
            self.latencies.append(latency)
            self.by_kind.setdefault(kind, []).append(latency)

    def merge(self, other: Outcome) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        self.latencies.extend(other.latencies)
        for kind, values in other.by_kind.items():
            self.by_kind.setdefault(kind, []).extend(values)


def send(client: httpx.Client, base: str, request: Request) -> tuple[float | None, str | None]:
    """(latency in s, None) or (None, what went wrong); the whole body is read."""
    started = time.perf_counter()
    try:
        response = client.post(base + request.path, content=request.body, headers=request.headers)
    except httpx.HTTPError as exc:
        return None, repr(exc)[:200]
    latency = time.perf_counter() - started
    problem = response_problem(request, response)
    return (None, problem) if problem else (latency, None)


def run_sequential(
    client: httpx.Client, base: str, requests: list[Request], deadline: Deadline, what: str
) -> Outcome:
    outcome = Outcome()
    for request in requests:
        deadline.check(what)
        outcome.add(request.kind, *send(client, base, request))
    return outcome


def run_pool(
    clients: list[httpx.Client],
    base: str,
    requests: list[Request],
    deadline: Deadline,
    what: str,
    static: bool = False,
) -> Outcome:
    """``len(clients)`` workers, one client each, until ``requests`` are all sent.

    Workers pull the next request as they finish one (a closed loop); with
    ``static`` worker w sends requests w, w + C, ... (warm-up: every client
    gets its connection).
    """
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    outcomes = [Outcome() for _ in clients]
    stop = threading.Event()

    def worker(w: int) -> None:
        client, outcome = clients[w], outcomes[w]
        mine = iter(range(w, len(requests), len(clients))) if static else None
        while not stop.is_set():
            if mine is not None:
                i = next(mine, None)
            else:
                with lock:
                    i = next(cursor, None)
            if i is None:
                return
            if deadline.left() <= 0:
                stop.set()
                return
            request = requests[i]
            outcome.add(request.kind, *send(client, base, request))

    threads = [
        threading.Thread(target=worker, args=(w,), name=f"bench-client-{w}", daemon=True)
        for w in range(len(clients))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short joins keep Ctrl-C responsive
    except BaseException:
        stop.set()
        raise
    deadline.check(what)
    total = Outcome()
    for outcome in outcomes:
        total.merge(outcome)
    return total


def slices(items: list[Request], rounds: int) -> list[list[Request]]:
    n = len(items)
    return [items[r * n // rounds : (r + 1) * n // rounds] for r in range(rounds)]

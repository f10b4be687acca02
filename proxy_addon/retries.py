"""Attempt numbering: which request is a retry of which.

The OpenAI and Anthropic SDKs say so (``x-stainless-retry-count``). Other
clients don't, so the same request body from the same credential seen again
within ``window_s`` of a failed attempt counts as a retry. ``retry_of`` always
names the span of the first attempt.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass


@dataclass
class _Chain:
    first_span_id: str
    attempts: int
    last_seen: float
    last_failed: bool


@dataclass(frozen=True)
class Attempt:
    number: int  # 0 for a first attempt
    retry_of: str  # span id of the first attempt, "" for a first attempt


def request_key(fingerprint: str, host: str, path: str, body: bytes) -> str:
    return hashlib.sha256(
        b"\x00".join([fingerprint.encode(), host.encode(), path.encode(), body])
    ).hexdigest()


class RetryTracker:
    def __init__(self, window_s: float = 120.0, max_chains: int = 50_000) -> None:
        self.window_s = window_s
        self.max_chains = max_chains
        self._chains: dict[str, _Chain] = {}
        self._lock = threading.Lock()

    def start(self, key: str, span_id: str, sdk_retry_count: int | None) -> Attempt:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            chain = self._chains.get(key)
            fresh = chain is None or now - chain.last_seen > self.window_s
            if sdk_retry_count is not None:
                if sdk_retry_count == 0 or fresh:
                    self._chains[key] = _Chain(span_id, 1, now, False)
                    return Attempt(sdk_retry_count, "")
                assert chain is not None
                chain.attempts += 1
                chain.last_seen = now
                return Attempt(sdk_retry_count, chain.first_span_id)
            if fresh or chain is None or not chain.last_failed:
                self._chains[key] = _Chain(span_id, 1, now, False)
                return Attempt(0, "")
            chain.attempts += 1
            chain.last_seen = now
            return Attempt(chain.attempts - 1, chain.first_span_id)

    def finish(self, key: str, failed: bool) -> None:
        with self._lock:
            chain = self._chains.get(key)
            if chain is not None:
                chain.last_failed = failed
                chain.last_seen = time.monotonic()

    def _expire(self, now: float) -> None:
        # Bounded memory: drop stale chains, and the oldest when still too many.
        if len(self._chains) < self.max_chains:
            return
        stale = [k for k, c in self._chains.items() if now - c.last_seen > self.window_s]
        for key in stale:
            del self._chains[key]
        while len(self._chains) >= self.max_chains:
            del self._chains[next(iter(self._chains))]

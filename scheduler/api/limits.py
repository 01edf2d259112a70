"""Per-token request rate (a token bucket) and per-token concurrent log followers.

Both protect the one API process from one noisy client: a script polling in a tight loop, or a
hundred `corral logs -f` left open. Admin tokens are exempt from the rate limit, as Kubernetes'
API priority and fairness exempts system:masters: the operator must always get through.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_BURST", "DEFAULT_FOLLOWERS", "DEFAULT_RATE", "FollowerGate", "RateLimiter"]

DEFAULT_RATE = 50.0  # requests per second per token, sustained
DEFAULT_BURST = 200  # requests a token may send at once after being idle
DEFAULT_FOLLOWERS = 8  # concurrent `logs -f` streams per token


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `take(key)` is 0.0 when the request may go, else seconds to wait."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst ≥ 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._buckets.clear()  # a forgotten bucket starts full again: never stricter
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))


class FollowerGate:
    """At most `limit` concurrent followers per key; `enter` is False when the key is at its limit."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be ≥ 1")
        self.limit = limit
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, key: str) -> bool:
        with self._lock:
            n = self._count.get(key, 0)
            if n >= self.limit:
                return False
            self._count[key] = n + 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            n = self._count.get(key, 0) - 1
            if n > 0:
                self._count[key] = n
            else:
                self._count.pop(key, None)

    def active(self, key: str) -> int:
        with self._lock:
            return self._count.get(key, 0)

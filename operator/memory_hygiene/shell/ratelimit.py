"""Token buckets for Events, as client-go's EventSourceObjectSpamFilter does it: per object, a
burst of 25 and one more token every 5 minutes (``staging/src/k8s.io/client-go/tools/record/
events_cache.go``: defaultSpamBurst = 25, defaultSpamQPS = 1/300)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """One token bucket per key, LRU-bounded so that a flood of objects cannot grow it forever."""

    def __init__(self, burst: int, refill_seconds: float, max_keys: int = 100_000) -> None:
        if burst < 1 or refill_seconds <= 0:
            raise ValueError("burst must be >= 1 and refill_seconds > 0")
        self.burst = burst
        self.rate = 1.0 / refill_seconds
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self._buckets[key] = b
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False

    def available(self, key: str, now: float) -> bool:
        """Whether ``allow`` would say yes now (nothing taken)."""
        b = self._buckets.get(key)
        return b is None or min(float(self.burst), b.tokens + (now - b.stamp) * self.rate) >= 1.0

    def refund(self, key: str) -> None:
        """Give back a token taken for nothing (the Event already existed)."""
        b = self._buckets.get(key)
        if b is not None:
            b.tokens = min(float(self.burst), b.tokens + 1.0)

    def wait_seconds(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now)."""
        b = self._buckets.get(key)
        if b is None:
            return 0.0
        tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

"""The one rate limiter: at most ``limit`` hits per key in any ``window`` seconds.

The web app uses it for subscribe requests (per client address and per subscriber
address) and for the staff desk's login lockout; the send loop's pacing is
``RateLimiter(1, 1 / rate_per_second)`` with ``wait()``. The clock is injected, so
tests move time by hand instead of sleeping. State is in memory: the limits hold
for one process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """A sliding window per key: ``hit`` counts a hit if it is allowed."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def hit(self, key: str) -> float | None:
        """Count one hit for ``key``: None when allowed, else the seconds until one is."""
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % 1000 == 0:
                self._sweep(now)
            hits = self._current(key, now)
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return None

    def peek(self, key: str) -> float | None:
        """What ``hit`` would answer now, without counting anything."""
        now = self._clock()
        with self._lock:
            hits = self._current(key, now)
            return hits[0] + self.window - now if len(hits) >= self.limit else None

    def wait(self, key: str = "") -> None:
        """Block until a hit for ``key`` is allowed, then count it (pacing)."""
        while (delay := self.hit(key)) is not None:
            self._sleep(delay)

    def forget(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)

    def _current(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        """Forget keys with no recent hits, so memory stays bounded."""
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]

"""Log rate limiting: at most ``burst`` lines per ``window`` seconds per key; the rest are counted."""

from __future__ import annotations


class RateLimiter:
    """Time comes in as ``now`` (the caller's injected clock), never read here."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self._state: dict[str, list[float]] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """(log this one?, how many were suppressed in the window that just ended)."""
        st = self._state.get(key)
        if st is None or now - st[0] >= self.window:
            suppressed = int(st[2]) if st else 0
            if len(self._state) > 1000:
                self._state.clear()
            self._state[key] = [now, 1.0, 0.0]
            return True, suppressed
        if st[1] < self.burst:
            st[1] += 1
            return True, 0
        st[2] += 1
        return False, 0

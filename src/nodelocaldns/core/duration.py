"""Go durations: ``time.ParseDuration`` for Corefile arguments and ``Duration.String`` for messages."""

from __future__ import annotations

import re

# Go accepts "1.5h", ".5s" and "5.s"; a sign is handled by the callers that allow one.
_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration ("1m30s", "500ms", "0") in seconds. Raises ValueError."""
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return total


def format_duration(s: float) -> str:
    """Go's time.Duration.String() for the durations a Corefile can hold: 500ms, 30s, 5m0s, 1h0m0s."""
    if s < 1:
        return f"{s * 1000:g}ms" if s > 0 else "0s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    out = f"{sec:g}s"
    if h or m:
        out = f"{int(m)}m" + out
    if h:
        out = f"{int(h)}h" + out
    return out

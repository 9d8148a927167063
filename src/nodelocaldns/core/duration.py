"""Go durations: ``time.ParseDuration`` for Corefile arguments and ``Duration.String`` for messages."""

from __future__ import annotations

import re
from decimal import Decimal

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


# Exact Go semantics (sign, ".5s", both micro signs), for node-cache's flags: parts are summed as
# decimals, so 0.1s is exactly 100000000 ns. Go rejects values past int64 nanoseconds; callers
# bound what they accept (node-cache multiplies -syncinterval by a second).
UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")


def duration_parts(text: str) -> tuple[int, list[tuple[str, str]]]:
    """Split a Go duration into its sign (1 or -1) and ``(number, unit)`` parts.

    Raises ValueError with Go's wording ("invalid duration", "missing unit", "unknown unit").
    ``"0"`` (and ``"+0"``, ``"-0"``) is the only unit-less value, returned with no parts.
    """
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return sign, []
    if not body:
        raise ValueError(f"time: invalid duration {text!r}")
    parts: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        number, unit = m.groups()
        if not unit:
            raise ValueError(f"time: missing unit in duration {text!r}")
        if unit not in UNITS_NS:
            raise ValueError(f"time: unknown unit {unit!r} in duration {text!r}")
        parts.append((number, unit))
        pos = m.end()
    return sign, parts


def duration_seconds(text: str) -> Decimal:
    """A Go duration in seconds, exactly (``0.1s`` is ``Decimal("0.1")``)."""
    sign, parts = duration_parts(text)
    total = sum((Decimal(n) * UNITS_NS[u] for n, u in parts), Decimal(0))
    return sign * total / UNITS_NS["s"]


def parse_duration_ns(text: str) -> int:
    """A Go duration as integer nanoseconds (fractions of a nanosecond are dropped, as in Go)."""
    return int(duration_seconds(text) * UNITS_NS["s"])

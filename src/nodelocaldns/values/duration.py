"""Go ``time.ParseDuration``: ``300ms``, ``1m30s``, ``1.5h``, ``-2s``, ``0``.

Exact: parts are summed as decimals and returned as integer nanoseconds, so ``0.1s`` is
100000000 ns, not a float's neighbour. Go rejects values past int64 nanoseconds; callers that
accept a Go duration bound it themselves (node-cache's ``-syncinterval`` multiplies it by a second).
"""

from __future__ import annotations

import re
from decimal import Decimal

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


def parse_duration(text: str) -> float:
    """A Go duration in seconds."""
    return float(duration_seconds(text))

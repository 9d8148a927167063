"""Go's time.ParseDuration, shared by node-cache's -syncinterval and the Corefile plugins."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nodelocaldns.core.duration import duration_parts, duration_seconds, parse_duration_ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("300ms", 300_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("-2s", -2_000_000_000),
        ("+10us", 10_000),
        ("10\u00b5s", 10_000),
        ("10\u03bcs", 10_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("0.1s", 100_000_000),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert float(duration_seconds(text)) == pytest.approx(ns / 1e9)


def test_exact_decimal_seconds() -> None:
    assert duration_seconds("0.1s") == Decimal("0.1")
    assert duration_parts("1m30s") == (1, [("1", "m"), ("30", "s")])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "invalid duration"),
        ("-", "invalid duration"),
        ("s", "invalid duration"),
        ("5", "missing unit"),
        ("1.2.3s", "missing unit"),
        ("5x", "unknown unit"),
        ("1S", "unknown unit"),
        ("5 s", "unknown unit"),
        ("1s ", "unknown unit"),
    ],
)
def test_rejects_what_go_rejects(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration_ns(text)

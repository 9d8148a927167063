"""Building blocks for collectors: families named from the catalog, histogram buckets, size bounds."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from nodelocaldns.metrics.catalog import BY_NAME, SIZE_BUCKETS, TIME_BUCKETS


def counter(name: str) -> CounterMetricFamily:
    """A counter family by its full catalog name (``..._total``); help and labels from the catalog."""
    f = BY_NAME[name]
    return CounterMetricFamily(name.removesuffix("_total"), f.help, labels=list(f.labels))


def gauge(name: str) -> GaugeMetricFamily:
    f = BY_NAME[name]
    return GaugeMetricFamily(name, f.help, labels=list(f.labels))


def histogram(name: str) -> HistogramMetricFamily:
    f = BY_NAME[name]
    return HistogramMetricFamily(name, f.help, labels=list(f.labels))


def buckets(counts: dict[float, float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from per-bound counts, ending with ``+Inf``."""
    out = []
    acc = 0.0
    for b in bounds:
        acc += counts.get(b, 0)
        out.append((_fmt(b), acc))
    acc += counts.get(float("inf"), 0)
    out.append(("+Inf", acc))
    return out


def _fmt(b: float) -> str:
    return repr(float(b)) if not float(b).is_integer() else f"{b:.1f}"


def size_bound(n: int) -> float:
    for b in SIZE_BUCKETS:
        if n <= b:
            return float(b)
    return float("inf")


def time_bound(bucket: int) -> float:
    """The upper bound of duration bucket ``bucket`` (see dnsstats.duration_bucket)."""
    return TIME_BUCKETS[bucket] if bucket < len(TIME_BUCKETS) else float("inf")


TIME_BOUNDS: tuple[float, ...] = TIME_BUCKETS
SIZE_BOUNDS: tuple[float, ...] = tuple(map(float, SIZE_BUCKETS))

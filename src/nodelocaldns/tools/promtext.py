"""Read a Prometheus text exposition (format 0.0.4) and compute what ``top`` and ``doctor`` need.

Pure: ``parse`` takes text, ``Scrape`` answers questions about one scrape, ``delta`` subtracts two
scrapes of counters, ``histogram_quantile`` is Prometheus's function of the same name. Only
``fetch`` does I/O (one HTTP GET with a timeout).
"""

from __future__ import annotations

import errno
import http.client
import math
import socket
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
Buckets = tuple[tuple[float, float], ...]
"""Cumulative histogram buckets: (upper bound, cumulative count), sorted by bound."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default


class PromTextError(ValueError):
    """The text is not a Prometheus exposition; the message names the line."""


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _parse_labels(text: str, pos: int, lineno: int) -> tuple[Labels, int]:
    """Parse ``{a="x",b="y"}`` starting at ``text[pos] == "{"``; return labels and the index after ``}``."""
    out: list[tuple[str, str]] = []
    i = pos + 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i < n and text[i] == "}":
            return tuple(sorted(out)), i + 1
        eq = text.find("=", i)
        if eq < 0:
            raise PromTextError(f"line {lineno}: label without value")
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != '"':
            raise PromTextError(f"line {lineno}: label {key!r} value is not quoted")
        i += 1
        buf: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                buf.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
                i += 2
            else:
                buf.append(text[i])
                i += 1
        if i >= n:
            raise PromTextError(f"line {lineno}: unterminated label value")
        out.append((key, "".join(buf)))
        i += 1


def _parse_value(token: str, lineno: int) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if token in special:
        return special[token]
    try:
        return float(token)
    except ValueError:
        raise PromTextError(f"line {lineno}: bad sample value {token!r}") from None


def parse(text: str) -> list[Sample]:
    """Every sample line (comments and TYPE/HELP lines skipped); timestamps are ignored."""
    out: list[Sample] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = min((p for p in (line.find(" "), line.find("\t")) if p >= 0), default=-1)
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace, lineno)
            rest = line[end:].split()
        else:
            if space < 0:
                raise PromTextError(f"line {lineno}: sample without value")
            name, labels, rest = line[:space], (), line[space:].split()
        if not name or not rest:
            raise PromTextError(f"line {lineno}: sample without name or value")
        out.append(Sample(name, labels, _parse_value(rest[0], lineno)))
    return out


def _matches(s: Sample, match: Mapping[str, str]) -> bool:
    return all(s.label(k) == v for k, v in match.items())


@dataclass(frozen=True)
class Scrape:
    """One scrape: its samples and the monotonic time it was taken."""

    samples: tuple[Sample, ...]
    at: float = 0.0
    _by_name: dict[str, list[Sample]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for s in self.samples:
            self._by_name.setdefault(s.name, []).append(s)

    @classmethod
    def from_text(cls, text: str, at: float = 0.0) -> Scrape:
        return cls(tuple(parse(text)), at)

    def series(self, name: str, **match: str) -> list[Sample]:
        return [s for s in self._by_name.get(name, []) if _matches(s, match)]

    def has(self, name: str) -> bool:
        return name in self._by_name

    def total(self, name: str, **match: str) -> float:
        return sum(s.value for s in self.series(name, **match))

    def by(self, name: str, keys: Iterable[str], **match: str) -> dict[tuple[str, ...], float]:
        """Sum of ``name`` grouped by the values of ``keys`` (Prometheus ``sum by (keys)``)."""
        keys = tuple(keys)
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for s in self.series(name, **match):
            out[tuple(s.label(k) for k in keys)] += s.value
        return dict(out)

    def buckets(self, name: str, keys: Iterable[str] = (), **match: str) -> dict[tuple[str, ...], Buckets]:
        """Cumulative histogram buckets of ``name`` (without ``_bucket``) summed by ``keys``."""
        keys = tuple(keys)
        acc: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for s in self.series(name + "_bucket", **match):
            acc[tuple(s.label(k) for k in keys)][_parse_value(s.label("le"), 0)] += s.value
        return {group: tuple(sorted(bs.items())) for group, bs in acc.items()}


def delta(
    now: Mapping[tuple[str, ...], float], before: Mapping[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    """Counter increase per group. A group that went down was reset (restart): count from zero."""
    out: dict[tuple[str, ...], float] = {}
    for group, value in now.items():
        prev = before.get(group, 0.0)
        out[group] = value - prev if value >= prev else value
    return out


def bucket_delta(now: Buckets, before: Buckets | None) -> Buckets:
    """Histogram increase between two scrapes (a reset counts from zero, as ``delta`` does)."""
    if not before:
        return now
    prev = dict(before)
    if any(count < prev.get(le, 0.0) for le, count in now):
        return now
    return tuple((le, count - prev.get(le, 0.0)) for le, count in now)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket holding rank q.

    None when the histogram is empty. A rank in the ``+Inf`` bucket returns the highest finite
    bound, as Prometheus does.
    """
    if not buckets or not 0 <= q <= 1:
        return None
    total = buckets[-1][1] if math.isinf(buckets[-1][0]) else None
    if total is None or total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                finite = [b for b, _ in buckets if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


class FetchError(OSError):
    """The metrics endpoint could not be read. ``str()`` is "URL: reason" with the reason in words (the
    socket's strerror, never Python's "[Errno 111] ..." repr); ``errno`` is set when the socket said why."""

    def __init__(self, url: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason
        self.errno = code


# The endpoints are node-local: an http_proxy from the environment must never see these requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _why(e: Exception) -> tuple[str, int | None]:
    """(reason, errno) of a GET that got no answer, the reason as an operator reads it."""
    cause = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(cause, TimeoutError):  # socket.timeout is this, with no errno of its own
        return "timed out", errno.ETIMEDOUT
    if isinstance(cause, socket.gaierror) and cause.strerror:
        return f"cannot resolve the host: {cause.strerror}", cause.errno
    if isinstance(cause, OSError) and cause.strerror:
        return in_words(cause), cause.errno
    return str(cause), None


def in_words(e: Exception) -> str:
    """An error as an operator reads it: an OSError's strerror ("no such file or directory"), never
    Python's "[Errno 2] No such file or directory: '...'" repr; anything else as it says itself."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e)


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET ``url``: (status, body) for any HTTP answer; FetchError when there is no answer."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return int(resp.status), body.decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(url, *_why(e)) from None
    except http.client.HTTPException as e:  # something answered, but not HTTP (another service's port)
        raise FetchError(
            url, f"not an HTTP answer ({type(e).__name__}): is another service on that port?"
        ) from None


def fetch(url: str, timeout: float = 3.0) -> str:
    """GET ``url`` and return the body; any failure (refused, timeout, non-200) is a FetchError."""
    status, body = http_get(url, timeout)
    if status != 200:
        raise FetchError(url, f"HTTP {status}")
    return body

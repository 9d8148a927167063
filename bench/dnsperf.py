"""Run dnsperf 2.10 and read its output.

Parsing is pure (text in, numbers out). dnsperf 2.10 has no latency histogram option, so the
latency distribution comes from ``-v``: one ``> RCODE name type latency_seconds`` line per
answered query and ``> T name type`` per timeout.
"""

from __future__ import annotations

import math
import re
import resource
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DNSPERF = "/usr/bin/dnsperf"


@dataclass
class DnsperfResult:
    """What one dnsperf run reported."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    runtime_s: float = 0.0
    qps: float = 0.0
    avg_latency_s: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    #: Per-query latencies in seconds, only with ``verbose=True``.
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    command: str = ""
    #: CPU seconds dnsperf itself used: tells a load-generator-bound run from a server-bound one.
    client_cpu_s: float = 0.0

    @property
    def lost_fraction(self) -> float:
        return self.lost / self.sent if self.sent else 0.0


_NUM = r"([0-9.]+)"
_SUMMARY = {
    "sent": re.compile(rf"Queries sent:\s+{_NUM}"),
    "completed": re.compile(rf"Queries completed:\s+{_NUM}"),
    "lost": re.compile(rf"Queries lost:\s+{_NUM}"),
    "runtime_s": re.compile(rf"Run time \(s\):\s+{_NUM}"),
    "qps": re.compile(rf"Queries per second:\s+{_NUM}"),
    "avg_latency_s": re.compile(rf"Average Latency \(s\):\s+{_NUM}"),
}
_RCODES = re.compile(r"Response codes:\s+(.*)")
_RCODE_ITEM = re.compile(r"([A-Z0-9]+) (\d+) \(")
_VERBOSE = re.compile(r"^> (\S+) \S+ \S+(?: ([0-9.]+))?$")


def parse_output(text: str) -> DnsperfResult:
    """Parse dnsperf's summary (and ``-v`` lines if present)."""
    result = DnsperfResult()
    for attr, pattern in _SUMMARY.items():
        m = pattern.search(text)
        if m is not None:
            value = float(m.group(1))
            setattr(result, attr, int(value) if attr in ("sent", "completed", "lost") else value)
    m = _RCODES.search(text)
    if m is not None:
        result.rcodes = {code: int(n) for code, n in _RCODE_ITEM.findall(m.group(1))}
    latencies: list[float] = []
    timeouts = 0
    for line in text.splitlines():
        if not line.startswith("> "):
            continue
        v = _VERBOSE.match(line)
        if v is None:
            continue
        if v.group(1) == "T":
            timeouts += 1
        elif v.group(2) is not None:
            latencies.append(float(v.group(2)))
    result.latencies = latencies
    result.timeouts = timeouts
    return result


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def run(
    port: int,
    query_file: Path,
    *,
    duration_s: float,
    max_qps: int | None = None,
    outstanding: int = 100,
    clients: int = 1,
    threads: int = 1,
    max_runs: int | None = None,
    verbose: bool = False,
    timeout_s: float = 2.0,
    cpu: int | None = None,
    server: str = "127.0.0.1",
) -> DnsperfResult:
    """Run dnsperf against ``server:port`` for at most ``duration_s`` seconds (hard-killed after more)."""
    if not server.startswith("127.") and server != "::1":
        raise ValueError("the bench only sends traffic to loopback")
    argv = [
        DNSPERF,
        "-s",
        server,
        "-p",
        str(port),
        "-d",
        str(query_file),
        "-l",
        f"{duration_s:g}",
        "-q",
        str(outstanding),
        "-t",
        f"{timeout_s:g}",
        "-c",
        str(clients),
        "-T",
        str(threads),
    ]
    if max_qps is not None:
        argv += ["-Q", str(max_qps)]
    if max_runs is not None:
        argv += ["-n", str(max_runs)]
    if verbose:
        argv.append("-v")
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    result = parse_output(proc.stdout)
    result.command = " ".join(argv)
    result.client_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def write_queries(path: Path, queries: Sequence[tuple[str, str]]) -> Path:
    """Write a dnsperf query file (``name TYPE`` per line)."""
    path.write_text("".join(f"{name} {rtype}\n" for name, rtype in queries))
    return path


def count_by_rcode(results: Sequence[DnsperfResult]) -> Counter[str]:
    total: Counter[str] = Counter()
    for r in results:
        total.update(r.rcodes)
    return total

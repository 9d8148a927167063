"""What a bench run is told (Settings) and what it measures (HitRound, ServerResult).

The bottom of the bench package: run, report, saturation and workload all read these, and this
imports none of them, so the package has no import circle (tests/harness/test_bench_modules_import.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    duration_s: float = 5.0
    fixed_qps: int = 50_000
    # 4 sockets x 100 outstanding kept a C server CPU-bound here without the losses that
    # deeper queues caused (socket buffer overflow at the default rmem).
    sat_outstanding: int = 100
    sat_clients: int = 4
    # The bench's load generator: 8 sockets x 16. When the server is the bottleneck the whole
    # closed-loop window waits in the server's socket; 400 overflowed unbound's default receive
    # buffer (208 KiB) and every drop idles a slot for a timeout. 8 sockets spread better over
    # nodelocaldns-2w's two SO_REUSEPORT sockets (the kernel hashes each client socket to one).
    lg_clients: int = 8
    lg_outstanding: int = 16
    fixed_outstanding: int = 200
    hit_names: int = 1000
    miss_names: int = 250_000
    miss_outstanding: int = 20
    # Per kind (positive and negative per block): 4 blocks x 2 kinds x this, a bit over 9984
    # so every cache is at capacity and has started evicting.
    fill_per_kind: int = 10_500
    fill_qps: int = 5_000
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(rounds=1, duration_s=2.0, miss_names=100_000, fill_per_kind=1_500, quick=True)


@dataclass
class HitRound:
    sat_qps: float
    sat_cpu_us: float
    sat_lost: float
    #: Server CPU / wall time during the saturation run: below ~0.9 the load generator, not the
    #: server, set the pace.
    sat_busy: float
    #: CPU time on the server's CPU not used by the server (other processes, steal), per second.
    foreign: float
    fixed_qps: float
    fixed_cpu_us: float
    fixed_lost: float
    sustained: bool
    mean_latency_us: float
    p99_latency_us: float
    #: dnsperf's own CPU µs per completed query in the saturation run.
    sat_client_us: float = math.nan
    # The same saturation run with bench/loadgen.c (NaN when it could not be built).
    lg_qps: float = math.nan
    lg_cpu_us: float = math.nan
    lg_lost: float = math.nan
    lg_busy: float = math.nan
    lg_client_us: float = math.nan
    #: Replies loadgen rejected (no such ID outstanding, question differs, not a response).
    lg_bad: float = math.nan


@dataclass
class ServerResult:
    name: str
    skipped: str | None = None
    #: CPUs the server may use ("server CPU busy" is a share of all of them).
    cpus: int = 1
    rounds: list[HitRound] = field(default_factory=list)
    miss_qps: float | None = None
    miss_mean_latency_us: float | None = None
    miss_lost: float | None = None
    fill_completed: int | None = None
    fill_rcodes: dict[str, int] = field(default_factory=dict)
    rss_mib: float | None = None
    rss_idle_mib: float | None = None
    cache_entries: dict[str, float] | None = None
    sanity: list[str] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        """Median over rounds, ignoring rounds that did not measure it (NaN); None if none did."""
        values = [v for v in (getattr(r, attr) for r in self.rounds) if not math.isnan(v)]
        return statistics.median(values) if values else None

    @property
    def sustained(self) -> bool | None:
        """Whether the median round kept up with the fixed offered load."""
        if not self.rounds:
            return None
        return statistics.median(1.0 if r.sustained else 0.0 for r in self.rounds) >= 0.5

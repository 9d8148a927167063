"""Which load generator's saturation figure a target uses (pure: results in, a choice out).

Saturation (a) is measured twice per round: with dnsperf and with the bench's own load generator
(``bench/loadgen.c``). A saturation figure means something only if the server, not the client,
set the pace, i.e. the server's CPUs were (close to) 100% busy. So a target comparing two
servers uses the generator that drove *both* closest to 100% busy: for each generator the worse
of the two contenders' distances from 100% (median busy share of the CPUs each may use), and
the generator with the smaller worst distance wins; a tie goes to dnsperf. Both figures stay in
the report either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.model import ServerResult


@dataclass(frozen=True)
class Generator:
    name: str
    qps: str  # the HitRound field with its saturation QPS
    busy: str  # the HitRound field with the server CPU-seconds per second in that run
    cpu_us: str  # the HitRound field with the server CPU µs per query in that run


#: In order of preference when they tie.
GENERATORS: tuple[Generator, ...] = (
    Generator("dnsperf", "sat_qps", "sat_busy", "sat_cpu_us"),
    Generator("loadgen", "lg_qps", "lg_busy", "lg_cpu_us"),
)
BY_NAME = {g.name: g for g in GENERATORS}


@dataclass(frozen=True)
class Choice:
    generator: Generator
    #: Per contender name: its median busy share with that generator (1.0 = all its CPUs).
    busy: dict[str, float]


def busy_share(result: ServerResult, gen: Generator) -> float | None:
    """Median server CPU busy share of the CPUs the server may use, or None if not measured."""
    value = result.median(gen.busy)
    if value is None or math.isnan(value):
        return None
    return value / max(result.cpus, 1)


def measured(result: ServerResult, gen: Generator) -> bool:
    qps = result.median(gen.qps)
    return qps is not None and not math.isnan(qps) and qps > 0 and busy_share(result, gen) is not None


def choose(contenders: Sequence[ServerResult], generators: Sequence[Generator] = GENERATORS) -> Choice | None:
    """The generator that drove every contender closest to 100% busy (None: none measured them all)."""
    best: tuple[float, Choice] | None = None
    for gen in generators:
        if not contenders or not all(measured(r, gen) for r in contenders):
            continue
        shares = {r.name: busy_share(r, gen) or 0.0 for r in contenders}
        worst = max(abs(1.0 - b) for b in shares.values())
        if best is None or worst < best[0]:
            best = (worst, Choice(gen, shares))
    return best[1] if best is not None else None

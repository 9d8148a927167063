"""What the bench sends: the query files, the answer check against the upstream, the cache warm-up."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.message
import dns.query
import dns.rcode

from bench import dnsperf, servers
from bench.servers import Contender

if TYPE_CHECKING:
    from bench.model import Settings


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class QueryFiles:
    hit: Path
    miss: tuple[Path, ...]  # one file of names nobody asked yet per round
    fill: Path
    fill_count: int


def make_query_files(tmp: Path, s: Settings) -> QueryFiles:
    hit = dnsperf.write_queries(
        tmp / "hit.txt", [(f"h{i}.{servers.HIT_ZONE}", "A") for i in range(s.hit_names)]
    )
    miss = tuple(
        dnsperf.write_queries(
            tmp / f"miss{r}.txt", [(f"m{r}x{i}.{servers.MISS_ZONE}", "A") for i in range(s.miss_names)]
        )
        for r in range(s.rounds)
    )
    fill: list[tuple[str, str]] = []
    for i in range(s.fill_per_kind):
        c, d = divmod(i, 256)
        nibbles = ".".join(f"{i:08x}"[::-1])
        fill += [
            (f"f{i}.{servers.FILL_ZONE}", "A"),  # cluster.local success
            (f"n{i}.nx.svc.cluster.local.", "A"),  # cluster.local denial
            (f"{d}.{c % 256}.{c // 256}.18.198.in-addr.arpa.", "PTR"),
            (f"{d}.{c % 256}.{c // 256}.19.198.in-addr.arpa.", "PTR"),
            (f"{nibbles}.d.f.ip6.arpa.", "PTR"),
            (f"{nibbles}.c.f.ip6.arpa.", "PTR"),
            (f"fill{i}.{servers.MISS_ZONE}", "A"),  # . success
            (f"fill{i}.nx.bench.", "A"),  # . denial
        ]
    return QueryFiles(hit, miss, dnsperf.write_queries(tmp / "fill.txt", fill), len(fill))


def sanity_check(contender: Contender, upstream_port: int) -> list[str]:
    """Ask the forwarder and the upstream the same questions; list any difference."""
    questions = [
        (f"h0.{servers.HIT_ZONE}", "A"),
        ("missing.svc.cluster.local.", "A"),
        ("1.0.18.198.in-addr.arpa.", "PTR"),
        ("1.0.19.198.in-addr.arpa.", "PTR"),
        ("1.d.f.ip6.arpa.", "PTR"),
        ("1.c.f.ip6.arpa.", "PTR"),
        (f"sanity.{servers.MISS_ZONE}", "A"),
        ("sanity.nx.bench.", "A"),
    ]
    problems = []
    for name, rtype in questions:
        try:
            want = dns.query.udp(
                dns.message.make_query(name, rtype), "127.0.0.1", port=upstream_port, timeout=2
            )
            got = dns.query.udp(
                dns.message.make_query(name, rtype), "127.0.0.1", port=contender.port, timeout=5
            )
        except Exception as exc:  # a bench keeps going; the report shows what failed
            problems.append(f"{name} {rtype}: {exc!r}")
            continue
        if contender.name == "py-echo":
            continue
        w = (dns.rcode.to_text(want.rcode()), sorted(rr.to_text() for rrs in want.answer for rr in rrs))
        g = (dns.rcode.to_text(got.rcode()), sorted(rr.to_text() for rrs in got.answer for rr in rrs))
        if w != g:
            problems.append(f"{name} {rtype}: upstream {w} vs {contender.name} {g}")
    return problems


def warm(c: Contender, files: QueryFiles, load_cpu: int | None) -> None:
    r = dnsperf.run(c.port, files.hit, duration_s=30, max_runs=1, max_qps=20_000, cpu=load_cpu)
    if r.completed < r.sent or set(r.rcodes) - {"NOERROR"}:
        log(f"  warning: warm-up of {c.name}: {r.completed}/{r.sent} completed, rcodes {r.rcodes}")

"""Cache-hit cost of a block with ``loadbalance`` or ``rewrite`` against a plain one (issue 8).

``python -m bench.transforms [-l SECONDS]``: three nodelocaldns servers (``cache 30`` + ``forward``,
the same plus ``loadbalance``, the same plus a ``rewrite`` rule) in front of one unbound, pinned
like ``bench.run``; each is warmed, then driven at saturation with names whose answers hold four
A records (so loadbalance has something to shuffle). Reported: QPS, server CPU µs per query, and
each block's CPU-per-query ratio to the plain block (target: <= 1.5x). Every run is bounded.

By default the servers run as deployed: hits from the native UDP workers, which shuffle for a
plain ``loadbalance`` themselves (native/lb.c) and serve ``rewrite`` blocks as plain ones (rewrite
sits after the cache). ``--python`` runs all three on the pure-Python path (NODELOCALDNS_NATIVE=0)
for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.ports import free_port
from tests.support.upstreams import unbound_server

from bench import dnsperf
from bench.proc import CpuWatch
from bench.run import cpus, wait_for_quiet
from bench.servers import NODELOCALDNS, Contender, _managed, _pin, _started
from bench.workload import log

ZONE = "multi.svc.cluster.local."
NAMES = 1000
TARGET = 1.5
VARIANTS = {
    "plain": "",
    "loadbalance": "    loadbalance\n",
    "rewrite": "    rewrite name suffix .svc.example.org. .svc.cluster.local. answer auto\n",
}


def corefile(port: int, upstream_port: int, extra: str) -> str:
    return f".:{port} {{\n    bind 127.0.0.1\n    errors\n{extra}    cache 30\n    forward . 127.0.0.1:{upstream_port}\n}}\n"


@contextlib.contextmanager
def nodelocaldns(name: str, extra: str, upstream_port: int, cpu: int | None,
                 python: bool = False) -> Iterator[Contender]:  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    port = free_port()
    (workdir / "Corefile").write_text(corefile(port, upstream_port, extra))
    env = ["env", "NODELOCALDNS_NATIVE=0"] if python else []
    argv = [*_pin(cpu), *env, str(NODELOCALDNS), "serve", "--corefile", str(workdir / "Corefile")]
    with _started(Contender(name, _managed(name, argv, port, workdir, "nodelocaldns.log")), 60) as c:
        yield c


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transforms", description=__doc__.splitlines()[0])
    p.add_argument("-l", type=float, default=10.0, help="seconds per saturation run (default 10)")
    p.add_argument("--python", action="store_true", help="every server on the pure-Python path")
    args = p.parse_args(argv)
    server_cpu, load_cpu = cpus()
    results: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-transforms-")))
        up = stack.enter_context(unbound_server({ZONE: [f"{ZONE} 300 IN A 198.18.5.{i}" for i in range(1, 5)]},
                                                zone_types={ZONE: "redirect"}, log_queries=False,
                                                command_prefix=_pin(load_cpu)))  # fmt: skip
        for name, extra in VARIANTS.items():
            c = stack.enter_context(nodelocaldns(name, extra, up.port, server_cpu, args.python))
            suffix = "svc.example.org." if name == "rewrite" else "svc.cluster.local."
            qfile = dnsperf.write_queries(
                tmp / f"{name}.txt", [(f"h{i}.multi.{suffix}", "A") for i in range(NAMES)]
            )
            # Quiet first, then warm: the measured run must start well within the cache's 30 s.
            wait_for_quiet(server_cpu)
            dnsperf.run(c.port, qfile, duration_s=5, max_runs=1, max_qps=20_000, cpu=load_cpu)  # warm
            with CpuWatch(c.cpu_seconds, server_cpu) as w:
                r = dnsperf.run(c.port, qfile, duration_s=args.l, outstanding=100, clients=4, cpu=load_cpu)
            us = w.server / max(r.completed, 1) * 1e6
            results[name] = (r.qps, us)
            log(f"  {name}: {r.qps:,.0f} qps, {us:.2f} µs/q, lost {r.lost}, rcodes {r.rcodes}, "
                f"other work on the server CPU {w.foreign:.0%}")  # fmt: skip
    base_qps, base_us = results["plain"]
    print(f"hits from the {'pure-Python path' if args.python else 'native workers'}")
    print("| block | hit QPS | CPU µs/query | ×plain (CPU/query) | ×plain (QPS) |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, (qps, us) in results.items():
        ratio = us / base_us
        worst = max(worst, ratio)
        print(f"| {name} | {qps:,.0f} | {us:.2f} | {ratio:.2f}x | {base_qps / qps:.2f}x |")
    print(
        f"{'PASS' if worst <= TARGET else 'FAIL'}  a block with loadbalance or rewrite within {TARGET}x of plain"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

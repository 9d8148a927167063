"""Quick numbers for the native hot path (not part of `make bench`'s pass/fail table).

    .venv/bin/python -m bench.native_micro            # answer() vs the Python fast path, per call
    .venv/bin/python -m bench.native_micro --dnsperf  # + dnsperf -l 10 -Q 200000 against one worker

Both use a cache filled through the real slow path (tests/support/cachefill.py).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import tempfile
import threading
import time

import dns.message
from tests.support.cachefill import STORED, warm
from tests.support.ports import free_port

from nodelocaldns import native
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.server.udp import UDPWorker


def per_call(n: int) -> None:
    w = warm()
    ix = native.new_index(256)
    w.mirror(ix)
    now = STORED + 0.5
    memo = w.router().memo
    data = dns.message.make_query("example.org.", "A").to_wire()
    answer = ix.answer
    ref = fastpath.answer
    hit = ref(data, now, memo, False)
    assert hit is not None and hit[0] == answer(data, now)
    for label, fn in (
        ("python fastpath.answer", lambda: ref(data, now, memo, False)),
        ("native Index.answer", lambda: answer(data, now)),
    ):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        print(f"{label:24s} {n / dt / 1e6:6.2f} M answers/s  {dt / n * 1e9:6.0f} ns/answer")


def run_dnsperf(port: int, seconds: int, qps: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("example.org A\n")
        f.flush()
        cmd = [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            f.name,
            "-l",
            str(seconds),
            "-Q",
            str(qps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    for line in out.splitlines():
        if any(
            k in line for k in ("Queries completed", "Queries lost", "Queries per second", "Average Latency")
        ):
            print("  " + line.strip())


def dnsperf(seconds: int, qps: int, python_too: bool) -> None:
    w = warm()
    shift = time.monotonic() - STORED  # entries stored "now" on the workers' clock
    for m in w.cache.store.maps:
        for e in m.values():
            e.stored += shift
            e.memo_until += shift
    ix = native.new_index(256)
    w.mirror(ix)
    port = free_port("udp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    srv = native.NativeUDP(sock, ix, lambda batch: None)
    print("native worker (1 thread):")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        run_dnsperf(port, seconds, qps)
    finally:
        srv.stop()
        sock.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    c = srv.counters()
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    print(
        f"  process CPU {cpu:.2f} s = {cpu / max(c['hits'], 1) * 1e6:.2f} us/hit (user+sys, mostly syscalls)"
    )
    print("  worker counters:", c)
    if not python_too:
        return
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    port = free_port("udp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    w.listener.clock = time.monotonic  # the entries were shifted onto the real clock above
    py = UDPWorker(w.listener, sock, loop)
    py.start()
    print("python UDPWorker (today's fast path):")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        run_dnsperf(port, seconds, qps)
    finally:
        py.close()
        loop.call_soon_threadsafe(loop.stop)
        t.join(2)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    print(f"  process CPU {cpu:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=300_000)
    p.add_argument("--dnsperf", action="store_true")
    p.add_argument("--python", action="store_true", help="also dnsperf the Python UDPWorker")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--qps", type=int, default=200_000)
    a = p.parse_args()
    if not native.native_available():
        raise SystemExit(f"native path unavailable: {native.native_status()}")
    per_call(a.n)
    if a.dnsperf:
        dnsperf(a.seconds, a.qps, a.python)


if __name__ == "__main__":
    main()

"""Bounded under upstream trouble: broken replies, fd exhaustion, floods of queries that miss the cache.

Every upstream here is a real socket on loopback that misbehaves (support.upstreams); the server is a
real ``nodelocaldns serve`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.plugins.forward.handler import ForwardHandler
from nodelocaldns.plugins.forward.setup import ForwardConfig, Upstream
from nodelocaldns.server.chain import build_chain
from nodelocaldns.server.listener import Block, Listener, Router
from nodelocaldns.server.native_index import NativeIndex
from nodelocaldns.server.native_udp import NativeUDPServer
from nodelocaldns.server.settings import ServerConfig
from nodelocaldns.server.tcp import TCPConnection
from nodelocaldns.server.udp import BEHIND, UDPWorker
from support.forward_e2e import PROBE_BLOCK, metric, wait_metric
from support.load import dnsperf_summary
from support.ports import free_port
from support.server import Served
from support.server import serve as _serve
from support.upstreams import UpstreamServer, bad_reply_server, blackhole_udp

needs_native = pytest.mark.skipif(not native.native_available(), reason=native.native_status())


@contextlib.contextmanager
def serve(text: str, nofile: int | None = None) -> Iterator[Served]:
    with _serve(text + PROBE_BLOCK, nofile=nofile) as s:
        yield s


def corefile(upstream: str, mport: int, forward_opts: str = "", cache: str = "cache 30") -> str:
    opts = f" {{\n        {forward_opts}\n    }}" if forward_opts else ""
    return (
        f".:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n    prometheus 127.0.0.1:{mport}\n    {cache}\n"
        f"    forward . {upstream}{opts}\n}}\n"
    )


@pytest.mark.parametrize("mode", ["truncated", "bad_pointer", "wrong_counts", "rdata_pointer"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_an_upstream_reply_that_does_not_unpack_is_servfail_and_never_cached(mode: str, tcp: bool) -> None:
    mport = free_port("tcp")
    # max_fails 0: no health probes, so every reply the upstream sent answered a client's query.
    with bad_reply_server(mode) as up, serve(corefile(up.address, mport, "max_fails 0")) as s:
        seen = 0
        for _ in range(2):  # the second one reaches the upstream again: nothing was cached
            r = s.query("x.example.", tcp=tcp)
            assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
            assert up.answered > seen
            seen = up.answered
        assert metric(mport, "nodelocaldns_forward_bad_replies_total", to=up.address) == seen
        up.mode = "good"  # the same upstream, now sane: its answer reaches the client and the cache
        assert s.query("x.example.", tcp=tcp).answer
        assert s.query("x.example.", tcp=tcp).answer
        assert up.answered == seen + 1
        log = s.stderr()
    assert "plugin/errors: 2 x.example. A: dns: bad reply from" in log
    assert "panic" not in log and "Traceback" not in log


def test_trailing_bytes_after_the_last_record_are_cut_off() -> None:
    mport = free_port("tcp")
    with bad_reply_server("trailing") as up, serve(corefile(up.address, mport, cache="")) as s:
        q = dns.message.make_query("x.example.", "A", use_edns=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(q.to_wire(), ("127.0.0.1", s.port))
            raw = c.recv(4096)
        r = dns.message.from_wire(raw)  # dnspython rejects trailing junk: this parse is the check
        assert r.answer and not raw.endswith(b"junk")
        assert metric(mport, "nodelocaldns_forward_bad_replies_total", to=up.address) == 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_file_descriptors_is_servfail_and_one_log_line_not_a_panic() -> None:
    """With RLIMIT_NOFILE a little above what an idle server holds, a burst of queries to a
    blackholed upstream runs the process out of descriptors for real."""
    mport = free_port("tcp")
    with blackhole_udp() as hole:
        # Probe once to learn how many descriptors the idle server holds, then cap just above it.
        with serve(corefile(hole.address, mport)) as s:
            idle = _fds(s.proc.pid)
        mport = free_port("tcp")
        with serve(corefile(hole.address, mport, forward_opts="max_fails 0"), nofile=idle + 12) as s:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(6)
                queries = [dns.message.make_query(f"n{i}.flood.example.", "A") for i in range(300)]
                t0 = time.monotonic()
                for q in queries:
                    c.sendto(q.to_wire(), ("127.0.0.1", s.port))
                replies = [dns.message.from_wire(c.recv(4096)) for _ in queries]
                elapsed = time.monotonic() - t0
            rcodes = {r.rcode() for r in replies}
            assert rcodes == {dns.rcode.SERVFAIL}, rcodes
            assert elapsed < 5  # within the forward budget: the starved ones fail at once
            time.sleep(2.5)  # the few that got a socket time out; their descriptors come back
            assert wait_metric(mport, "nodelocaldns_forward_resource_errors_total", 250) >= 250
            assert metric(mport, "coredns_panics_total") == 0
            log = s.stderr()
    assert "panic" not in log and "Traceback" not in log
    lines = [ln for ln in log.splitlines() if "out of resources" in ln]
    assert len(lines) == 1, lines
    assert "socket: too many open files" in lines[0]


# -- a flood of unique names toward a blackholed upstream ---------------------------------------------

FLOOD_QPS = 15_000
FLOOD_S = 20
# The pure-Python receive thread pays a recvfrom and a sendto per packet (~7 and ~11 us measured on
# this shared 2-core machine): 15k QPS needs more than a fair share of a core at its load of 6-8, and
# the kernel drops what the thread cannot read in time. 10k QPS is what it keeps up with here.
PY_FLOOD_QPS = 10_000
PY_FLOOD_S = 10
CACHED = 40  # half with a TTL that runs out during the flood: those need serve_stale


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class _Sampler(threading.Thread):
    """A dnspython client asking for cached names the whole time, one at a time, timing each."""

    def __init__(self, port: int, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.port, self.names = port, names
        self.stop = threading.Event()
        # seconds by kind ("fresh": TTL 300, hits for the native worker or the UDP thread; "stale":
        # expired after 3 s, serve_stale answers them: the native worker, or the chain on the pure-
        # Python path); inf = no answer in 1 s
        self.latencies: dict[str, list[float]] = {"fresh": [], "stale": []}
        self.stale_asked = self.stale_answered = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = self.names[i % len(self.names)]
            i += 1
            q = dns.message.make_query(name, "A")
            t0 = time.monotonic()
            try:
                r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=1.0)
                ok = r.rcode() == dns.rcode.NOERROR and bool(r.answer)
            except dns.exception.Timeout:
                ok = False
            dt = time.monotonic() - t0
            kind = "stale" if name.startswith("short") else "fresh"
            self.latencies[kind].append(dt if ok else float("inf"))
            if kind == "stale":
                self.stale_asked += 1
                self.stale_answered += ok
            time.sleep(max(0.0, 0.005 - dt))


def _udp_drops(port: int) -> int:
    """The kernel's count of datagrams it dropped at our socket on ``port`` (its receive queue
    full): /proc/net/udp's last column, per socket."""
    total = 0
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += int(cols[-1])
    return total


@pytest.mark.slow
@pytest.mark.parametrize("side", [pytest.param("native", marks=needs_native), "python"])
def test_a_flood_of_unique_names_toward_a_blackholed_upstream_stays_bounded(
    make_unbound: Callable[..., UpstreamServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    qps, secs = FLOOD_QPS, FLOOD_S
    if side == "python":
        monkeypatch.setenv("NODELOCALDNS_NATIVE", "0")
        qps, secs = PY_FLOOD_QPS, PY_FLOOD_S
    names = [f"short{i}.cached.test." for i in range(CACHED // 2)] + [
        f"long{i}.cached.test." for i in range(CACHED // 2)
    ]
    records = [f"{n} {3 if n.startswith('short') else 300} IN A 198.18.7.{i}" for i, n in enumerate(names)]
    up = make_unbound({"cached.test.": records}, log_queries=False)
    data = tmp_path / "flood.txt"
    data.write_text("".join(f"u{i}.flood.test. A\n" for i in range(qps * secs + 10_000)))
    mport = free_port("tcp")
    text = (
        # One UDP worker: on this 2-CPU machine a worker per CPU would leave dnsperf and the probe
        # client no core of their own (a node's agent runs under a CPU limit for the same reason).
        f".:{{PORT}} {{\n    bind 127.0.0.1\n    multisocket 1\n    prometheus 127.0.0.1:{mport}\n"
        f"    cache 300 {{\n        serve_stale 1h\n    }}\n    forward . {up.address}\n}}\n"
    )
    with serve(text) as s:
        for n in names:
            assert s.query(n).answer
        time.sleep(1.0)
        idle = _rss_mib(s.proc.pid)
        up.stop()
        with blackhole_udp(port=up.port) as hole:
            sampler = _Sampler(s.port, names)
            sampler.start()
            with open(tmp_path / "dnsperf.out", "w") as out:
                # -b: a 2 MiB receive buffer for dnsperf, whose default (208 KiB) overflowed with
                # bursts of REFUSED on this loaded machine: replies lost at the client, not the server.
                perf = subprocess.Popen(
                    ["dnsperf", "-s", "127.0.0.1", "-p", str(s.port), "-d", str(data), "-c", "8",
                     "-b", "2048", "-q", "60000", "-Q", str(qps), "-l", str(secs), "-t", "6"],
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
                peak = idle
                deadline = time.monotonic() + secs + 15
                while perf.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, _rss_mib(s.proc.pid))
                    time.sleep(0.1)
                if perf.poll() is None:
                    perf.kill()
                perf.wait()
            sampler.stop.set()
            sampler.join(5)
            assert hole.received > 0
        kdrops = _udp_drops(s.port)
        within = {k: sum(1 for x in v if x <= 0.050) / max(len(v), 1) for k, v in sampler.latencies.items()}
        n_lat = {k: len(v) for k, v in sampler.latencies.items()}
        dropped = metric(mport, "nodelocaldns_dns_dropped_requests_total", proto="udp")
        rejects = metric(mport, "coredns_forward_max_concurrent_rejects_total")
        refused = metric(mport, "nodelocaldns_dns_refused_requests_total", proto="udp")
        overflow = metric(mport, "nodelocaldns_dns_receive_queue_drops_total", proto="udp")
        log = s.stderr()
    perf_text = (tmp_path / "dnsperf.out").read_text()
    res = dnsperf_summary(perf_text)
    answered = res.get("SERVFAIL", 0) + res.get("REFUSED", 0)
    figures = (
        f"RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB; within 50 ms: fresh hits {100 * within['fresh']:.2f}% "
        f"of {n_lat['fresh']}, serve_stale {100 * within['stale']:.2f}% of {n_lat['stale']}; stale answered "
        f"{sampler.stale_answered}/{sampler.stale_asked}; dnsperf sent {res['sent']:.0f} lost {res['lost']:.0f} "
        f"SERVFAIL {res.get('SERVFAIL', 0):.0f} REFUSED {res.get('REFUSED', 0):.0f} max latency "
        f"{res['max_latency']:.3f} s; listener refused {refused:.0f} dropped {dropped:.0f}, max_concurrent "
        f"rejects {rejects:.0f}; kernel drops at the server's socket {kdrops} (reported {overflow:.0f})"
    )
    print(figures)
    assert res["sent"] >= 0.9 * qps * secs, figures
    assert peak <= 2 * idle + 20, figures
    # Every uncached query is answered: SERVFAIL (upstream timeout), REFUSED by forward past
    # max_concurrent, or REFUSED at once by the listener (its slow path full: the native worker, or
    # Python at its cap). Before the listener answered, half the flood was dropped here.
    assert set(res) - {"sent", "completed", "lost", "max_latency"} <= {"SERVFAIL", "REFUSED"}, figures
    # Every query the server read is answered: what dnsperf lost is what the kernel dropped before it.
    assert res["lost"] <= kdrops + 0.001 * res["sent"], figures
    assert answered >= 0.999 * (res["sent"] - kdrops), figures
    assert dropped == 0, figures  # dnsperf sends plain queries: every one gets an answer
    # The kernel drops what overflows the socket's 8 MiB queue while nobody reads it, and the listener
    # reports exactly that. 0 in most runs here; 338 to 27,318 (at most 9.1 %) in runs where this VM lost
    # 20-48 % of its CPU time to steal (vmstat): the worker and the loop sat runnable for up to 46 ms of
    # every 50 (/proc schedstat), as did dnsperf. Before the listener answered, half the flood was lost.
    assert kdrops == overflow and kdrops <= 0.15 * res["sent"], figures
    # 5 s of forward budget, plus the wait for the loop behind ServerConfig.udp_waiting new names (dnsperf: -t 6).
    assert res["max_latency"] <= 6.0, figures
    assert rejects > 0 and refused > 0, figures
    # Both are counted; forward's count also has the serve_stale refreshes it turned away.
    low = rejects + refused - sampler.stale_asked - 0.001 * res["sent"]
    assert low <= res.get("REFUSED", 0) <= rejects + refused, figures
    # Fresh cached names are the native worker's, which never waits for Python: 99.8-100 % in time
    # measured; 99.5 % asserted, as the worker still needs a CPU on 2 cores shared with dnsperf,
    # this client and other jobs (load average up to 8). In pure Python they are the UDP thread's,
    # behind the flood in its socket's queue whenever the host descheduled the process: 99.3-100 %
    # measured, 99 % asserted; 97.4-98.0 % before the thread refused for the loop.
    assert n_lat["fresh"] > 20 * secs and within["fresh"] >= (0.995 if side == "native" else 0.99), figures
    # serve_stale answers come from the native worker too (server/native_stale.py), not from the
    # chain on the loop the flood keeps busy: 99.6-100 % within 50 ms measured (the loop's: 95.6-97.9 %
    # in the same conditions, 92-99 % before; before the bounds: 51-69 %), so the same bound as the
    # fresh names. On the pure-Python path the chain answers them: 93-100 % within 50 ms here (CPU
    # share and collector pauses still reach the loop).
    # Every one is answered, unless the kernel dropped it with the flood (1 of 1,726 in a run with 141 drops).
    assert sampler.stale_asked > 20 * secs, figures
    unanswered = sampler.stale_asked - sampler.stale_answered
    assert unanswered == 0 or (kdrops > 0 and unanswered <= 0.01 * sampler.stale_asked), figures
    assert within["stale"] >= (0.995 if side == "native" else 0.90), figures
    assert "panic" not in log and "Traceback" not in log


# -- the listener's slow-path cap, in process (real sockets, real forward, a blackholed upstream) ----


def _listener_on_blackhole(hole_port: int, cap: int) -> tuple[Listener, socket.socket, socket.socket]:
    fwd = ForwardHandler(
        ForwardConfig(
            ".",
            (Upstream("127.0.0.1", hole_port),),
            max_concurrent=0,
            max_fails=0,
            prefer_udp=True,
            read_timeout=0.5,
            timeout=0.5,
        )  # fmt: skip
    )
    port = free_port()
    lst = Listener("127.0.0.1", port, Router({".": Block((".",), build_chain([fwd]))}),
                   config=ServerConfig(slow_path_max=cap))  # fmt: skip
    usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    usock.bind(("127.0.0.1", port))
    tsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tsock.bind(("127.0.0.1", port))
    return lst, usock, tsock


def _queries(n: int, tag: str) -> list[bytes]:
    return [dns.message.make_query(f"{tag}{i}.flood.test.", "A").to_wire() for i in range(n)]


@pytest.mark.parametrize("side", ["python", pytest.param("native", marks=needs_native)])
def test_udp_packets_past_the_slow_path_cap_are_refused_at_once_and_counted(side: str) -> None:
    async def run(hole: Any) -> None:
        lst, usock, tsock = _listener_on_blackhole(hole.port, cap=8)
        tsock.close()
        loop = asyncio.get_running_loop()
        if side == "python":
            udp: Any = UDPWorker(lst, usock, loop)
        else:
            udp = NativeUDPServer(lst, [usock], loop, NativeIndex(lst.router))
        lst.udp = udp
        udp.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.setblocking(False)
                queries = _queries(50, "u")
                for q in queries:
                    c.sendto(q, ("127.0.0.1", lst.port))
                c.sendto(b"\x00\x01\x81\x00" + b"\x00" * 8, ("127.0.0.1", lst.port))  # a response: dropped
                await asyncio.sleep(0.3)
                assert udp.n_handed - udp.n_finished == 8  # waiting on the upstream
                assert hole.received == 8
                assert (lst.refused(), lst.dropped()) == ({"udp": 42}, {"udp": 1})
                got = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        got.append(c.recv(4096))
                # REFUSED at once, byte for byte what forward past max_concurrent gets from the server.
                assert got == [wire.error_reply(q, wire.REFUSED, wire.parse_query(q)) for q in queries[8:]]
                await asyncio.sleep(0.6)  # forward's 0.5 s budget: the 8 get SERVFAIL, room again
                assert udp.n_handed == udp.n_finished
                rcodes = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        rcodes.append(dns.message.from_wire(c.recv(4096)).rcode())
                assert rcodes == [dns.rcode.SERVFAIL] * 8
        finally:
            udp.close()

    with blackhole_udp() as hole:
        asyncio.run(run(hole))


def test_the_python_thread_behind_its_socket_refuses_new_names_itself() -> None:
    """A backlog of new names on the socket: the loop starts fewer than BEHIND of them, the rest are
    answered REFUSED, and every one gets an answer (without the rule all 1000
    went to the chain: the loop's work, holding the GIL the thread needs to read)."""

    async def run(hole: Any) -> None:
        lst, usock, tsock = _listener_on_blackhole(hole.port, cap=4096)
        tsock.close()
        usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        udp = UDPWorker(lst, usock, asyncio.get_running_loop())
        lst.udp = udp
        queries = _queries(1000, "b")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            for q in queries:  # queued before the thread reads: it is behind from the start
                c.sendto(q, ("127.0.0.1", lst.port))
            udp.start()
            try:
                await asyncio.sleep(1.5)  # forward's 0.5 s budget for the ones started
                # None at all when the thread reads BEHIND datagrams before the loop first runs
                # (a fast machine: ~1 ms of reading): the loop then starts none of those it was handed.
                started = hole.received
                assert 0 <= started < min(BEHIND, len(queries) // 2)
                assert lst.refused() == {"udp": 1000 - started} and lst.dropped() == {"udp": 0}
                assert lst.queue_drops() == {"udp": 0}
                c.setblocking(False)
                rcodes: list[int] = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        rcodes.append(dns.message.from_wire(c.recv(4096)).rcode())
                assert sorted(rcodes) == sorted(
                    [dns.rcode.SERVFAIL] * started + [dns.rcode.REFUSED] * (1000 - started)
                )
                assert udp.n_handed == udp.n_finished and not udp.behind
            finally:
                udp.close()

    with blackhole_udp() as hole:
        asyncio.run(run(hole))


def test_datagrams_the_kernel_drops_at_a_full_receive_queue_are_counted() -> None:
    """Datagrams that overflow the socket's queue were never read: only the kernel knows, and the
    listener reports its count (as /proc/net/udp shows it for the same socket)."""
    with blackhole_udp() as hole:
        lst, usock, tsock = _listener_on_blackhole(hole.port, cap=8)
        tsock.close()
        usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's minimum, doubled
        loop = asyncio.new_event_loop()
        try:
            lst.udp = UDPWorker(lst, usock, loop)  # not started: nobody reads
            assert lst.queue_drops() == {"udp": 0}
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                for q in _queries(200, "q"):
                    c.sendto(q, ("127.0.0.1", lst.port))
            kernel = _udp_drops(lst.port)
            assert kernel > 100 and lst.queue_drops() == {"udp": kernel}
        finally:
            usock.close()
            loop.close()


def test_tcp_past_the_slow_path_cap_is_read_later_never_dropped() -> None:
    async def run(hole: Any) -> None:
        lst, usock, tsock = _listener_on_blackhole(hole.port, cap=8)
        usock.close()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(partial(TCPConnection, lst), sock=tsock)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
            queries = _queries(20, "t")
            writer.write(b"".join(struct.pack("!H", len(q)) + q for q in queries))  # pipelined
            await writer.drain()
            await asyncio.sleep(0.3)
            assert (lst.tcp_pending, hole.received) == (8, 8)
            assert [c.paused for c in lst.tcp_conns] == [True]
            rcodes = []
            for _ in queries:  # 8, 8, then 4 at a time, each after forward's 0.5 s budget
                n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
                rcodes.append(dns.message.from_wire(await reader.readexactly(n)).rcode())
            assert rcodes == [dns.rcode.SERVFAIL] * 20 and hole.received == 20
            assert lst.tcp_pending == 0 and not lst.tcp_paused
            writer.close()
        finally:
            server.close()

    with blackhole_udp() as hole:
        asyncio.run(run(hole))


def test_the_serving_process_freezes_what_its_imports_built_and_collects_less_often() -> None:
    """The collector's pauses stop the loop every serve_stale answer waits for (server/process.py)."""
    code = (
        "import gc, json\n"
        "from nodelocaldns.server.process import run_async\n"
        "async def main():\n"
        "    print(json.dumps([gc.get_freeze_count(), gc.get_threshold()[0]]))\n"
        "    return 0\n"
        "raise SystemExit(run_async(main))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    frozen, threshold = json.loads(out.stdout)
    assert frozen > 10_000 and threshold == 10_000

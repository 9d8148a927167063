"""forward's pooled UDP sockets (plugins/forward/udp.py) against real sockets: a real unbound, a
blackhole, and a hand-driven UDP peer that sends stale and spoofed datagrams from the upstream's
own address. Descriptors are counted in /proc (in-process, and in a real serve process)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.plugins.forward import matching, udp
from nodelocaldns.plugins.forward.handler import ForwardHandler
from nodelocaldns.plugins.forward.metrics import ForwardCounters
from nodelocaldns.plugins.forward.setup import ForwardConfig, parse_upstream
from nodelocaldns.server.chain import NoNextPlugin
from support.forward_e2e import ZONES, block, serve
from support.upstreams import Blackhole, UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
NAME = "web.default.svc.cluster.local."


def request(name: str = NAME) -> Request:
    data = dns.message.make_query(name, "A").to_wire()
    return Request(
        data, wire.parse_query(data), ("127.0.0.1", 40000), "udp", 1, "dns://127.0.0.1:53", ".", 0.0
    )


async def no_next(req: Request) -> Reply:
    return Reply(None, wire.SERVFAIL, error=NoNextPlugin())


def handler(up: str, **cfg: Any) -> tuple[ForwardHandler, ForwardCounters]:
    counters = ForwardCounters()
    return ForwardHandler(ForwardConfig(".", (parse_upstream(up),), **cfg), counters), counters


def udp_sockets(pid: int | str = "self") -> set[str]:
    """The socket inodes among a process's descriptors."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def test_sequential_queries_reuse_one_socket(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        h, counters = handler(up.address)
        try:
            for _ in range(5):
                r = await h.serve(request(), no_next)
                assert r.wire is not None and dns.message.from_wire(r.wire).answer
            assert counters.conn_misses == {(up.address, "udp"): 1}
            assert counters.conn_hits == {(up.address, "udp"): 4}
            pool = h.proxies[0]._udp
            assert pool is not None and pool.open_sockets() == 1
        finally:
            h.close()

    asyncio.run(main())


def test_a_burst_opens_at_most_one_socket_per_concurrent_query_and_max_idle_bounds_the_pool(
    make_unbound: MakeUnbound,
) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        h, counters = handler(up.address, max_idle_conns=4)
        try:
            replies = await asyncio.gather(
                *(h.serve(request(f"n{i}.cluster.local."), no_next) for i in range(20))
            )
            assert all(r.rcode == dns.rcode.NXDOMAIN for r in replies)
            misses = counters.conn_misses[(up.address, "udp")]
            assert misses <= 20
            pool = h.proxies[0]._udp
            assert pool is not None and len(pool.idle) == 4 and not pool.busy  # the rest were closed
            for _ in range(8):  # one at a time: the pooled sockets serve them, no new one
                await h.serve(request(), no_next)
            assert counters.conn_misses[(up.address, "udp")] == misses
            assert pool.open_sockets() == 4
        finally:
            h.close()

    asyncio.run(main())


class StalePeer:
    """A UDP 'upstream' on one port. It answers the first query; before answering the second, it
    sends (from the same address, to the same client port) the first reply again, a reply with
    the second query's ID but another question, and one with another ID and the right question."""

    def __init__(self, real: UpstreamServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.real = real
        self.clients: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def ask(self, data: bytes) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(data, self.real.hostport)
            return s.recv(4096)

    def run(self) -> None:
        with self.sock:
            data, addr = self.sock.recvfrom(4096)
            self.clients.append(addr)
            first = self.ask(data)
            self.sock.sendto(first, addr)
            data, addr = self.sock.recvfrom(4096)
            self.clients.append(addr)
            q = dns.message.from_wire(data)
            self.sock.sendto(first, addr)  # stale: the earlier query's ID and question
            other = dns.message.make_query("evil.example.", "A")
            other.id = q.id
            self.sock.sendto(dns.message.make_response(other).to_wire(), addr)  # right ID, wrong question
            wrong_id = dns.message.make_response(q)
            wrong_id.id = (q.id + 1) & 0xFFFF
            self.sock.sendto(wrong_id.to_wire(), addr)  # right question, wrong ID
            self.sock.sendto(self.ask(data), addr)


def test_stale_and_spoofed_replies_on_a_reused_socket_are_ignored(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    peer = StalePeer(up)

    async def main() -> None:
        h, counters = handler(peer.address)
        try:
            r1 = await h.serve(request(), no_next)
            assert r1.wire is not None and dns.message.from_wire(r1.wire).answer
            req = request("api.default.svc.cluster.local.")
            r2 = await h.serve(req, no_next)
            assert r2.wire is not None
            m = dns.message.from_wire(r2.wire)
            assert m.id == req.q.id and str(m.question[0].name) == "api.default.svc.cluster.local."
            assert [str(rr) for rr in m.answer[0]] == ["198.18.1.3"]
            assert counters.conn_hits == {(peer.address, "udp"): 1}
        finally:
            h.close()

    asyncio.run(main())
    peer.thread.join(5)
    assert len(peer.clients) == 2 and peer.clients[0] == peer.clients[1]  # the same socket, reused


class IdlePeer(StalePeer):
    """Answers the first query, then, while nothing is asked, sends a forged answer for the name
    asked next (ID ``FORGED_ID``, address 6.6.6.6) from the upstream's own address; then answers
    the second query truthfully."""

    def run(self) -> None:
        with self.sock:
            data, addr = self.sock.recvfrom(4096)
            self.clients.append(addr)
            self.sock.sendto(self.ask(data), addr)
            forged = dns.message.make_response(dns.message.make_query("api.default.svc.cluster.local.", "A"))
            forged.id = FORGED_ID
            forged.answer.append(
                dns.rrset.from_text("api.default.svc.cluster.local.", 30, "IN", "A", "6.6.6.6")
            )
            self.sock.sendto(forged.to_wire(), addr)
            data, addr = self.sock.recvfrom(4096)
            self.clients.append(addr)
            self.sock.sendto(self.ask(data), addr)


FORGED_ID = 4242


def test_a_datagram_to_an_idle_socket_is_drained_not_kept_for_the_next_query(
    make_unbound: MakeUnbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = make_unbound(ZONES)
    peer = IdlePeer(up)
    # The forger guessed right: the next query's ID is FORGED_ID. Only draining saves it.
    monkeypatch.setattr(matching, "_ids", [FORGED_ID, 1])

    async def main() -> None:
        h, _ = handler(peer.address)
        try:
            await h.serve(request(), no_next)
            pool = h.proxies[0]._udp
            assert pool is not None
            [idle] = pool.idle
            await asyncio.sleep(0.2)  # the forged datagram arrives while the socket is idle
            with pytest.raises(BlockingIOError):
                idle.sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # read and dropped
            r = await h.serve(request("api.default.svc.cluster.local."), no_next)
            assert r.wire is not None
            assert [str(rr) for rr in dns.message.from_wire(r.wire).answer[0]] == ["198.18.1.3"]
        finally:
            h.close()

    asyncio.run(main())
    peer.thread.join(5)
    assert len(peer.clients) == 2 and peer.clients[0] == peer.clients[1]


def test_expire_closes_idle_sockets_and_max_age_retires_old_ones(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        base = udp_sockets()
        h, counters = handler(up.address, expire=0.3)
        try:
            await h.serve(request(), no_next)
            assert len(udp_sockets() - base) == 1
            await asyncio.sleep(0.8)  # the sweep, every `expire`, closes the idle socket
            assert udp_sockets() - base == set()
            assert h.proxies[0]._udp is not None and h.proxies[0]._udp.open_sockets() == 0
        finally:
            h.close()
        clock = [100.0]
        h, counters = handler(up.address, expire=60.0, max_age=60.0)
        h.proxies[0].clock = lambda: clock[0]
        try:
            await h.serve(request(), no_next)
            clock[0] += 30
            await h.serve(request(), no_next)  # idle 30 s < expire, age 30 s < max_age: reused
            clock[0] += 31
            await h.serve(request(), no_next)  # age 61 s > max_age: a fresh socket
            assert counters.conn_hits == {(up.address, "udp"): 1}
            assert counters.conn_misses == {(up.address, "udp"): 2}
        finally:
            h.close()
        assert udp_sockets() - base == set()

    asyncio.run(main())


def test_timeouts_share_one_timer_and_close_their_sockets(udp_blackhole: Blackhole) -> None:
    async def main() -> None:
        base = udp_sockets()
        h, _ = handler(udp_blackhole.address, read_timeout=0.4, timeout=0.4, max_fails=0)
        loop = asyncio.get_running_loop()
        try:
            tasks = [
                asyncio.ensure_future(h.serve(request(f"t{i}.cluster.local."), no_next)) for i in range(50)
            ]
            await asyncio.sleep(0.1)
            pool = h.proxies[0]._udp
            assert pool is not None and len(pool.busy) == 50 and len(pool.deadlines) == 50
            # asyncio's own loop: its timer heap holds one deadline timer, not one per query.
            timers = [t for t in loop._scheduled if not t.cancelled()]  # type: ignore[attr-defined]
            assert len(timers) == 1, timers
            t0 = time.monotonic()
            replies = await asyncio.gather(*tasks)
            assert time.monotonic() - t0 < 1.0
            for r in replies:
                assert r.rcode == wire.SERVFAIL
                local, _, remote = str(r.error).removeprefix("read udp ").partition("->")
                assert local.startswith("127.0.0.1:") and remote == f"{udp_blackhole.address}: i/o timeout"
            assert pool.open_sockets() == 0 and udp_sockets() - base == set()  # timed out: closed
        finally:
            h.close()

    asyncio.run(main())


def test_a_cancelled_query_closes_its_socket(udp_blackhole: Blackhole) -> None:
    async def main() -> None:
        base = udp_sockets()
        h, _ = handler(udp_blackhole.address)
        try:
            t = asyncio.ensure_future(h.serve(request(), no_next))
            await asyncio.sleep(0.05)
            assert len(udp_sockets() - base) == 1
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert udp_sockets() - base == set()
        finally:
            h.close()

    asyncio.run(main())


def test_no_sockets_leak_from_a_burst_in_the_serve_process(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(block(".", f". {up.address} {{\n        expire 1s\n    }}")) as s:
        assert s.query(NAME).answer
        base = udp_sockets(s.proc.pid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.connect(("127.0.0.1", s.port))
            queries = [dns.message.make_query(f"b{i}.cluster.local.", "A") for i in range(200)]
            for q in queries:
                c.send(q.to_wire())
            got = {dns.message.from_wire(c.recv(4096)).id for _ in queries}
        assert got == {q.id for q in queries}
        deadline = time.monotonic() + 5
        while udp_sockets(s.proc.pid) - base and time.monotonic() < deadline:
            time.sleep(0.1)  # idle past `expire`: the sweep closes them
        assert udp_sockets(s.proc.pid) - base == set()


def test_deadlines_of_answered_queries_wake_the_loop_once_per_tick(
    make_unbound: MakeUnbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = make_unbound(ZONES)
    fires = [0]
    real_fire = udp.Deadlines._fire

    def counting(self: udp.Deadlines) -> None:
        fires[0] += 1
        real_fire(self)

    monkeypatch.setattr(udp.Deadlines, "_fire", counting)

    async def main() -> None:
        h, _ = handler(up.address, read_timeout=0.1, timeout=0.1)
        try:
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 0.5:  # answered queries whose deadlines pass meanwhile
                assert (await h.serve(request(), no_next)).wire is not None
                n += 1
            await asyncio.sleep(0.15)  # the last deadlines pass too
            pool = h.proxies[0]._udp
            assert pool is not None and len(pool.deadlines) == 0
            elapsed = time.monotonic() - t0
            assert n > 2 * elapsed / udp._TICK  # far more deadlines than ticks passed
            assert fires[0] <= elapsed / udp._TICK + 2
        finally:
            h.close()

    asyncio.run(main())

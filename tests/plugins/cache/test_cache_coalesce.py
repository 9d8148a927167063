"""Misses for a question already asked upstream wait for that answer instead of asking again.

``nodelocaldns serve`` in front of a real unbound, held back by a delaying relay so the misses overlap;
what reached the upstream is read from unbound's own query log and from the relay's connection count.
The forward here uses ``force_tcp``: those misses take the Python path in every mode (the native
workers' own UDP exchanges do not wait for each other, see docs/configuration.md).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import dns.message
import dns.rcode
from test_cache_unit import SERVER, Upstream, answers, handler, reply, request, rrs, run

from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import UpstreamError
from nodelocaldns.plugins.cache.handler import FOLLOW_WAIT, CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from support.forward_e2e import ZONES, block, metric
from support.ports import free_port
from support.server import serve
from support.upstreams import SlowProxy, UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
NAME = "web.default.svc.cluster.local."
OTHER = "api.default.svc.cluster.local."
N = 20


def _ask_at_once(port: int, names: list[str], timeout: float) -> list[dns.message.Message]:
    """One UDP socket per query, all sent before any answer is read; the answers by query."""
    socks, queries = [], []
    try:
        for name in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.connect(("127.0.0.1", port))
            q = dns.message.make_query(name, "A")
            s.send(q.to_wire())
            socks.append(s)
            queries.append(q)
        replies = [dns.message.from_wire(s.recv(4096)) for s in socks]
    finally:
        for s in socks:
            s.close()
    for q, r in zip(queries, replies, strict=True):
        assert r.id == q.id and r.question[0].name.to_text() == q.question[0].name.to_text()
    return replies


def test_overlapping_misses_for_one_name_ask_the_upstream_once(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy]
) -> None:
    up = make_unbound(ZONES)
    slow = make_slow_proxy(up, FOLLOW_WAIT * 0.6)  # the misses overlap; the leader is back in time
    mport = free_port("tcp")
    text = block(
        ".",
        f". {slow.address} {{\n        force_tcp\n    }}",
        extra=f"cache 30\n    prometheus 127.0.0.1:{mport}",
    )
    with serve(text) as s:
        # serve() asked its probe name until answered: those retries waited for each other too.
        before = {
            n: metric(mport, n) for n in ("nodelocaldns_cache_coalesced_total", "coredns_cache_misses_total")
        }
        # Mixed case: each answer carries its own question's spelling, from the one entry.
        names = [NAME if i % 2 else NAME.upper() for i in range(N)] + [OTHER]
        replies = _ask_at_once(s.port, names, timeout=5)
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in replies)
        assert {r.answer[0].to_text().split()[-1] for r in replies[:N]} == {
            replies[0].answer[0].to_text().split()[-1]
        }
        assert up.query_count(NAME) == 1 and slow.tcp_connections == 2  # one for each name
        assert (
            metric(mport, "nodelocaldns_cache_coalesced_total") - before["nodelocaldns_cache_coalesced_total"]
            == N - 1
        )
        assert metric(mport, "coredns_cache_misses_total") - before["coredns_cache_misses_total"] == N + 1
        assert s.query(NAME, timeout=5).answer and up.query_count(NAME) == 1  # then a plain hit


# -- the handler alone: how a wait ends -------------------------------------------------------


class Gated(Upstream):
    """The next plugin, answering only once ``open`` is set."""

    def __init__(self, answers: dict[tuple[str, int], bytes], failure: BaseException | None = None) -> None:
        super().__init__(answers)
        self.open = asyncio.Event()
        self.failure = failure

    async def __call__(self, req: Request) -> Reply:
        self.calls.append(req)
        await self.open.wait()
        if self.failure is not None:
            return Reply(None, wire.SERVFAIL, "forward", error=self.failure)
        data = self.answers[(req.qname, req.q.qtype)]
        out = req.data[:2] + data[2:]
        return Reply(out, wire.rcode_of(out), "forward")


async def _started(h: CacheHandler, up: Gated, reqs: list[Request]) -> list[asyncio.Task[Reply]]:
    tasks = [asyncio.ensure_future(h.serve(r, up)) for r in reqs]
    await asyncio.sleep(0)
    return tasks


def test_a_failed_exchange_is_every_waiting_querys_failure_without_a_new_attempt() -> None:
    async def main() -> None:
        h, _ = handler()
        err = UpstreamError("read udp 127.0.0.1:1->127.0.0.1:2: i/o timeout")
        up = Gated(answers(), failure=err)
        tasks = await _started(h, up, [request() for _ in range(4)])
        up.open.set()
        replies = await asyncio.gather(*tasks)
        assert len(up.calls) == 1
        assert [(r.wire, r.rcode, r.error) for r in replies] == [(None, wire.SERVFAIL, err)] * 4
        c = h.counters.for_server(SERVER)
        assert (c.misses, c.coalesced) == (4, 3) and not h._leading

    run(main)


def test_an_answer_the_cache_did_not_store_sends_each_waiting_query_upstream_itself() -> None:
    async def main() -> None:
        h, _ = handler(CacheConfig(success_min_ttl=0))  # the default MINTTL would keep a TTL 0 for 5 s
        table = answers()
        table[("example.org.", 1)] = reply(answer=(rrs("example.org.", 0, "A", "192.0.2.1"),))  # TTL 0
        up = Gated(table)
        tasks = await _started(h, up, [request() for _ in range(3)])
        up.open.set()
        replies = await asyncio.gather(*tasks)
        assert len(up.calls) == 3 and all(r.wire and r.plugin == "forward" for r in replies)

    run(main)


def test_a_miss_waits_no_longer_than_follow_wait_then_asks_itself() -> None:
    """A leader that waits on its own followers (a forwarding loop: the loop plugin's probe comes
    back as the same question, and must pass the loop plugin each time) would otherwise never end."""

    async def main() -> None:
        h, _ = handler()
        up = Gated(answers())
        lead, follower = await _started(h, up, [request(), request()])
        await asyncio.sleep(FOLLOW_WAIT / 2)
        assert len(up.calls) == 1
        await asyncio.sleep(FOLLOW_WAIT)
        assert len(up.calls) == 2 and not follower.done()
        (late,) = await _started(h, up, [request()])  # the leader is still out: no wait at all
        assert len(up.calls) == 3
        up.open.set()
        assert all(r.wire for r in await asyncio.gather(lead, follower, late))
        assert h.counters.for_server(SERVER).coalesced == 0 and not h._leading

    run(main)


def test_a_cancelled_leader_or_follower_leaves_the_others_answered() -> None:
    async def main() -> None:
        h, _ = handler()
        up = Gated(answers())
        reqs = [request(), request(), request("ExAmPlE.org.")]
        lead, gone, follower = await _started(h, up, reqs)
        gone.cancel()
        lead.cancel()  # a shutdown: the waiting ones ask for themselves
        await asyncio.sleep(0)
        up.open.set()
        r = await follower
        m = dns.message.from_wire(r.wire or b"")
        assert m.answer and str(m.question[0].name) == "ExAmPlE.org." and m.id == reqs[2].q.id
        assert len(up.calls) == 2 and not h._leading
        assert (await h.serve(request(), up)).plugin == "cache"  # the follower's answer was stored

    run(main)

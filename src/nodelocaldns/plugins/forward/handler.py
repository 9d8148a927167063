"""The ``forward`` plugin in the query path (CoreDNS Forward.ServeDNS)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from nodelocaldns.core.plugin import Next
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.core.zones import in_zones
from nodelocaldns.dns import wire
from nodelocaldns.errors import NoHealthyUpstream, UpstreamError
from nodelocaldns.plugins.forward.metrics import COUNTERS, ForwardCounters
from nodelocaldns.plugins.forward.policy import Policy
from nodelocaldns.plugins.forward.proxy import Proxy
from nodelocaldns.plugins.forward.setup import ForwardConfig


def health_probe(domain: str, no_rec: bool) -> bytes:
    """``<domain> IN NS`` with RD=1 (or RD=0 with no_rec), the CoreDNS health check query."""
    flags = 0 if no_rec else wire.FLAG_RD
    return (
        (0).to_bytes(2, "big")
        + flags.to_bytes(2, "big")
        + b"\x00\x01\x00\x00\x00\x00\x00\x00"
        + (wire.text_to_wire(domain) + b"\x00\x02\x00\x01")
    )


class ForwardHandler:
    name = "forward"

    def __init__(
        self,
        cfg: ForwardConfig,
        counters: ForwardCounters = COUNTERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.counters = counters
        # The clock decides connection reuse (expire); I/O deadlines stay on the event loop's clock,
        # which is the one asyncio's timeouts run on.
        self.proxies = [Proxy(u, cfg.expire, counters, clock) for u in cfg.upstreams]
        self.policy = Policy(cfg.policy)
        self.inflight = 0
        self._from = (wire.text_to_wire(cfg.from_zone),)
        self._except = tuple(wire.text_to_wire(z) for z in cfg.except_zones)
        self._probe = health_probe(cfg.health_domain, cfg.health_no_rec)

    def _applies(self, qname: bytes) -> bool:
        if not in_zones(qname, self._from):
            return False
        if qname == self._from[0]:
            return True
        return not in_zones(qname, self._except)

    async def serve(self, req: Request, next_: Next) -> Reply:
        if not self._applies(req.q.qname):
            return await next_(req)
        cfg = self.cfg
        if cfg.max_concurrent and self.inflight >= cfg.max_concurrent:
            self.counters.max_concurrent_rejects += 1
            return Reply(None, wire.REFUSED, error=UpstreamError("concurrent queries exceeded maximum"))
        self.inflight += 1
        try:
            return await self._forward(req)
        finally:
            self.inflight -= 1

    def _proto(self, req: Request) -> str:
        if self.cfg.force_tcp:
            return "tcp"
        if self.cfg.prefer_udp:
            return "udp"
        return req.proto

    async def _forward(self, req: Request) -> Reply:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout
        question = req.data[wire.HEADER_LEN : req.q.question_end]
        proto = self._proto(req)
        err: BaseException | None = None
        attempts = 0
        max_attempts = 2 * len(self.proxies)
        while loop.time() < deadline and attempts < max_attempts:
            candidates = self.policy.order(self.proxies)
            healthy = [p for p in candidates if not p.down(cfg.max_fails)]
            all_down = not healthy
            if all_down:
                # CoreDNS: "health checking assumed broken", try one at random anyway, once.
                self.counters.healthcheck_broken += 1
                healthy = [random.choice(self.proxies)]
            for p in healthy:
                remaining = deadline - loop.time()
                if remaining <= 0 or attempts >= max_attempts:
                    break
                attempts += 1
                t0 = time.perf_counter()
                try:
                    reply = await p.exchange(
                        req.data, question, proto, min(cfg.read_timeout, remaining), req.q.udp_size
                    )
                    if proto == "udp" and reply[2] & 0x02 and cfg.prefer_udp:
                        reply = await p.exchange(
                            req.data, question, "tcp", min(cfg.read_timeout, remaining), 0
                        )
                except UpstreamError as e:
                    err = e
                    if cfg.max_fails != 0:
                        p.start_health_check(self._probe, "tcp" if cfg.force_tcp else "udp", cfg.health_check)
                    continue
                rc = wire.rcode_of(reply)
                self.counters.observe(p.addr, wire.RCODE_NAMES.get(rc, str(rc)), time.perf_counter() - t0)
                return Reply(reply, rc, self.name)
            if all_down:
                break  # as Forward.ServeDNS: with every upstream down, one attempt per query
        if err is None:
            err = NoHealthyUpstream("no healthy proxies")
        return Reply(None, wire.SERVFAIL, error=err)

    def close(self) -> None:
        for p in self.proxies:
            p.close()

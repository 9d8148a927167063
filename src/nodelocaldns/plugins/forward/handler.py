"""The ``forward`` plugin in the query path (CoreDNS Forward.ServeDNS)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from nodelocaldns.core.plugin import NativeExchange, Next
from nodelocaldns.core.ratelimit import RateLimiter
from nodelocaldns.core.request import Exchanged, Reply, Request
from nodelocaldns.core.zones import in_zones
from nodelocaldns.dns import wire
from nodelocaldns.errors import NoHealthyUpstream, ResourceExhausted, UpstreamError, WireError
from nodelocaldns.plugins.forward.metrics import COUNTERS, ForwardCounters
from nodelocaldns.plugins.forward.policy import Policy
from nodelocaldns.plugins.forward.proxy import Proxy
from nodelocaldns.plugins.forward.setup import ForwardConfig

log = logging.getLogger("nodelocaldns.forward")
_POLICIES = {"random": 0, "round_robin": 1, "sequential": 2}  # as native/README.md numbers them


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
        self.proxies = [
            Proxy(u, cfg.expire, counters, clock, max_age=cfg.max_age, max_idle_conns=cfg.max_idle_conns,
                  tls_context=cfg.tls_context, tls_servername=cfg.tls_servername)
            for u in cfg.upstreams
        ]  # fmt: skip
        # ``next`` hands a reply on only to a following ``forward`` of the block (CoreDNS setup.go
        # chains them); the last one's next is another plugin, and there ``next`` is ignored.
        self.next_is_forward = False
        self.policy = Policy(cfg.policy)
        self.clock = clock
        self.inflight = 0
        # Out of descriptors under a flood, every query fails the same way: one line per window.
        self.limiter = RateLimiter(burst=1, window=10.0)
        self._too_many = UpstreamError(f"concurrent queries exceeded maximum {cfg.max_concurrent}")
        self._from = (wire.text_to_wire(cfg.from_zone),)
        self._except = tuple(wire.text_to_wire(z) for z in cfg.except_zones)
        self._probe = health_probe(cfg.health_domain, cfg.health_no_rec)
        self.on_exchange: Callable[[], None] | None = None  # told when native_exchange's answer moves
        self._down = tuple(False for _ in self.proxies)
        for p in self.proxies:
            p.on_health = self._health_moved

    def _health_moved(self) -> None:
        down = tuple(p.down(self.cfg.max_fails) for p in self.proxies)
        if down != self._down:
            self._down = down
            if self.on_exchange is not None:
                self.on_exchange()

    def native_exchange(self, zone: str) -> NativeExchange | None:
        """The plain exchange a native worker may do for every name of ``zone`` (core.plugin):
        UDP only, each name ours (no ``except``, FROM covers the zone), nothing but the upstreams'
        replies in play (no ``next``). Failover rcodes, prefer_udp's TC retry and every failure
        are this handler's, as its first attempt (Request.pre). Only the upstreams up now, in order;
        none up: None, so forward's own "health checking assumed broken" try runs."""
        cfg = self.cfg
        if cfg.force_tcp or cfg.except_zones or cfg.next_rcodes or any(u.tls for u in cfg.upstreams):
            return None
        if not in_zones(wire.text_to_wire(zone), self._from):
            return None
        ups = tuple((p, p.up.host, p.up.port) for p in self.proxies if not p.down(cfg.max_fails))
        if not ups:
            return None
        expire = min(cfg.expire, cfg.max_age) if cfg.max_age > 0 else cfg.expire
        return NativeExchange(ups, _POLICIES[cfg.policy], cfg.read_timeout, expire, cfg.max_concurrent)

    def _applies(self, qname: bytes) -> bool:
        if not in_zones(qname, self._from):
            return False
        if qname == self._from[0] or not self._except:
            return True
        return not in_zones(qname, self._except)

    async def serve(self, req: Request, next_: Next) -> Reply:
        if not self._applies(req.q.qname):
            return await next_(req)
        cfg = self.cfg
        if cfg.max_concurrent and self.inflight >= cfg.max_concurrent:
            self.counters.max_concurrent_rejects += 1
            return Reply(None, wire.REFUSED, error=self._too_many)
        self.inflight += 1
        try:
            return await self._forward(req, next_)
        finally:
            self.inflight -= 1

    def settle(self, req: Request) -> Reply | None:
        """``serve`` for a native exchange's reply that ends it at once (``_answered``), run
        without the chain (Runtime.settle_exchanged); None: ``serve`` runs (nothing counted)."""
        got = req.pre
        if got is None or got.reply is None or not self._applies(req.q.qname):
            return None
        if self.cfg.max_concurrent and self.inflight >= self.cfg.max_concurrent:
            return None  # serve refuses it, and counts that
        return self._answered(req, got, got.reply)

    def _proto(self, req: Request) -> str:
        if self.cfg.force_tcp:
            return "tcp"
        if self.cfg.prefer_udp:
            return "udp"
        return req.proto

    async def _forward(self, req: Request, next_: Next) -> Reply:
        """CoreDNS Forward.ServeDNS's loop: walk the policy's list, skipping upstreams that are down."""
        got = req.pre  # a native worker's exchange: the first attempt, already made
        if got is not None and got.reply is not None:
            done = self._answered(req, got, got.reply)
            if done is not None:
                return done
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        # The budget runs from when the query arrived: a native attempt already spent some of it.
        deadline = loop.time() + cfg.timeout - (got.seconds if got is not None else 0.0)
        question = req.data[wire.HEADER_LEN : req.q.question_end]
        proto = self._proto(req)
        proxies = self.policy.order(self.proxies)
        if got is not None:
            if got.upstream in proxies and proto == "udp":
                proxies.remove(got.upstream)
                proxies.insert(0, got.upstream)
            else:  # not one of ours (a reload replaced the block): ask as usual
                got = None
        n = len(proxies)
        max_attempts = 2 * n  # CoreDNS's default max_connect_attempts: two passes
        attempts = fails = failovers = i = 0
        err: BaseException | None = None
        while loop.time() < deadline and attempts < max_attempts:
            if i >= n:
                i = fails = 0
            p = proxies[i]
            i += 1
            if got is not None and p is got.upstream:
                pass  # its answer is in hand, whatever its health is now
            elif p.down(cfg.max_fails):
                fails += 1
                if fails < n:
                    continue
                self.counters.healthcheck_broken += 1
                if cfg.failfast:
                    break
                # CoreDNS: "health checking assumed broken", try one at random anyway.
                p = random.choice(self.proxies)
            remaining = deadline - loop.time()
            t0 = time.perf_counter()
            try:
                if got is not None and p is got.upstream:
                    first, got = got, None  # used once, whatever it holds
                    t0 -= first.seconds
                    reply, body, recs = p.exchanged(req.data, first)
                else:
                    reply, body, recs = await p.exchange(
                        req.data, question, proto, min(cfg.read_timeout, remaining), req.q.udp_size
                    )
                if proto == "udp" and reply[2] & 0x02 and cfg.prefer_udp:
                    reply, body, recs = await p.exchange(
                        req.data, question, "tcp", min(cfg.read_timeout, remaining), 0
                    )
            except ResourceExhausted as e:
                # Ours, not the upstream's: no health check (its probe would need a socket too),
                # no other upstream (same shortage); fail now and free what this query holds.
                self._exhausted(e)
                return Reply(None, wire.SERVFAIL, error=e)
            except UpstreamError as e:
                err = e
                if cfg.max_fails != 0:
                    p.start_health_check(self._probe, "tcp" if cfg.force_tcp else "udp", cfg.health_check)
                attempts += 1
                if fails < n:
                    continue
                break  # every upstream down: one attempt per query
            rc = wire.rcode_of(reply)
            name = wire.RCODE_NAMES.get(rc)  # str(rc) only for an rcode without a name
            self.counters.observe(p.addr, str(rc) if name is None else name, time.perf_counter() - t0)
            if rc in cfg.failover_rcodes:
                failovers += 1
                if failovers < n:
                    continue  # the next upstream; after the last one its reply stands
            if rc in cfg.next_rcodes and self.next_is_forward:
                return await next_(req)
            return Reply(reply, rc, self.name, scan=(reply, body, recs))
        if err is None:
            err = NoHealthyUpstream("no healthy proxies")
        return Reply(None, wire.SERVFAIL, error=err)

    def _answered(self, req: Request, got: Exchanged, raw: bytes) -> Reply | None:
        """The common native exchange in one step: a reply that unpacks and ends the loop below
        at once (no failover rcode, no TC retry, no ``next``), with the loop's every effect.
        None: the loop decides, from the start (nothing here has counted anything yet)."""
        cfg = self.cfg
        p = got.upstream
        if not isinstance(p, Proxy) or p not in self.proxies:
            return None
        if cfg.force_tcp or (not cfg.prefer_udp and req.proto != "udp"):  # _proto(req) != "udp"
            return None
        try:
            reply, body, recs = wire.scan_reply(raw, req.data[wire.HEADER_LEN : req.q.question_end])
        except WireError:
            return None  # the loop counts it a bad reply
        rc = wire.rcode_of(reply)
        if rc in cfg.failover_rcodes or rc in cfg.next_rcodes or (reply[2] & 0x02 and cfg.prefer_udp):
            return None
        self.policy.skip(len(self.proxies))
        self.counters.conn_cache(p.addr, "udp", hit=True)
        name = wire.RCODE_NAMES.get(rc)
        self.counters.observe(p.addr, str(rc) if name is None else name, got.seconds)
        head = req.data[:2]
        if not reply.startswith(head):  # the worker restores the client's ID: no copy then
            reply = head + reply[2:]
        return Reply(reply, rc, self.name, scan=(reply, body, recs))

    def _exhausted(self, e: ResourceExhausted) -> None:
        self.counters.resource_errors += 1
        ok, suppressed = self.limiter.allow("exhausted", self.clock())
        if suppressed:
            log.error("[ERROR] plugin/forward: %d more queries failed for lack of resources", suppressed)
        if ok:
            log.error("[ERROR] plugin/forward: out of resources, answering SERVFAIL: %s", e)

    def close(self) -> None:
        for p in self.proxies:
            p.close()

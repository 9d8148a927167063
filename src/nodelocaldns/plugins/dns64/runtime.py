"""dns64 in the query path: AAAA synthesised from A answers (CoreDNS plugin/dns64/dns64.go).

dns64 sits before cache, so the AAAA it inspects may be a cached one and its A lookup goes through
the rest of the chain (cache, then forward): both answers are cached, the synthesised reply is not.
The cache's fast path never answers AAAA in a dns64 block (``fast_path_skips``): it would send the
cached AAAA answer the chain would have replaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from nodelocaldns.core.plugin import Next, Runtime
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.dns.message import TYPE_AAAA
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.dns64 import synth
from nodelocaldns.plugins.dns64.metrics import DNS64Counters
from nodelocaldns.plugins.dns64.setup import DNS64Config

log = logging.getLogger("nodelocaldns")


class DNS64Handler:
    name = "dns64"

    def __init__(self, cfg: DNS64Config, counters: DNS64Counters, wall: Callable[[], float]) -> None:
        self.cfg = cfg
        self.counters = counters
        self.wall = wall  # RRSIG validity is wall-clock time

    async def serve(self, req: Request, next_: Next) -> Reply:
        if not synth.intercepts(self.cfg, req.q, req.family):
            return await next_(req)
        reply = await next_(req)
        if reply.wire is None:
            return reply
        try:
            if not synth.should_translate(self.cfg, reply.wire, self.wall()):
                return reply
            data = synth.a_query(req.data, req.q)
            q = wire.parse_query(data)
        except WireError:
            return reply
        # CoreDNS's upstream.Lookup writes to no client: nothing truncates the A answer (as cache refresh).
        a_req = Request(data, q, req.remote, "tcp", req.family, req.server, req.zone, req.start, True)
        a_reply = await next_(a_req)
        try:
            out = synth.synthesize(self.cfg, req.data, req.q, reply.wire, a_reply.wire)
        except WireError:
            return Reply(None, wire.SERVFAIL, "dns64")
        self.counters.count(req.server)
        return Reply(out, wire.NOERROR, "dns64")


class DNS64Runtime(Runtime):
    fast_path_skips = frozenset({TYPE_AAAA})

    def __init__(self, cfg: DNS64Config, wall: Callable[[], float] = time.time) -> None:
        for w in cfg.warnings:
            log.warning("[WARNING] plugin/dns64: %s", w)
        self.counters = DNS64Counters()
        self.handler = DNS64Handler(cfg, self.counters, wall)
        self.handlers = (self.handler,)

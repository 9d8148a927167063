"""rewrite in the query path (CoreDNS plugin/rewrite rewrite.go ``ServeDNS``).

rewrite sits after cache (plugin.cfg): the rest of the chain (forward) sees the rewritten query,
the reply is reverted before the cache stores it, so the cache keeps the client's question and the
fast path needs nothing from this plugin. ``cname`` rules resolve their new target through the
rest of the chain, as CoreDNS's ``upstream.Lookup`` does through the server.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import struct

from nodelocaldns.core.hostport import split_hostport
from nodelocaldns.core.plugin import Next
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.rewrite.engine import RewriteFailed, rewrite_query
from nodelocaldns.plugins.rewrite.rules import Peer
from nodelocaldns.plugins.rewrite.setup import RewriteConfig

log = logging.getLogger("nodelocaldns")
_Q = struct.Struct("!HHHHHH")


def peer_of(req: Request) -> Peer:
    """Client and listener addresses, for ``edns0`` variables and ``subnet``."""
    host, port = split_hostport(req.server.removeprefix("dns://"), 53)
    return Peer(req.remote[0], req.remote[1], host, port, req.proto)


def lookup_query(name: str, qtype: int) -> bytes:
    return (
        _Q.pack(random.getrandbits(16), wire.FLAG_RD, 1, 0, 0, 0)
        + wire.text_to_wire(name)
        + struct.pack("!HH", qtype, wire.CLASS_IN)
    )


class RewriteHandler:
    name = "rewrite"

    def __init__(self, cfg: RewriteConfig) -> None:
        self.cfg = cfg

    async def serve(self, req: Request, next_: Next) -> Reply:
        try:
            data, reverter = rewrite_query(self.cfg, req.data, peer_of(req))
        except RewriteFailed as e:
            log.debug("plugin/rewrite: %s", e)
            return Reply(None, wire.SERVFAIL, "rewrite", e)
        except WireError:
            return await next_(req)  # nothing a rule could read: passed on as it came
        if data is not req.data:
            try:
                q = wire.parse_query(data)
            except WireError as e:
                return Reply(None, wire.SERVFAIL, "rewrite", e)
            req = dataclasses.replace(req, data=data, q=q, key=b"", _qname_text=None)
        reply = await next_(req)
        if reply.wire is None or not reverter.active:
            return reply
        try:
            lookups = {}
            for name, qtype in reverter.cname_lookups(reply.wire):
                lq = lookup_query(name, qtype)
                sub = Request(lq, wire.parse_query(lq), req.remote, "tcp", req.family, req.server, req.zone,
                              req.start, True)  # fmt: skip
                got = await next_(sub)
                if got.wire is not None:
                    lookups[(name, qtype)] = got.wire
            out = reverter.revert(reply.wire, lookups)
        except WireError as e:  # a reply the client's question cannot be put back into
            return Reply(None, wire.SERVFAIL, reply.plugin, e)
        # Not final: a reverted name may be longer, so the server fits it to the client again.
        return Reply(out, wire.rcode_of(out), reply.plugin, reply.error)

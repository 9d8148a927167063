"""``bufsize [SIZE]``: lower the EDNS0 UDP size of queries to SIZE (default 1232)."""

from __future__ import annotations

import dataclasses
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Next, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.bufsize import clamp, setup


class BufsizeHandler:
    name = "bufsize"

    def __init__(self, size: int) -> None:
        self.size = size

    async def serve(self, req: Request, next_: Next) -> Reply:
        data, q = clamp.clamp(req.data, req.q, self.size)
        if data is req.data:
            return await next_(req)
        # CoreDNS edits the request in place: everything after sees (and the reply echoes) the size.
        low = dataclasses.replace(req, data=data, q=q)
        reply = await next_(low)
        if reply.wire is None or reply.final:
            return reply
        try:  # what the server would do with the reply, for the request as bufsize left it
            out = wire.truncate(wire.strip_opt(reply.wire), low.size_limit, wire.client_opt(q))
        except WireError:
            return Reply(None, wire.SERVFAIL, reply.plugin, reply.error)
        return Reply(out, reply.rcode, reply.plugin, reply.error, final=True)


class BufsizeRuntime(Runtime):
    def __init__(self, size: int) -> None:
        self.handlers = (BufsizeHandler(size),)
        # The cache's fast path echoes and fits to this size, as the chain would (core.plugin).
        self.fast_path_udp_max = size


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return BufsizeRuntime(cfgs[0])  # CoreDNS uses the first bufsize and ignores repeats


PLUGIN = register(Plugin("bufsize", setup.parse, _factory, repeatable=True))

"""The ``template`` plugin: answers built from Go templates for queries matching a regex.

Every ``template`` directive of a block is one template of a single handler (CoreDNS builds one
handler from all of them, tried in Corefile order). A CNAME answered to an A/AAAA query is followed
the way CoreDNS's ``upstream.Lookup`` does it, by asking the chain again for the target with the
client's EDNS settings; here "the chain" is the rest of this block's chain (the plugins after
template: hosts, forward...), see docs/compatibility.md.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from prometheus_client.core import CounterMetricFamily

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Next, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.corefile.model import Directive
from nodelocaldns.dns import wire
from nodelocaldns.plugins.template import metrics, setup
from nodelocaldns.plugins.template.gofuncs import TemplateExecError

# The engine (with the message codec it answers through, ~0.6 MiB with dnspython's rdata types)
# loads with the first template handler: a server without a ``template`` never pays for it.

COUNTERS = metrics.TemplateCounters()  # process-wide, as CoreDNS's promauto counters are
_EDE = 15  # EDNS option code of an Extended DNS Error (RFC 8914)


def _parse(d: Directive) -> setup.TemplateRule:
    # No ZONE arguments: the block's zones, filled in by the factory (a parse sees one directive).
    return setup.parse(d, server_zones=())


class TemplateHandler:
    name = "template"

    def __init__(self, cfg: setup.TemplateConfig) -> None:
        from nodelocaldns.plugins.template import engine

        self.cfg = cfg
        self.engine = engine

    async def serve(self, req: Request, next_: Next) -> Reply:
        engine = self.engine
        result = engine.resolve(self.cfg, req.data, req.remote[0], server=req.server, counters=COUNTERS)
        if result is None:
            return await next_(req)
        if not result.written:
            err = TemplateExecError(result.error) if result.error else None
            return Reply(None, result.rcode, "template", error=err)
        upstream: dict[str, bytes] = {}
        for target in dict.fromkeys(result.cname_targets):
            up = await next_(_lookup(req, target))
            if up.wire is not None:
                upstream[target] = up.wire
        out = engine.reply_wire(req.data, result, upstream)
        if result.ederror is None:
            return Reply(out, result.rcode, "template")
        return Reply(
            _with_ede(out, req, result.ederror, engine.EDE_UDP_SIZE), result.rcode, "template", final=True
        )


def _lookup(req: Request, target: str) -> Request:
    """The query CoreDNS's ``state.NewWithQuestion`` makes: same header and EDNS, a new question."""
    opt = wire.client_opt(req.q)
    flags = struct.unpack_from("!H", req.data, 2)[0]
    data = (
        struct.pack("!HHHHHH", req.q.id, flags, 1, 0, 0, 1 if opt else 0)
        + wire.text_to_wire(target)
        + struct.pack("!HH", req.q.qtype, wire.CLASS_IN)
        + opt
    )
    return Request(data, wire.parse_query(data), req.remote, req.proto, req.family, req.server, req.zone,
                   req.start)  # fmt: skip


def _with_ede(reply: bytes, req: Request, ede: tuple[int, str], default_size: int) -> bytes:
    """The reply as CoreDNS's server writes it: the template's OPT (4096, DO) carrying the EDE option,
    its size and DO bit taken from the client's OPT when there is one (``request.SizeAndDo``)."""
    code, text = ede
    option = struct.pack("!HHH", _EDE, 2 + len(text.encode()), code) + text.encode()
    size, do = (req.q.udp_size, req.q.do) if req.q.edns else (default_size, True)
    opt = b"\x00\x00\x29" + struct.pack("!HIH", min(size, 65535), 0x8000 if do else 0, len(option)) + option
    return wire.truncate(wire.strip_opt(reply), req.size_limit, opt)


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    rules = tuple(r if r.zones else dataclasses.replace(r, zones=block.zones) for r in cfgs)
    return Handlers(TemplateHandler(setup.TemplateConfig(rules)))


def collect(host: Host) -> list[Any]:
    """``coredns_template_matches_total`` and the two failure counters (CoreDNS's labels)."""
    out: list[Any] = []
    for fam, samples in COUNTERS.families():
        f = CounterMetricFamily(fam.name.removesuffix("_total"), fam.help, labels=list(fam.labels))
        for labels, n in sorted(samples.items()):
            f.add_metric(list(labels), n)
        out.append(f)
    return out


# After cache: a template's answer is cached, so a cached answer may be sent without running it.
PLUGIN = register(Plugin("template", _parse, _factory, repeatable=True, collector=collect))

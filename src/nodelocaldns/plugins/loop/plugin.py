"""``loop``: detect a forwarding loop at startup with an HINFO self-probe (CoreDNS plugin/loop).

At startup the block sends ``HINFO <random>.<random>.<zone>`` to its own first listen address. If
that name comes back through the chain more than twice, queries are looping (typically resolv.conf
points at ourselves), and the process exits non-zero with CoreDNS's message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from nodelocaldns.core.plugin import Next
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.corefile.model import Directive
from nodelocaldns.dns import wire

log = logging.getLogger("nodelocaldns")


def parse(d: Directive) -> None:
    if d.args or d.block:
        raise d.error("loop takes no arguments")


class LoopHandler:
    name = "loop"

    def __init__(self, zone: str, on_fatal: Callable[[str], None]) -> None:
        self.zone = zone
        suffix = "" if zone == "." else zone
        self.qname = f"{secrets.randbits(62)}.{secrets.randbits(62)}.{suffix}"
        self._wire = wire.text_to_wire(self.qname)
        self.enabled = True
        self.seen = 0
        self.on_fatal = on_fatal
        self.target = ""

    async def serve(self, req: Request, next_: Next) -> Reply:
        if self.enabled and req.q.qtype == wire.TYPE_HINFO and req.q.qname == self._wire:
            self.seen += 1
            if self.seen > 2:
                self.on_fatal(
                    f'[FATAL] plugin/loop: Loop ({_addr(req.remote)} -> {self.target}) detected for zone "{self.zone}", '
                    f'see https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO {self.qname}"'
                )
        return await next_(req)

    def probe_query(self) -> bytes:
        qid = secrets.randbits(16)
        return (
            qid.to_bytes(2, "big")
            + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
            + self._wire
            + b"\x00\x0d\x00\x01"
        )

    async def run_probe(self, host: str, port: int, budget: float = 30.0) -> None:
        """Send the probe until one exchange returns (any answer), then disable detection."""
        self.target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while self.enabled and loop.time() < deadline:
            try:
                await _udp_exchange(host, port, self.probe_query(), 2.0)
                break
            except (OSError, TimeoutError):
                self.seen = 0
                await asyncio.sleep(1.0)
        self.enabled = False


def _addr(remote: tuple[str, int]) -> str:
    h, p = remote
    return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"


async def _udp_exchange(host: str, port: int, msg: bytes, timeout: float) -> bytes:
    import socket

    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect((host, port))
        s.send(msg)
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(s, 65535)

"""The cache end-to-end tests' shared pieces: the upstream's zones, the Corefile around a cache directive, TTL reading."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from support.upstreams import UpstreamServer

BIG = [f'big.cluster.local. 30 IN TXT "{i:03d}{"y" * 100}"' for i in range(40)]


ZONES: dict[str, list[str]] = {
    "cluster.local.": [
        "web.default.svc.cluster.local. 30 IN A 198.18.1.1",
        "web.default.svc.cluster.local. 30 IN A 198.18.1.2",
        "api.default.svc.cluster.local. 30 IN A 198.18.1.3",
        "short.cluster.local. 2 IN A 198.18.1.4",
        "long.cluster.local. 300 IN A 198.18.1.5",
        "a.sub.cluster.local. 30 IN A 198.18.1.6",
        "b.keep.cluster.local. 30 IN A 198.18.1.7",
        "t.cluster.local. 30 IN HTTPS 1 . alpn=h2",
        "t.cluster.local. 30 IN TYPE97 \\# 4 01020304",
        "alias.cluster.local. 300 IN CNAME elsewhere.test.",  # unbound answers the CNAME alone
        *BIG,
    ],
    "wild.test.": ["wild.test. 30 IN A 198.18.2.1"],
}


def corefile(cache: str, up: UpstreamServer, metrics: int | None = None, zone: str = ".") -> str:
    prom = f"prometheus 127.0.0.1:{metrics}" if metrics else ""
    return f"""
{zone}:{{PORT}} {{
    bind 127.0.0.1
    {cache}
    forward . {up.address}
    {prom}
}}
"""


def ttl_of(m: dns.message.Message) -> int:
    return m.answer[0].ttl

"""loadbalance end to end: cached answers from ``nodelocaldns serve`` come back in changing order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dns.rdatatype

from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
ADDRS = [f"198.18.3.{i}" for i in range(1, 5)]
ZONES = {
    "cluster.local.": [
        *[f"svc.cluster.local. 30 IN A {a}" for a in ADDRS],
        "cn.cluster.local. 30 IN CNAME svc.cluster.local.",
    ]
}


def corefile(lb: str, up: UpstreamServer) -> str:
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    {lb}\n    cache 30\n    forward . {up.address}\n}}\n"


def test_round_robin_shuffles_cached_answers_cname_first(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(corefile("loadbalance", up)) as s:
        orders = set()
        for _ in range(30):
            r = s.query("svc.cluster.local.")
            orders.add(tuple(rr.address for rrs in r.answer for rr in rrs))
            c = s.query("cn.cluster.local.", tcp=True)
            assert c.answer[0].rdtype == dns.rdatatype.CNAME  # the chain before the addresses
        assert up.query_count("svc.cluster.local.", "A") == 1  # every other answer was a cache hit
        assert len(orders) > 3 and all(sorted(o) == ADDRS for o in orders)


def test_weighted_puts_the_heavy_address_first(make_unbound: MakeUnbound, tmp_path: Path) -> None:
    up = make_unbound(ZONES)
    weights = tmp_path / "weights"
    weights.write_text("svc.cluster.local\n198.18.3.3 255\n198.18.3.1 1\n198.18.3.2 1\n198.18.3.4 1\n")
    with serve(corefile(f"loadbalance weighted {weights} {{\n        reload 0\n    }}", up)) as s:
        firsts = [next(iter(s.query("svc.cluster.local.").answer[0])).address for _ in range(40)]
        assert firsts.count("198.18.3.3") >= 30  # 255/258 of the time


def test_missing_weight_file_without_reload_fails_the_start(tmp_path: Path) -> None:
    text = (
        ".:{PORT} {\n    bind 127.0.0.1\n    loadbalance weighted "
        + str(tmp_path / "none")
        + " {\n        reload 0\n    }\n}\n"
    )
    with serve(text, wait=False) as s:
        assert s.proc.wait(20) != 0
        assert "cannot open weight file" in s.stderr()

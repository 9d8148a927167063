"""Every Corefile in CoreDNS's loadbalance README parses; the round_robin one runs (upstream on loopback)."""

from __future__ import annotations

from collections.abc import Callable

from nodelocaldns.plugins.loadbalance import setup
from nodelocaldns.plugins.loadbalance.weights import parse_weights
from support.directives import directives_in
from support.server import serve
from support.upstreams import UpstreamServer

ROUND_ROBIN = ". {\n    loadbalance round_robin\n    forward . 8.8.8.8 8.8.4.4\n}\n"
WEIGHTED = """example.com {
        file ./db.example.com {
                reload 10s
        }
        loadbalance weighted ./db.example.com.weights {
                    reload 10s
        }
}
"""
WEIGHT_FILE = "www.example.com\n100.64.1.1 3\n100.64.1.2 1\n100.64.1.3 2\n"


def test_every_example_parses() -> None:
    (rr,) = [setup.parse(d) for d in directives_in(ROUND_ROBIN, "loadbalance")]
    assert rr == setup.LoadBalanceConfig()
    (w,) = [setup.parse(d) for d in directives_in(WEIGHTED, "loadbalance")]
    assert (w.policy, w.weight_file, w.reload) == ("weighted", "./db.example.com.weights", 10.0)
    assert parse_weights(WEIGHT_FILE, "db.example.com.weights")["www.example.com."][0][1] == 3


def test_round_robin_example_runs(make_unbound: Callable[..., UpstreamServer]) -> None:
    up = make_unbound({"example.org.": [f"www.example.org. 30 IN A 198.18.4.{i}" for i in range(1, 4)]})
    text = ROUND_ROBIN.replace(". {", ".:{PORT} {\n    bind 127.0.0.1", 1).replace(
        "8.8.8.8 8.8.4.4", up.address
    )
    with serve(text) as s:
        orders = {
            tuple(a.address for rrs in s.query("www.example.org.").answer for a in rrs) for _ in range(20)
        }
        assert len(orders) > 1

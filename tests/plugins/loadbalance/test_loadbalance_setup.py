"""loadbalance setup: CoreDNS plugin/loadbalance/setup_test.go table, README examples, file:line errors."""

from __future__ import annotations

import ipaddress

import pytest

from nodelocaldns.plugins.loadbalance import setup as lb
from support.directives import directive, directives_in, fails


@pytest.mark.parametrize(
    ("text", "policy", "file", "reload"),
    [("loadbalance", "round_robin", "", 30.0), ("loadbalance round_robin", "round_robin", "", 30.0),
     ("loadbalance weighted wfile", "weighted", "wfile", 30.0),
     ("loadbalance weighted wf {\n reload 10s\n}", "weighted", "wf", 10.0),
     ("loadbalance weighted wf {\n reload 0s\n}", "weighted", "wf", 0.0)],
)  # fmt: skip
def test_parse(text: str, policy: str, file: str, reload: float) -> None:
    c = lb.parse(directive(text))
    assert (c.policy, c.weight_file, c.reload) == (policy, file, reload)


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [("loadbalance fleeb", "unknown policy", 2), ("loadbalance round_robin a", "unknown property", 2),
     ("loadbalance weighted", "missing weight file argument", 2), ("loadbalance weighted a b", "unexpected argument", 2),
     ("loadbalance weighted wfile {\n susu\n}", "unknown property", 3),
     ("loadbalance weighted wfile {\n reload a\n}", "invalid reload duration", 3),
     ("loadbalance weighted wfile {\n reload 30s  a\n}", "unexpected argument", 3),
     ("loadbalance weighted wfile {\n reload\n}", "reload duration value is missing", 3),
     ("loadbalance weighted wfile {\n prefer 10.0.0.0/8\n}", "unknown property 'prefer'", 3),
     ("loadbalance {\n prefer 10.0.0.0/33\n}", "invalid CIDR", 3), ("loadbalance {\n prefer 10.0.0.1\n}", "invalid CIDR", 3),
     ("loadbalance {\n reload 5s\n}", "unknown property 'reload'", 3)],
)  # fmt: skip
def test_errors(text: str, match: str, line: int) -> None:
    fails(lb.parse, text, match, line)


README = """
. {
    loadbalance round_robin
    forward . 8.8.8.8 8.8.4.4
}
example.com {
        file ./db.example.com {
                reload 10s
        }
        loadbalance weighted ./db.example.com.weights {
                    reload 10s
        }
}
. {
    loadbalance round_robin {
        prefer 10.9.20.0/24 192.168.1.0/24
    }
    forward . 1.1.1.1
}
"""


def test_readme_examples() -> None:
    got = [lb.parse(d) for d in directives_in(README, "loadbalance")]
    assert got[0] == lb.LoadBalanceConfig()
    assert (got[1].policy, got[1].weight_file, got[1].reload) == (
        "weighted",
        "./db.example.com.weights",
        10.0,
    )
    assert got[2].prefer == (ipaddress.ip_network("10.9.20.0/24"), ipaddress.ip_network("192.168.1.0/24"))

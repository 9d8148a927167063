"""``render --no-ipv6-lookups`` and ``--hosts-entry``: the Corefile text, then the rendered Corefile
served (placeholders filled as the agent would, ports moved to loopback test ports) against unbound."""

from __future__ import annotations

import dns.rcode
import pytest

from nodelocaldns.tools import corefiles
from support.ports import free_port
from support.render import corefile_of, objects, run
from support.server import serve
from support.upstreams import UpstreamServer

ENTRY = ("--hosts-entry", "10.0.0.5 registry.example.com reg.cluster.local")


def test_no_ipv6_lookups_renders_the_charts_template_in_every_block() -> None:
    text = corefile_of(objects("--no-ipv6-lookups"))
    # The node-local-dns Helm chart's noIPv6Lookups text: one per block, the block's own zones.
    assert text.count("    template IN AAAA {\n            rcode NOERROR\n    }\n") == 4
    assert "template" not in corefile_of(objects())


def test_hosts_entries_go_in_the_cluster_and_dot_blocks_and_fall_through() -> None:
    text = corefile_of(objects(*ENTRY, "--hosts-entry", "fd00::5  v6.example.com"))
    block = (
        "    hosts /dev/null {\n            10.0.0.5 registry.example.com reg.cluster.local\n"
        "            fd00::5 v6.example.com\n            fallthrough\n    }\n"
    )
    blocks = [b + "\n" for b in text.split("\n}\n") if b.strip()]
    assert [block in b for b in blocks] == [True, False, False, True]


@pytest.mark.parametrize(
    ("entry", "message"),
    [("10.0.0.5", "at least one name"), ("10.0.0.300 x.example", "not an IP address"),
     ("10.0.0.5 bad_name!.example", "not a host name"), ("10.0.0.5 a#b", "not a host name")],
)  # fmt: skip
def test_bad_hosts_entries_are_refused(entry: str, message: str) -> None:
    status, _out, err = run("--hosts-entry", entry)
    assert status != 0 and message in err


def served_corefile(text: str, upstream: str) -> str:
    """The agent's fill (loopback addresses, the test's upstream), then free ports for everything."""
    text = corefiles.fill(
        text,
        {
            corefiles.LOCAL_DNS: "127.0.0.1",
            corefiles.DNS_SERVER: "127.0.0.2",
            corefiles.DNS_DOMAIN: "cluster.local",
            corefiles.CLUSTER_DNS: upstream,
            corefiles.UPSTREAM_SERVERS: upstream,
        },
    )
    for port in (corefiles.PROMETHEUS_PORT, corefiles.HEALTH_PORT, corefiles.READY_PORT):
        text = text.replace(f":{port}", f":{free_port()}")
    return text.replace(":53 {", ":{PORT} {")


def test_rendered_answers_are_served(unbound_upstream: UpstreamServer) -> None:
    up = unbound_upstream
    text = served_corefile(corefile_of(objects("--no-ipv6-lookups", *ENTRY)), up.address)
    with serve(text) as s:
        up.reset_queries()
        aaaa = s.query("web.default.svc.cluster.local.", "AAAA")
        assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
        assert s.query("registry.example.com.", "AAAA").rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in s.query("registry.example.com.", "A").answer[0]] == ["10.0.0.5"]
        assert [rd.to_text() for rd in s.query("reg.cluster.local.", "A").answer[0]] == ["10.0.0.5"]
        # Everything else falls through to forward and the upstream.
        assert [rd.to_text() for rd in s.query("kubernetes.default.svc.cluster.local.", "A").answer[0]] == [
            "198.18.0.1"
        ]
        up.wait_for_queries(1)
        assert up.query_count(qtype="AAAA") == 0
        assert up.query_count("registry.example.com.") == up.query_count("reg.cluster.local.") == 0


def test_without_the_switch_aaaa_reaches_the_upstream(unbound_upstream: UpstreamServer) -> None:
    with serve(served_corefile(corefile_of(objects()), unbound_upstream.address)) as s:
        aaaa = s.query("web.default.svc.cluster.local.", "AAAA")
        assert [rd.to_text() for rd in aaaa.answer[0]] == ["fd00::1:1"]

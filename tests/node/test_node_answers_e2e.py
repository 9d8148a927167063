"""Installers' Corefiles that use the answer plugins, run by ``node-cache`` for a pod in a namespace.

* the node-local-dns Helm chart (deliveryhero/helm-charts stable/node-local-dns) with
  ``config.noIPv6Lookups: true`` and its other defaults: ``template IN AAAA { rcode NOERROR }`` in every
  block;
* kubespray's nodelocaldns ConfigMap (roles/kubernetes-apps/ansible/templates/nodelocaldns-config.yml.j2)
  with an external zone that has ``rewrite`` lines and ``dns_etchosts`` set, so that every block carries
  ``hosts /etc/coredns/hosts { fallthrough }`` (the hosts file is the test's, at a path of its own).

The namespaces, kube-dns stand-in and agent runner are test_node_e2e's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_node_e2e import (
    CLUSTER_NAME,
    EXTERNAL_NAME,
    KUBE_DNS,
    KUBE_DNS_UPSTREAM,
    LINK_LOCAL,
    STUB_SERVER,
    Topology,
    run_agent,
    topo,
)

from nodelocaldns import plugins
from nodelocaldns.core.plugin import lookup
from support.agent_ns import Dig, dig

pytestmark = [pytest.mark.root]
__all__ = ["topo"]  # the module-scoped namespaces fixture, shared with test_node_e2e

# The chart's templates/configmap.yaml rendered with noIPv6Lookups: true, bindIp: true (localDns and
# dnsServer as the test's; with the default ``bind 0.0.0.0`` the agent would collide with the kube-dns
# stand-in, which shares the node namespace here) and the other defaults (commProtocol force_tcp,
# cacheTTL 30, healthPort 8080, empty upstreamForwardConfig).
CHART_NO_IPV6 = f"""\
cluster.local:53 {{
    errors
    cache {{
            success 9984 30
            denial 9984 5
    }}
    reload
    loop
    bind {LINK_LOCAL} {KUBE_DNS}
    forward . __PILLAR__CLUSTER__DNS__ {{
            force_tcp
    }}
    template IN AAAA {{
            rcode NOERROR
    }}
    prometheus :9253
    health :8080
    }}
in-addr.arpa:53 {{
    errors
    cache 30
    reload
    loop
    bind {LINK_LOCAL} {KUBE_DNS}
    forward . __PILLAR__CLUSTER__DNS__ {{
            force_tcp
    }}
    template IN AAAA {{
            rcode NOERROR
    }}
    prometheus :9253
    }}
ip6.arpa:53 {{
    errors
    cache 30
    reload
    loop
    bind {LINK_LOCAL} {KUBE_DNS}
    forward . __PILLAR__CLUSTER__DNS__ {{
            force_tcp
    }}
    template IN AAAA {{
            rcode NOERROR
    }}
    prometheus :9253
    }}
.:53 {{
    errors
    cache 30
    reload
    loop
    bind {LINK_LOCAL} {KUBE_DNS}
    forward . __PILLAR__UPSTREAM__SERVERS__ {{
    }}
    prometheus :9253
    template IN AAAA {{
            rcode NOERROR
    }}
    }}
"""


def aaaa_queries(t: Topology) -> int:
    return sum(1 for q in t.kube_dns.queries() if q.qtype == "AAAA")


def test_chart_no_ipv6_lookups_corefile_serves_pods_without_aaaa_upstream(topo: Topology) -> None:
    with run_agent(topo, template=CHART_NO_IPV6) as agent:
        conf = agent.conf.read_text()
        assert "__PILLAR__" not in conf and conf.count("template IN AAAA {") == 4
        before = aaaa_queries(topo)
        for server in (LINK_LOCAL, KUBE_DNS):
            assert dig(topo.pod, server, CLUSTER_NAME) == Dig("NOERROR", ("198.18.0.1",))
            assert dig(topo.pod, server, EXTERNAL_NAME) == Dig("NOERROR", ("198.18.9.9",))
            for tcp in (False, True):
                # web... has an AAAA at kube-dns; the node answers NODATA itself, in every zone.
                assert dig(topo.pod, server, "web.default.svc.cluster.local.", qtype="AAAA", tcp=tcp) == Dig(
                    "NOERROR", ()
                )
                assert dig(topo.pod, server, EXTERNAL_NAME, qtype="AAAA", tcp=tcp) == Dig("NOERROR", ())
        assert aaaa_queries(topo) == before
        assert agent.stop() == 0


def kubespray_corefile(hosts: Path) -> str:
    """kubespray's template with dns_domain cluster.local, nodelocaldns_ip 169.254.20.10, forwardTarget
    the kube-dns-upstream IP, upstreamForwardTarget /etc/resolv.conf, dns_etchosts set, and one
    nodelocaldns_external_zones entry (corp.example, the stub server, one rewrite)."""
    h = f"""\
        hosts {hosts} {{
          fallthrough
        }}
"""
    return f"""\
    corp.example:53 {{
        errors
        cache 30
        reload
        rewrite name old.corp.example db.corp.example
        loop
        bind {LINK_LOCAL}
        forward . {STUB_SERVER}
        prometheus :9253
        log
{h}    }}
    cluster.local:53 {{
        errors
        cache {{
            success 9984 30
            denial 9984 5
        }}
        reload
        loop
        bind {LINK_LOCAL}
        forward . {KUBE_DNS_UPSTREAM} {{
            force_tcp
        }}
        prometheus :9253
        health {LINK_LOCAL}:9254
{h}    }}
    in-addr.arpa:53 {{
        errors
        cache 30
        reload
        loop
        bind {LINK_LOCAL}
        forward . {KUBE_DNS_UPSTREAM} {{
            force_tcp
        }}
        prometheus :9253
    }}
    ip6.arpa:53 {{
        errors
        cache 30
        reload
        loop
        bind {LINK_LOCAL}
        forward . {KUBE_DNS_UPSTREAM} {{
            force_tcp
        }}
        prometheus :9253
    }}
    .:53 {{
        errors
        cache 30
        reload
        loop
        bind {LINK_LOCAL}
        forward . /etc/resolv.conf

        prometheus :9253
{h}    }}
"""


plugins.load()


@pytest.mark.skipif(
    lookup("rewrite") is None,
    reason="rewrite not registered (wired on a parallel branch); kubespray's external zones use it",
)
def test_kubespray_corefile_with_rewrite_and_hosts_serves_pods(topo: Topology) -> None:
    hosts = topo.tmp / "kubespray-hosts"
    hosts.write_text(
        "198.18.6.6 pinned.corp.example\n198.18.6.7 registry.cluster.local\n198.18.6.8 mirror.example.org\n"
    )
    with run_agent(topo, localip=LINK_LOCAL, template=kubespray_corefile(hosts)) as agent:
        pod = topo.pod
        # hosts answers in every block that has it; everything else falls through to forward.
        assert dig(pod, LINK_LOCAL, "pinned.corp.example.") == Dig("NOERROR", ("198.18.6.6",))
        assert dig(pod, LINK_LOCAL, "registry.cluster.local.") == Dig("NOERROR", ("198.18.6.7",))
        assert dig(pod, LINK_LOCAL, "mirror.example.org.") == Dig("NOERROR", ("198.18.6.8",))
        assert dig(pod, LINK_LOCAL, CLUSTER_NAME) == Dig("NOERROR", ("198.18.0.1",))
        assert dig(pod, LINK_LOCAL, EXTERNAL_NAME) == Dig("NOERROR", ("198.18.9.9",))
        assert dig(pod, LINK_LOCAL, "db.corp.example.") == Dig("NOERROR", ("198.18.7.7",))
        # rewrite: the stub server is asked for db.corp.example, the pod sees its own name.
        assert dig(pod, LINK_LOCAL, "old.corp.example.") == Dig("NOERROR", ("198.18.7.7",))
        assert topo.kube_dns.count("pinned.corp.example.") == 0
        assert agent.stop() == 0

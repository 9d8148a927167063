"""The node-cache agent end to end, as root, in a "node" and a "pod" namespace these tests build.

The node namespace is a small Kubernetes node: a pre-created ``nodelocaldns`` bridge (this kernel
has no dummy driver), a kube-dns stand-in (real unbound on 198.18.2.53), kube-proxy-style DNAT for
the kube-dns ClusterIP 198.18.0.10 and the kube-dns-upstream ClusterIP 198.18.0.20, and a stub-domain
server (unbound on 198.18.3.53). The pod namespace hangs off a veth pair with a default route via the
node. The agent runs with the addon DaemonSet's arguments and the addon Corefile template unchanged;
its ``/etc/resolv.conf`` is a file of ours bind-mounted in a private mount namespace (``unshare``),
so the ``.`` zone goes to the in-namespace unbound and never to the host's resolvers.

How a test knows the agent answered: unbound logs each query with its client address. A pod query
that reaches unbound through kube-proxy's DNAT shows the pod's address; one the agent forwarded shows
a node address; one the agent's cache answered does not show up at all.

Every address used lives inside these namespaces (169.254.0.0/16, 198.18.0.0/15, fd00::/8); every
DNS and HTTP exchange with them runs inside a namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from support.addon import ADDON_COREFILE
from support.agent_ns import (
    Dig,
    NsUnbound,
    dig,
    kube_proxy_dnat,
    local_addresses,
    ns_unbound,
    owned_rule_lines,
    wait_until,
)
from support.configmap import ConfigMapDir
from support.netns import (
    add_bridge,
    enable_conntrack,
    netns,
    netns_available,
    ns_exec,
    run_in_netns,
    sh,
)
from support.upstreams import CLUSTER_ZONES

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

NODE_IP, POD_IP = "198.18.1.1", "198.18.1.2"
NODE_IP6, POD_IP6 = "fd00:1::1", "fd00:1::2"
LINK_LOCAL = "169.254.20.10"
LOCAL6 = "fd00:a::10"
KUBE_DNS = "198.18.0.10"  # the kube-dns ClusterIP
KUBE_DNS_UPSTREAM = "198.18.0.20"  # the kube-dns-upstream ClusterIP
KUBE_DNS_POD = "198.18.2.53"  # where both ClusterIPs are DNAT'd: the kube-dns stand-in
STUB_SERVER = "198.18.3.53"
IFACE = "nodelocaldns"
SYNC = 1.0  # -syncinterval in these tests
CLUSTER_NAME = "kubernetes.default.svc.cluster.local."
EXTERNAL_NAME = "www.example.org."


DAEMONSET_ARGS = ["-localip", f"{LINK_LOCAL},{KUBE_DNS}", "-upstreamsvc", "kube-dns-upstream"]


# ---------------------------------------------------------------- servers inside the node namespace


# ---------------------------------------------------------------- the topology


@dataclass
class Topology:
    node: str
    pod: str
    kube_dns: NsUnbound
    stub: NsUnbound
    resolv: Path
    tmp: Path


KUBE_DNS_ZONES: dict[str, list[str]] = {
    **CLUSTER_ZONES,
    # Also the node's "upstream resolver" for names outside the cluster (via resolv.conf).
    "example.org.": [f"{EXTERNAL_NAME} 300 IN A 198.18.9.9"],
}
STUB_ZONES: dict[str, list[str]] = {
    "corp.example.": ["db.corp.example. 60 IN A 198.18.7.7"],
    "tmpl.example.": ["svc.tmpl.example. 60 IN A 198.18.8.8"],
}


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("node-e2e")
    with netns("nldnode") as node, netns("nldpod") as pod, contextlib.ExitStack() as stack:
        ns_exec(node, "ip", "link", "add", "vnode", "type", "veth", "peer", "name", "vpod", "netns", pod)
        ns_exec(node, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "vnode")
        ns_exec(node, "ip", "-6", "addr", "add", f"{NODE_IP6}/64", "dev", "vnode", "nodad")
        ns_exec(node, "ip", "link", "set", "vnode", "up")
        ns_exec(pod, "ip", "addr", "add", f"{POD_IP}/24", "dev", "vpod")
        ns_exec(pod, "ip", "-6", "addr", "add", f"{POD_IP6}/64", "dev", "vpod", "nodad")
        ns_exec(pod, "ip", "link", "set", "vpod", "up")
        ns_exec(pod, "ip", "route", "add", "default", "via", NODE_IP)
        ns_exec(pod, "ip", "-6", "route", "add", "default", "via", NODE_IP6)
        add_bridge(node, IFACE)  # what node-cache's dummy would be
        add_bridge(node, "kdns0")  # stands in for the kube-dns pods' network
        ns_exec(node, "ip", "addr", "add", f"{KUBE_DNS_POD}/32", "dev", "kdns0")
        ns_exec(node, "ip", "addr", "add", f"{STUB_SERVER}/32", "dev", "kdns0")
        # The Service CIDR needs a route for the agent's own packets to be DNAT'd (a real node has
        # a default route); it points at the pod link, inside our namespaces.
        ns_exec(node, "ip", "route", "add", "198.18.0.0/24", "dev", "vnode")
        kube_proxy_dnat(node)
        enable_conntrack(node)  # both families, as kube-proxy's rules would on a real node
        kube_dns = stack.enter_context(ns_unbound(node, KUBE_DNS_POD, KUBE_DNS_ZONES, tmp))
        stub = stack.enter_context(ns_unbound(node, STUB_SERVER, STUB_ZONES, tmp))
        resolv = tmp / "resolv.conf"
        resolv.write_text(f"nameserver {KUBE_DNS_POD}\n")
        yield Topology(node, pod, kube_dns, stub, resolv, tmp)


# ---------------------------------------------------------------- looking at the node


def rule_lines(node: str) -> list[str]:
    """Our rules as iptables-save / nft print them (read without the agent's own parser), the agents'
    own tables (the host-network rules of the kube-dns ClusterIP) included."""
    lines: list[str] = []
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        out = ns_exec(node, tool, check=False).stdout
        lines += [line for line in out.splitlines() if "NodeLocal DNS Cache" in line]
    nft = ns_exec(node, "nft", "list", "table", "inet", "nodelocaldns", check=False).stdout
    lines += [line.strip() for line in nft.splitlines() if "NodeLocal DNS Cache" in line]
    return lines + owned_rule_lines(node)


def scrub(node: str) -> None:
    """Remove whatever rules and addresses a test left behind, the way an operator would."""
    for tool in ("iptables-nft", "ip6tables-nft"):
        for line in ns_exec(node, f"{tool}-save", check=False).stdout.splitlines():
            if "NodeLocal DNS Cache" in line:
                table = "raw" if "NOTRACK" in line else "filter"
                ns_exec(node, "sh", "-c", f"{tool} -t {table} {line.replace('-A ', '-D ', 1)}", check=False)
    ns_exec(node, "nft", "delete", "table", "inet", "nodelocaldns", check=False)
    ns_exec(node, "ip", "addr", "flush", "dev", IFACE, check=False)


def flows(node: str) -> list[str]:
    """Every conntrack entry of both families, addresses in their short form."""
    out = ns_exec(node, "conntrack", "-L", "-f", "ipv4", check=False).stdout
    out += ns_exec(node, "conntrack", "-L", "-f", "ipv6", check=False).stdout
    return [line for line in out.splitlines() if line.startswith(("tcp", "udp"))]


def pod_flows(node: str) -> list[str]:
    """conntrack entries for DNS flows started by the pod."""
    return [
        line
        for line in flows(node)
        if "dport=53 " in line and (f"src={POD_IP} " in line or f"src={POD_IP6} " in line)
    ]


def flush_conntrack(node: str) -> None:
    ns_exec(node, "conntrack", "-F", check=False)
    ns_exec(node, "conntrack", "-F", "-f", "ipv6", check=False)


def http_get(ns: str, url: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    return run_in_netns(ns, get)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- the agent


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    workdir: Path
    template: ConfigMapDir
    kube_dns_cm: ConfigMapDir
    node: str
    returncode: int | None = field(default=None)

    @property
    def conf(self) -> Path:
        return self.workdir / "Corefile"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "node-cache.pid"

    def log(self) -> str:
        return (self.workdir / "agent.log").read_text(errors="replace")

    def wait_up(self, timeout: float = 20.0) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"agent exited with {self.proc.returncode}:\n{self.log()}"
            return self.pidfile.exists()

        wait_until(up, timeout, "the agent's pidfile")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"agent did not exit after {signal.Signals(sig).name}:\n{self.log()}"
                ) from None
        self.returncode = self.proc.returncode
        return self.proc.returncode

    def dns_metrics(self) -> str:
        return http_get(self.node, "http://127.0.0.1:9253/metrics")[1]

    def setup_metrics(self) -> str:
        return http_get(self.node, "http://127.0.0.1:9353/metrics")[1]


_agent_runs = 0


@contextlib.contextmanager
def run_agent(
    topo: Topology,
    *extra: str,
    localip: str = f"{LINK_LOCAL},{KUBE_DNS}",
    resolv: Path | None = None,
    kube_dns_data: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    template: str = ADDON_COREFILE,
    wait: bool = True,
) -> Iterator[Agent]:
    """Start the agent in the node namespace with the addon DaemonSet's arguments plus ``extra``."""
    global _agent_runs
    _agent_runs += 1
    workdir = topo.tmp / f"agent{_agent_runs}"
    workdir.mkdir()
    template_dir = ConfigMapDir(workdir / "coredns", {"Corefile.base": template})
    kube_dns_cm = ConfigMapDir(workdir / "kube-dns", kube_dns_data or {})
    args = [
        "-localip", localip,
        "-conf", str(workdir / "Corefile"),
        "-upstreamsvc", "kube-dns-upstream",
        "-pidfile", str(workdir / "node-cache.pid"),
        "-basecorefile", str(workdir / "coredns" / "Corefile.base"),
        "-kubednscm", str(workdir / "kube-dns"),
        "-syncinterval", f"{SYNC:g}s",
        *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODELOCALDNS_")}
    env.update(
        KUBE_DNS_SERVICE_HOST=KUBE_DNS,
        KUBE_DNS_UPSTREAM_SERVICE_HOST=KUBE_DNS_UPSTREAM,
        NODELOCALDNS_WATCH_INTERVAL="0.2",
        PYTHONUNBUFFERED="1",
    )
    # A private mount namespace shows our resolv.conf as /etc/resolv.conf to the agent only.
    wrapper = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    argv = [
        "ip", "netns", "exec", topo.node, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", wrapper, str(resolv or topo.resolv),
        *prefix, sys.executable, "-m", "nodelocaldns", "node-cache", *args,
    ]  # fmt: skip
    with open(workdir / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    agent = Agent(proc, workdir, template_dir, kube_dns_cm, topo.node)
    try:
        if wait:
            agent.wait_up()
        yield agent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        scrub(topo.node)
        flush_conntrack(topo.node)


# ---------------------------------------------------------------- tests


def test_pods_are_served_by_the_agent_without_conntrack_and_sigterm_cleans_up(topo: Topology) -> None:
    node, pod, kube_dns = topo.node, topo.pod, topo.kube_dns
    # Before the agent: the ClusterIP works through kube-proxy's DNAT and conntrack sees the pod.
    before = dig(pod, KUBE_DNS, CLUSTER_NAME)
    assert before == Dig("NOERROR", ("198.18.0.1",))
    assert kube_dns.count(CLUSTER_NAME, client=POD_IP) == 1
    assert pod_flows(node), "conntrack must see pod DNS without the agent, else 0 entries proves nothing"
    flush_conntrack(node)

    with run_agent(topo, "-rules-backend", "iptables") as agent:
        conf = agent.conf.read_text()
        assert "__PILLAR__" not in conf
        assert f"bind {LINK_LOCAL} {KUBE_DNS}\n" in conf
        assert f"forward . {KUBE_DNS_UPSTREAM} {{" in conf and "forward . /etc/resolv.conf\n" in conf
        assert f"health {LINK_LOCAL}:8080" in conf and conf.startswith("cluster.local:53 {")
        assert local_addresses(node) == {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
        lines = rule_lines(node)
        # the kube-dns ClusterIP's two host-network rules are in the agent's own nft table
        assert len(lines) == 24 and sum("-A " in line for line in lines) == 22
        assert http_get(node, f"http://{LINK_LOCAL}:8080/health") == (200, "OK")
        log = agent.log()
        for expected in (
            "[INFO] Starting node-cache image: ",
            f"[INFO] Using Corefile {agent.conf}",
            f"[INFO] Using Pidfile {agent.pidfile}",
            "[INFO] Updated Corefile with 0 custom stubdomains and upstream servers /etc/resolv.conf",
            f"[INFO] Added back nodelocaldns rule - {{raw PREROUTING [-p udp -d {KUBE_DNS} --dport 53 -m socket --nowildcard -j NOTRACK",
        ):
            assert expected in log
        # Rules were installed after every listener was up, and the pidfile written after both.
        assert log.index("nodelocaldns-0.") < log.index("Added back nodelocaldns rule")
        assert int(agent.pidfile.read_text()) > 1

        kube_dns_seen = kube_dns.count(CLUSTER_NAME)
        for server in (LINK_LOCAL, KUBE_DNS):
            for tcp in (False, True):
                assert dig(pod, server, CLUSTER_NAME, tcp=tcp) == Dig("NOERROR", ("198.18.0.1",))
            assert dig(pod, server, EXTERNAL_NAME) == Dig("NOERROR", ("198.18.9.9",))
        # Four cluster-name answers, one upstream query (then the cache), none from the pod's address.
        assert kube_dns.count(CLUSTER_NAME) == kube_dns_seen + 1
        assert kube_dns.count(CLUSTER_NAME, client=POD_IP) == 1  # still only the one from before
        assert kube_dns.count(EXTERNAL_NAME) == 1 and kube_dns.count(EXTERNAL_NAME, client=POD_IP) == 0
        dns_metrics = agent.dns_metrics()
        assert metric(dns_metrics, "coredns_dns_requests_total", server=f"dns://{LINK_LOCAL}:53") >= 3
        assert metric(dns_metrics, "coredns_cache_hits_total") >= 4
        # NOTRACK: the pod's flows to both local IPs left no conntrack entry...
        assert pod_flows(node) == []
        # ...while the agent's own upstream connection to kube-dns-upstream went through DNAT.
        assert any(f"dst={KUBE_DNS_UPSTREAM} " in line for line in flows(node))

        assert agent.stop() == 0
        log = agent.log()
        assert "[INFO] SIGTERM: Shutting down servers then terminating" in log
        assert rule_lines(node) == []
        assert local_addresses(node) == set()
        assert not agent.pidfile.exists()
        assert "Deleted 22 nodelocaldns rules (iptables-nft)" in log
        assert "Deleted 2 nodelocaldns rules (table inet nodelocaldns-agent-" in log
    # After the agent: pods reach kube-dns through kube-proxy again.
    assert dig(pod, KUBE_DNS, CLUSTER_NAME) == Dig("NOERROR", ("198.18.0.1",))
    assert kube_dns.count(CLUSTER_NAME, client=POD_IP) == 2


def _delete_rule(node: str, chain: str, spec: str) -> None:
    ns_exec(node, "sh", "-c", f"iptables -t raw -D {chain} {spec}")


def test_a_deleted_rule_or_address_is_back_within_one_sync_interval(topo: Topology) -> None:
    node, pod = topo.node, topo.pod
    with run_agent(topo) as agent:
        assert len(rule_lines(node)) == 24
        spec = f"-p udp -d {LINK_LOCAL} --dport 53 -j NOTRACK -m comment --comment 'NodeLocal DNS Cache: skip conntrack'"
        _delete_rule(node, "PREROUTING", spec)
        ns_exec(node, "ip", "addr", "del", f"{LINK_LOCAL}/32", "dev", IFACE)
        assert len(rule_lines(node)) == 23 and local_addresses(node) == {f"{KUBE_DNS}/32"}
        took = wait_until(
            lambda: len(rule_lines(node)) == 24 and f"{LINK_LOCAL}/32" in local_addresses(node),
            SYNC * 2 + 1,
            "the rule and the address to come back",
        )
        assert took <= SYNC + 1.0  # one interval, plus the tick itself on a busy machine
        log = agent.log()
        assert f"Added back nodelocaldns rule - {{raw PREROUTING [-p udp -d {LINK_LOCAL} --dport 53" in log
        assert f"Added back address {LINK_LOCAL} to interface {IFACE}" in log
        # The socket bound to the address serves again once the address is back.
        assert dig(pod, LINK_LOCAL, CLUSTER_NAME).status == "NOERROR"
        assert metric(agent.setup_metrics(), "coredns_nodecache_setup_errors_total") == 0
        assert agent.stop() == 0
    assert rule_lines(node) == []


class QueryLoop:
    """A pod that keeps asking the link-local address, one query every ~10 ms."""

    def __init__(self, pod: str, name: str = CLUSTER_NAME) -> None:
        self.pod, self.name = pod, name
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: run_in_netns(pod, self._run), daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            q = dns.message.make_query(self.name, "A")
            try:
                r = dns.query.udp(q, LINK_LOCAL, timeout=1.0)
                if r.rcode() == dns.rcode.NOERROR and r.answer:
                    self.ok += 1
                else:
                    self.failures.append(dns.rcode.to_text(r.rcode()))
            except (OSError, dns.exception.DNSException) as e:
                self.failures.append(repr(e))
            time.sleep(0.01)

    def __enter__(self) -> QueryLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def dns_socket_inodes(node: str) -> set[str]:
    out = (
        ns_exec(node, "ss", "-Hunle", "sport = :53").stdout
        + ns_exec(node, "ss", "-Htnle", "sport = :53").stdout
    )
    return set(re.findall(r"ino:(\d+)", out))


TEMPLATE_ADDITION = """\
tmpl.example:53 {
    errors
    bind __PILLAR__LOCAL__DNS__
    forward . 198.18.3.53
}
"""


def test_template_and_configmap_edits_apply_live_without_closing_sockets(topo: Topology) -> None:
    node, pod = topo.node, topo.pod
    with run_agent(topo) as agent:
        inodes = dns_socket_inodes(node)
        assert len(inodes) >= 4  # UDP and TCP on both addresses
        # Not served yet: both names fall through to "." and the kube-dns stand-in refuses them.
        assert dig(pod, LINK_LOCAL, "db.corp.example.").status == "REFUSED"
        assert dig(pod, LINK_LOCAL, "svc.tmpl.example.").status == "REFUSED"
        with QueryLoop(pod) as loop:
            time.sleep(0.2)
            agent.kube_dns_cm.write({"stubDomains": '{"corp.example": ["198.18.3.53"]}'})
            wait_until(
                lambda: dig(pod, LINK_LOCAL, "db.corp.example.").answers == ("198.18.7.7",),
                10,
                "the stub domain",
            )
            agent.template.write({"Corefile.base": ADDON_COREFILE + TEMPLATE_ADDITION})
            wait_until(
                lambda: dig(pod, KUBE_DNS, "svc.tmpl.example.").answers == ("198.18.8.8",),
                10,
                "the new block",
            )
            time.sleep(0.2)
        assert loop.failures == [] and loop.ok > 20
        assert dns_socket_inodes(node) == inodes  # no DNS socket was closed or replaced
        conf = agent.conf.read_text()
        assert "corp.example:53 {" in conf and "tmpl.example:53 {" in conf
        assert f"bind {LINK_LOCAL} {KUBE_DNS}\n    forward . 198.18.3.53" in conf
        log = agent.log()
        assert "Updated Corefile with 1 custom stubdomains and upstream servers /etc/resolv.conf" in log
        assert log.count("[INFO] Reloading complete") == 2
        assert agent.stop() == 0


def test_nftables_backend(topo: Topology) -> None:
    node, pod = topo.node, topo.pod
    # The repository's DaemonSet args: the kube-dns ClusterIP comes from $KUBE_DNS_SERVICE_HOST.
    with run_agent(
        topo, "-rules-backend", "nftables", localip=f"{LINK_LOCAL},__PILLAR__DNS__SERVER__"
    ) as agent:
        assert local_addresses(node) == {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
        table = ns_exec(node, "nft", "list", "table", "inet", "nodelocaldns").stdout
        # less the kube-dns ClusterIP's two host-network rules, which are in the agent's own table
        assert table.count("NodeLocal DNS Cache") == 22 and table.count(" notrack ") == 14
        assert not any("-A " in line for line in rule_lines(node))  # nothing in the iptables tables
        for server in (LINK_LOCAL, KUBE_DNS):
            assert dig(pod, server, CLUSTER_NAME, tcp=server == KUBE_DNS).status == "NOERROR"
        assert pod_flows(node) == []
        ns_exec(node, "nft", "delete", "table", "inet", "nodelocaldns")
        wait_until(lambda: len(rule_lines(node)) == 24, SYNC + 1.5, "the nft table to come back")
        assert agent.stop() == 0
        assert "Using nft for the nodelocaldns rules" in agent.log()
        assert ns_exec(node, "nft", "list", "table", "inet", "nodelocaldns", check=False).returncode != 0
        assert local_addresses(node) == set()


def test_ipv6_and_ipv4_in_one_process(topo: Topology) -> None:
    node, pod = topo.node, topo.pod

    # Positive control: conntrack tracks the pod's IPv6 traffic in this namespace.
    def send() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (NODE_IP6, 53))

    run_in_netns(pod, send)  # the first one may wait for neighbour discovery
    wait_until(
        lambda: any(f"dst={NODE_IP6} " in line for line in pod_flows(node)), 5, "an IPv6 conntrack entry"
    )
    flush_conntrack(node)
    with run_agent(topo, "-rules-backend", "iptables", localip=f"{LINK_LOCAL},{LOCAL6},{KUBE_DNS}") as agent:
        assert local_addresses(node) == {f"{LINK_LOCAL}/32", f"{LOCAL6}/128", f"{KUBE_DNS}/32"}
        v6_rules = ns_exec(node, "ip6tables-nft-save").stdout.count("NodeLocal DNS Cache")
        assert v6_rules == 10 and len(rule_lines(node)) == 36  # 2 host-network rules in the agent's table
        assert f"bind {LINK_LOCAL} {LOCAL6} {KUBE_DNS}\n" in agent.conf.read_text()
        for tcp in (False, True):
            assert dig(pod, LOCAL6, CLUSTER_NAME, tcp=tcp) == Dig("NOERROR", ("198.18.0.1",))
            assert dig(pod, LOCAL6, "web.default.svc.cluster.local.", tcp=tcp, qtype="AAAA").answers == (
                "fd00::1:1",
            )
        assert dig(pod, LINK_LOCAL, CLUSTER_NAME).status == "NOERROR"
        assert pod_flows(node) == []
        assert agent.stop() == 0
    assert rule_lines(node) == [] and local_addresses(node) == set()


def test_skipteardown_leaves_both_and_the_next_run_adopts_them(topo: Topology) -> None:
    node, pod = topo.node, topo.pod
    with run_agent(topo, "-skipteardown") as first:
        assert first.stop() == 0
        assert "Skipping teardown (-skipteardown)" in first.log()
        # all but the host-network rules of the ClusterIP, whose table the kernel deleted with the agent
        assert len(rule_lines(node)) == 22
        assert local_addresses(node) == {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
        # What an older run with another -localip would have left: NOTRACK for an address nobody holds.
        stale = "-p udp -d 198.18.0.99 --dport 53 -j NOTRACK -m comment --comment 'NodeLocal DNS Cache: skip conntrack'"
        ns_exec(node, "sh", "-c", f"iptables -t raw -I PREROUTING 1 {stale}")
        assert len(rule_lines(node)) == 23

        # The next agent (same node) adopts what it finds: no duplicate, and the stale rule is gone.
        with run_agent(topo) as second:
            lines = rule_lines(node)
            assert len(lines) == 24 and len(set(lines)) == 24
            assert not any("198.18.0.99" in line for line in lines)
            assert "Deleted stale nodelocaldns rule - {raw PREROUTING [-p udp -d 198.18.0.99" in second.log()
            assert dig(pod, KUBE_DNS, CLUSTER_NAME).status == "NOERROR"
            assert second.stop() == 0
            assert rule_lines(node) == [] and local_addresses(node) == set()


def test_no_rules_means_not_ready_but_still_serving(topo: Topology) -> None:
    """The iptables binaries are missing: the agent serves (tracked), counts, and is not ready."""
    node, pod = topo.node, topo.pod
    with_ready = ADDON_COREFILE.replace(
        "    health __PILLAR__LOCAL__DNS__:8080\n",
        "    health __PILLAR__LOCAL__DNS__:8080\n    ready __PILLAR__LOCAL__DNS__:8181\n",
    )
    no_tools = ("env", "PATH=/nonexistent")
    with run_agent(topo, "-rules-backend", "iptables", prefix=no_tools, template=with_ready) as agent:
        assert rule_lines(node) == [] and local_addresses(node) == {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
        status, body = http_get(node, f"http://{LINK_LOCAL}:8181/ready")
        assert status == 503 and "node network setup failed: iptables is not installed" in body, body
        assert "[ERROR] Error checking/adding iptables rule, error - iptables is not installed" in agent.log()
        assert http_get(node, f"http://{LINK_LOCAL}:8080/health")[0] == 200
        assert (
            metric(agent.setup_metrics(), "coredns_nodecache_setup_errors_total", errortype="iptables") >= 1
        )
        # Still answering; without the NOTRACK rules the kernel tracks the pod's flow.
        assert dig(pod, LINK_LOCAL, CLUSTER_NAME).status == "NOERROR"
        assert any(f"dst={LINK_LOCAL} " in line for line in pod_flows(node))
        assert agent.stop() == 0
        assert local_addresses(node) == set()


def test_a_held_port_fails_clearly_and_leaves_what_was_there_before(topo: Topology) -> None:
    """Port 53 on the link-local address is taken. The agent says who to look for, and removes only
    what it added itself: the kube-dns address; the link-local address and a rule that were there
    before (another instance's, an operator's) stay."""
    node = topo.node
    ns_exec(node, "ip", "addr", "add", f"{LINK_LOCAL}/32", "dev", IFACE)
    theirs = "-p udp -d 169.254.20.10 --dport 53 -j NOTRACK -m comment --comment 'NodeLocal DNS Cache: skip conntrack'"
    ns_exec(node, "sh", "-c", f"iptables -t raw -I PREROUTING 1 {theirs}")
    hold = f"import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{LINK_LOCAL}', 53)); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        ["ip", "netns", "exec", node, sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with run_agent(topo, wait=False) as agent:
            assert agent.proc.wait(30) == 1
            log = agent.log()
            assert "[ERROR] Failed to start the DNS server on " in log, log
            assert (
                f"udp {LINK_LOCAL}:53 is held by another process (find it with `ss -lunp 'sport = :53'`)"
                in log
            )
            assert f"Leaving {LINK_LOCAL} on {IFACE}: it was there before this start" in log
            assert local_addresses(node) == {f"{LINK_LOCAL}/32"}
            assert len(rule_lines(node)) == 1 and "169.254.20.10" in rule_lines(node)[0]
            assert not agent.pidfile.exists()
    finally:
        holder.kill()
        holder.communicate()


def test_missing_cap_net_admin_is_a_clear_error(topo: Topology) -> None:
    drop = ("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin")
    with run_agent(topo, prefix=drop, wait=False) as agent:
        assert agent.proc.wait(20) == 1
        log = agent.log()
        assert "missing capability CAP_NET_ADMIN" in log and "NET_ADMIN" in log
        assert local_addresses(topo.node) == set() and not agent.pidfile.exists()


def test_a_forwarding_loop_stops_the_agent_after_teardown(topo: Topology) -> None:
    looping = topo.tmp / "resolv-loop.conf"
    looping.write_text(f"nameserver {LINK_LOCAL}\n")  # "." would forward to ourselves
    with run_agent(topo, resolv=looping, wait=False) as agent:
        assert agent.proc.wait(30) == 1
        log = agent.log()
        assert "[FATAL] plugin/loop: Loop" in log and 'detected for zone "."' in log
        assert rule_lines(topo.node) == []
        assert local_addresses(topo.node) == set()
        assert not agent.pidfile.exists()


def test_console_script_is_the_same_agent() -> None:
    script = shutil.which("node-cache", path=os.path.dirname(sys.executable))
    assert script is not None
    out = sh(script, "-version")
    assert out.stdout.startswith("nodelocaldns-") and out.returncode == 0

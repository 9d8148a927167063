"""Fail-safe after SIGKILL, in a node and a pod namespace these tests build (issue 10, items 2 and 5).

The node namespace has a kube-dns endpoint (real unbound on 198.18.2.53 and fd00:2::53) and
kube-proxy-style DNAT from the kube-dns ClusterIPs 198.18.0.10 / fd00:10::10 to it, with conntrack
on. The agent serves 169.254.20.10 and both ClusterIPs. A pod query that unbound logs with the pod's
own address came through kube-proxy's DNAT (no cache in the way); one the agent answered either
shows a node address (forwarded) or nothing (cached), and leaves no conntrack entry.

Measured here: with the agent SIGKILLed (no teardown, its rules stay) the next pod query to the
ClusterIP is answered by kube-dns; with the agent back, the next query after its listeners bind
is the agent's again. The same for a host-network client (a process in the node namespace, bound
to an address of its own so unbound's log tells it apart), whose NOTRACK rule lives in the
agent's own nft table and dies with it. The figures are printed (``-s``) and recorded in
docs/node-agent.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from support.addon import ADDON_COREFILE
from support.agent_ns import wait_until
from support.configmap import ConfigMapDir
from support.netns import add_bridge, enable_conntrack, netns, netns_available, ns_exec, run_in_netns
from support.upstreams import CLUSTER_ZONES, parse_unbound_log, probe, unbound_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

NODE_IP, POD_IP, NODE_IP6, POD_IP6 = "198.18.1.1", "198.18.1.2", "fd00:1::1", "fd00:1::2"
LINK_LOCAL = "169.254.20.10"
CLUSTER_IPS = {4: "198.18.0.10", 6: "fd00:10::10"}  # the kube-dns ClusterIPs
UPSTREAM_SVC = "198.18.0.20"  # kube-dns-upstream
ENDPOINTS = {4: "198.18.2.53", 6: "fd00:2::53"}  # the kube-dns pod
NAME = "kubernetes.default.svc.cluster.local."
QTYPE = {4: "A", 6: "AAAA"}
ZONES = {
    **CLUSTER_ZONES,
    "cluster.local.": [*CLUSTER_ZONES.get("cluster.local.", []), f"{NAME} 30 IN AAAA fd00:96::1"],
}
SYNC = 1.0
HOST_CLIENT = {4: "198.18.3.1", 6: "fd00:3::1"}  # a host-network client's own source address
OWNED_PREFIX = "nodelocaldns-agent-"


@dataclass
class Node:
    node: str
    pod: str
    tmp: Path
    unbound_log: Path

    def pod_queries_seen(self) -> int:
        """Queries kube-dns got straight from the pod (through DNAT, not through the agent)."""
        return self.queries_from(POD_IP, POD_IP6)

    def queries_from(self, *clients: str) -> int:
        text = self.unbound_log.read_text(errors="replace") if self.unbound_log.exists() else ""
        return sum(1 for q in parse_unbound_log(text) if q.client in clients)


def dnat(node: str, tool: str) -> None:
    """kube-proxy's Service DNAT, in the iptables variant ``tool`` (iptables / iptables-legacy)."""
    for fam, vip in CLUSTER_IPS.items():
        binary = tool if fam == 4 else tool.replace("iptables", "ip6tables")
        ep = ENDPOINTS[fam] if fam == 4 else f"[{ENDPOINTS[fam]}]"
        targets = [(vip, ep)] + ([(UPSTREAM_SVC, ep)] if fam == 4 else [])
        for chain in ("PREROUTING", "OUTPUT"):
            for addr, to in targets:
                for proto in ("udp", "tcp"):
                    ns_exec(node, binary, "-t", "nat", "-A", chain, "-d", addr, "-p", proto, "--dport", "53",
                            "-j", "DNAT", "--to-destination", f"{to}:53")  # fmt: skip
        # kubelet's hint: tells the agent (and iptables-wrappers) which variant the node uses
        ns_exec(node, binary, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")


@contextlib.contextmanager
def node_ns(tmp: Path, variant: str) -> Iterator[Node]:
    with netns("nldfsn") as node, netns("nldfsp") as pod:
        ns_exec(node, "ip", "link", "add", "vnode", "type", "veth", "peer", "name", "vpod", "netns", pod)
        ns_exec(node, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "vnode")
        ns_exec(node, "ip", "-6", "addr", "add", f"{NODE_IP6}/64", "dev", "vnode", "nodad")
        ns_exec(node, "ip", "link", "set", "vnode", "up")
        ns_exec(pod, "ip", "addr", "add", f"{POD_IP}/24", "dev", "vpod")
        ns_exec(pod, "ip", "-6", "addr", "add", f"{POD_IP6}/64", "dev", "vpod", "nodad")
        ns_exec(pod, "ip", "link", "set", "vpod", "up")
        ns_exec(pod, "ip", "route", "add", "default", "via", NODE_IP)
        ns_exec(pod, "ip", "-6", "route", "add", "default", "via", NODE_IP6)
        ns_exec(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        add_bridge(node, "nodelocaldns")
        add_bridge(node, "kdns0")
        ns_exec(node, "ip", "link", "set", "kdns0", "up")
        ns_exec(node, "ip", "addr", "add", f"{ENDPOINTS[4]}/32", "dev", "kdns0")
        ns_exec(node, "ip", "-6", "addr", "add", f"{ENDPOINTS[6]}/128", "dev", "kdns0", "nodad")
        ns_exec(node, "ip", "addr", "add", f"{HOST_CLIENT[4]}/32", "dev", "kdns0")
        ns_exec(node, "ip", "-6", "addr", "add", f"{HOST_CLIENT[6]}/128", "dev", "kdns0", "nodad")
        ns_exec(node, "ip", "route", "add", "198.18.0.0/24", "dev", "vnode")
        dnat(node, "iptables-legacy" if variant == "legacy" else "iptables-nft")
        enable_conntrack(node)
        workdir = tmp / "kube-dns"
        workdir.mkdir()
        extra = "\n".join(
            [f"interface: {ip}@53" for ip in ENDPOINTS.values()]
            + ["access-control: 0.0.0.0/0 allow", "access-control: ::/0 allow"]
        )
        conf = unbound_config(port=5399, workdir=workdir, zones=ZONES, ipv6=True, extra_conf=extra)
        (workdir / "unbound.conf").write_text(conf)
        with open(workdir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", node, "/usr/sbin/unbound", "-d", "-c", str(workdir / "unbound.conf")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip
        try:
            wait_until(
                lambda: run_in_netns(node, lambda: probe(ENDPOINTS[4], 53, timeout=0.2)), 10, "unbound"
            )
            yield Node(node, pod, tmp, workdir / "unbound.log")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def ask(node: Node, fam: int, *, tcp: bool = False, timeout: float = 1.0) -> bool:
    """One query from the pod to the ClusterIP; True iff it got the record."""

    def q() -> bool:
        msg = dns.message.make_query(NAME, QTYPE[fam])
        try:
            send = dns.query.tcp if tcp else dns.query.udp
            reply = send(msg, CLUSTER_IPS[fam], timeout=timeout)
        except (dns.exception.DNSException, OSError):
            return False
        return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

    return run_in_netns(node.pod, q)


def ask_from_host(node: Node, fam: int, *, tcp: bool = False, timeout: float = 1.0) -> bool:
    """One query from a host-network client (the node namespace) to the ClusterIP."""

    def q() -> bool:
        msg = dns.message.make_query(NAME, QTYPE[fam])
        try:
            send = dns.query.tcp if tcp else dns.query.udp
            reply = send(msg, CLUSTER_IPS[fam], timeout=timeout, source=HOST_CLIENT[fam])
        except (dns.exception.DNSException, OSError):
            return False
        return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

    return run_in_netns(node.node, q)


def pod_flows(node: str, clients: tuple[str, ...] = (POD_IP, POD_IP6)) -> list[str]:
    out = ns_exec(node, "conntrack", "-L", "-f", "ipv4", check=False).stdout
    out += ns_exec(node, "conntrack", "-L", "-f", "ipv6", check=False).stdout
    return [ln for ln in out.splitlines() if "dport=53 " in ln and any(f"src={c} " in ln for c in clients)]


def host_flows(node: str) -> list[str]:
    return pod_flows(node, tuple(HOST_CLIENT.values()))


def owned_tables(node: str) -> dict[str, list[str]]:
    """The agents' own tables (``flags owner``) and our rules in each, as nft prints them (text:
    nft 1.0.6 cannot print an owner table's flags in JSON)."""
    out = ns_exec(node, "nft", "list", "tables", check=False).stdout
    names = [ln.split()[2] for ln in out.splitlines() if ln.startswith(f"table inet {OWNED_PREFIX}")]
    tables = {}
    for name in names:
        text = ns_exec(node, "nft", "list", "table", "inet", name, check=False).stdout
        tables[name] = [ln.strip() for ln in text.splitlines() if "NodeLocal DNS" in ln]
    return tables


def flush(node: str) -> None:
    ns_exec(node, "conntrack", "-F", check=False)
    ns_exec(node, "conntrack", "-F", "-f", "ipv6", check=False)


def rule_lines(node: str) -> dict[str, list[str]]:
    """Our rules per backend, as the tools print them."""
    out: dict[str, list[str]] = {}
    for variant in ("legacy", "nft"):
        lines = []
        for tool in (f"iptables-{variant}-save", f"ip6tables-{variant}-save"):
            lines += [
                ln for ln in ns_exec(node, tool, check=False).stdout.splitlines() if "NodeLocal DNS" in ln
            ]
        out[f"iptables-{variant}"] = lines
    nft = ns_exec(node, "nft", "list", "table", "inet", "nodelocaldns", check=False).stdout
    out["nft"] = [ln.strip() for ln in nft.splitlines() if "NodeLocal DNS" in ln]
    return out


@contextlib.contextmanager
def agent(
    node: Node, backend: str, run: str, env_extra: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    workdir = node.tmp / run
    workdir.mkdir()
    ConfigMapDir(workdir / "coredns", {"Corefile.base": ADDON_COREFILE})
    ConfigMapDir(workdir / "kube-dns", {})
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {ENDPOINTS[4]}\n")
    args = [
        "-localip", ",".join([LINK_LOCAL, *CLUSTER_IPS.values()]),
        "-conf", str(workdir / "Corefile"), "-upstreamsvc", "kube-dns-upstream",
        "-pidfile", str(workdir / "pid"), "-basecorefile", str(workdir / "coredns" / "Corefile.base"),
        "-kubednscm", str(workdir / "kube-dns"), "-syncinterval", f"{SYNC:g}s", "-rules-backend", backend,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODELOCALDNS_")}
    env.update(
        KUBE_DNS_SERVICE_HOST=CLUSTER_IPS[4],
        KUBE_DNS_UPSTREAM_SERVICE_HOST=UPSTREAM_SVC,
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra or {})
    wrapper = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    argv = [
        "ip", "netns", "exec", node.node, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", wrapper, str(resolv), sys.executable, "-m", "nodelocaldns", "node-cache", *args,
    ]  # fmt: skip
    with open(workdir / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    proc.log = workdir / "agent.log"  # type: ignore[attr-defined]
    try:

        def up() -> bool:
            assert proc.poll() is None, (workdir / "agent.log").read_text()
            return (workdir / "pid").exists()

        wait_until(up, 30, "the agent's pidfile")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def served_by_agent(node: Node, fam: int, *, tcp: bool = False) -> bool:
    """The pod's query was answered without reaching kube-dns directly and without conntrack."""
    flush(node.node)
    before = node.pod_queries_seen()
    ok = ask(node, fam, tcp=tcp)
    return ok and node.pod_queries_seen() == before and not pod_flows(node.node)


def served_by_kube_dns(node: Node, fam: int, *, tcp: bool = False, timeout: float = 1.0) -> bool:
    before = node.pod_queries_seen()
    return ask(node, fam, tcp=tcp, timeout=timeout) and node.pod_queries_seen() > before


def host_served_by_agent(node: Node, fam: int, *, tcp: bool = False) -> bool:
    flush(node.node)
    before = node.queries_from(*HOST_CLIENT.values())
    ok = ask_from_host(node, fam, tcp=tcp)
    return ok and node.queries_from(*HOST_CLIENT.values()) == before and not host_flows(node.node)


def host_served_by_kube_dns(node: Node, fam: int, *, tcp: bool = False, timeout: float = 1.0) -> bool:
    before = node.queries_from(*HOST_CLIENT.values())
    ok = ask_from_host(node, fam, tcp=tcp, timeout=timeout)
    return ok and node.queries_from(*HOST_CLIENT.values()) > before


CASES = [("iptables", "legacy"), ("iptables", "nft"), ("nftables", "nft")]


@pytest.mark.parametrize(("backend", "variant"), CASES, ids=["iptables-legacy", "iptables-nft", "nftables"])
def test_sigkill_hands_the_cluster_ip_to_kube_proxy_and_a_restart_takes_it_back(
    tmp_path: Path, backend: str, variant: str
) -> None:
    with node_ns(tmp_path, variant) as node:
        with agent(node, backend, "run1") as first:
            for fam in (4, 6):
                wait_until(lambda f=fam: served_by_agent(node, f), 5 * SYNC, f"the agent on IPv{fam}")
                assert served_by_agent(node, fam, tcp=True), f"TCP IPv{fam} not served by the agent"
            held = rule_lines(node.node)
            first.kill()
            killed = time.monotonic()
            first.wait()
            # no teardown ran: the rules are all still there
            assert rule_lines(node.node) == held
            # the very first query after the kill is kube-dns's, through kube-proxy's DNAT
            asked = time.monotonic()
            assert served_by_kube_dns(node, 4, timeout=1.0), "IPv4 ClusterIP not answered after SIGKILL"
            answered = time.monotonic()
            latency, rtt = answered - killed, answered - asked
            for fam in (4, 6):
                assert served_by_kube_dns(node, fam, timeout=1.0), f"IPv{fam} fail-safe (UDP)"
                assert served_by_kube_dns(node, fam, tcp=True, timeout=1.0), f"IPv{fam} fail-safe (TCP)"
            assert pod_flows(node.node), "fail-safe traffic goes through conntrack and DNAT"
        started = time.monotonic()
        with agent(node, backend, "run2"):
            up = time.monotonic() - started
            back = wait_until(lambda: served_by_agent(node, 4), SYNC, "traffic back at the agent")
            for fam in (4, 6):
                assert served_by_agent(node, fam) and served_by_agent(node, fam, tcp=True)
        print(f"\n{backend}/{variant}: first answer {latency * 1000:.1f} ms after SIGKILL "
              f"(that query's round trip {rtt * 1000:.1f} ms); "
              f"restart: pidfile after {up:.2f} s, agent answering {back * 1000:.0f} ms later")  # fmt: skip


def plant_unconditional_host_rule(node: str, backend: str, variant: str) -> str:
    """The host-network NOTRACK rule as an earlier version (or node-cache) put it in the backend:
    unconditional, so it would outlive a SIGKILL. Returns what to look for in the listing."""
    if backend == "nftables":
        ns_exec(node, "nft", "add", "rule", "inet", "nodelocaldns", "raw_output", "ip", "daddr", CLUSTER_IPS[4],
                "udp", "dport", "53", "counter", "notrack", "comment", '"NodeLocal DNS Cache: skip conntrack"')  # fmt: skip
        # the PREROUTING copy has a socket match, the INPUT one accepts
        return f"ip daddr {CLUSTER_IPS[4]} udp dport 53 counter packets"
    ns_exec(node, f"iptables-{variant}", "-t", "raw", "-I", "OUTPUT", "1", "-p", "udp", "-d", CLUSTER_IPS[4],
            "--dport", "53", "-j", "NOTRACK", "-m", "comment", "--comment", "NodeLocal DNS Cache: skip conntrack")  # fmt: skip
    return f"-A OUTPUT -d {CLUSTER_IPS[4]}/32 -p udp"


@pytest.mark.parametrize(("backend", "variant"), CASES, ids=["iptables-legacy", "iptables-nft", "nftables"])
def test_sigkill_hands_host_network_dns_to_kube_proxy_and_a_restart_takes_it_back(
    tmp_path: Path, backend: str, variant: str
) -> None:
    kind = "nft" if backend == "nftables" else f"iptables-{variant}"
    with node_ns(tmp_path, variant) as node:
        with agent(node, backend, "run1") as first:
            tables = owned_tables(node.node)
            assert len(tables) == 1, tables
            (own,) = tables.values()
            assert len(own) == 4, own  # raw OUTPUT tcp+udp to each ClusterIP's :53
            assert len(rule_lines(node.node)[kind]) == 32  # the rest of node-cache's 36
            for fam in (4, 6):
                wait_until(lambda f=fam: host_served_by_agent(node, f), 5 * SYNC, f"host client on IPv{fam}")
                assert host_served_by_agent(node, fam, tcp=True), f"host TCP IPv{fam} not served by the agent"
            # An earlier version's unconditional copy in the backend is removed within a sync interval.
            planted = plant_unconditional_host_rule(node.node, backend, variant)
            wait_until(
                lambda: not any(planted in ln and "accept" not in ln for ln in rule_lines(node.node)[kind]),
                3 * SYNC,
                "the old rule gone",
            )
            first.kill()
            killed = time.monotonic()
            first.wait()  # a dying process holds its sockets (and its table) until its exit completes
            exited = time.monotonic() - killed
            # the kernel deleted the agent's own table with its netlink socket; nothing else changed
            assert host_served_by_kube_dns(node, 4, timeout=1.0), (
                "IPv4 host client not answered after SIGKILL"
            )
            answered = time.monotonic() - killed
            assert owned_tables(node.node) == {}
            assert len(rule_lines(node.node)[kind]) == 32
            for fam in (4, 6):
                assert host_served_by_kube_dns(node, fam, timeout=1.0), f"IPv{fam} host fail-safe (UDP)"
                assert host_served_by_kube_dns(node, fam, tcp=True, timeout=1.0), (
                    f"IPv{fam} host fail-safe (TCP)"
                )
            assert host_flows(node.node), "fail-safe traffic goes through conntrack and DNAT"
        started = time.monotonic()
        with agent(node, backend, "run2") as second:
            up = time.monotonic() - started
            back = wait_until(lambda: host_served_by_agent(node, 4), SYNC, "host traffic back at the agent")
            for fam in (4, 6):
                assert host_served_by_agent(node, fam) and host_served_by_agent(node, fam, tcp=True)
            assert len(owned_tables(node.node)) == 1
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
            log = second.log.read_text()  # type: ignore[attr-defined]
            assert "Deleted 4 nodelocaldns rules (table inet nodelocaldns-agent-" in log, log
            assert owned_tables(node.node) == {} and not any(rule_lines(node.node).values())
    print(f"\n{backend}/{variant}: host-network client answered by kube-dns {answered * 1000:.1f} ms after "
          f"SIGKILL (exit took {exited * 1000:.1f} ms); restart: pidfile after {up:.2f} s, host client at the agent {back * 1000:.0f} ms later")  # fmt: skip


OTHER_IP = "198.18.0.99"  # another instance's address: rules for it are never ours to remove


def plant_foreign(node: str, backend: str, variant: str) -> list[str]:
    """Rules another process owns in ``backend``: our comment on somebody else's address, and an
    operator's rule for our ClusterIP without our comment. Returns what to look for afterwards."""
    if backend == "nftables":
        ns_exec(node, "nft", "add", "rule", "inet", "nodelocaldns", "raw_prerouting", "ip", "daddr", OTHER_IP,
                "udp", "dport", "53", "counter", "notrack", "comment", '"NodeLocal DNS Cache: skip conntrack"')  # fmt: skip
        return [OTHER_IP]
    tool = f"iptables-{variant}"
    ns_exec(node, tool, "-t", "raw", "-I", "PREROUTING", "1", "-d", OTHER_IP, "-p", "udp", "--dport", "53",
            "-j", "NOTRACK", "-m", "comment", "--comment", "NodeLocal DNS Cache: skip conntrack")  # fmt: skip
    ns_exec(node, tool, "-t", "filter", "-I", "INPUT", "1", "-d", CLUSTER_IPS[4], "-p", "udp", "--dport", "53",
            "-j", "ACCEPT", "-m", "comment", "--comment", "operator")  # fmt: skip
    return [OTHER_IP]


def iptables_lines(node: str, variant: str, needle: str) -> list[str]:
    out = ns_exec(node, f"iptables-{variant}-save", check=False).stdout
    out += ns_exec(node, f"ip6tables-{variant}-save", check=False).stdout
    return [ln for ln in out.splitlines() if needle in ln]


@pytest.mark.parametrize(
    ("first", "first_variant", "second", "second_kind"),
    [("iptables", "legacy", "nftables", "nft"), ("nftables", "nft", "iptables", "iptables-nft")],
    ids=["iptables-legacy-then-nftables", "nftables-then-iptables-nft"],
)
def test_rules_an_unclean_exit_left_in_the_other_backend_are_removed_at_start(
    tmp_path: Path, first: str, first_variant: str, second: str, second_kind: str
) -> None:
    first_kind = "nft" if first == "nftables" else f"iptables-{first_variant}"
    with node_ns(tmp_path, first_variant) as node:
        with agent(node, first, "a") as a:
            # 12 per address, 3 addresses, less the host-network rules in the agent's own table
            assert len(rule_lines(node.node)[first_kind]) == 32
            a.kill()
            a.wait()
        foreign = plant_foreign(node.node, first, first_variant)
        with agent(node, second, "b") as b:
            lines = rule_lines(node.node)
            log = b.log.read_text()  # type: ignore[attr-defined]
            assert len(lines[second_kind]) == 32, log
            # what is left in the first backend is exactly what was not ours
            left = lines[first_kind]
            assert left and all(any(f in ln for f in foreign) for ln in left), left
            assert f"Deleted 32 nodelocaldns rules an earlier run left in {first_kind}" in log, log
            if first == "iptables":
                assert iptables_lines(node.node, first_variant, "--comment operator"), (
                    "an operator's rule was removed"
                )
            for fam in (4, 6):
                assert served_by_agent(node, fam)


def test_without_the_socket_match_the_agent_falls_back_to_node_caches_rules(tmp_path: Path) -> None:
    # The socket match is built into this kernel, so its absence is the userspace extension's:
    # a copy of the xtables extension directory without libxt_socket.so, which iptables really loads.
    src = Path("/usr/lib/x86_64-linux-gnu/xtables")
    if not (src / "libxt_socket.so").exists():
        pytest.skip("no xtables extension directory here")
    libdir = tmp_path / "xtables"
    shutil.copytree(src, libdir)
    (libdir / "libxt_socket.so").unlink()
    with node_ns(tmp_path, "nft") as node:
        with agent(node, "iptables", "fallback", {"XTABLES_LIBDIR": str(libdir)}) as a:
            log = a.log.read_text()  # type: ignore[attr-defined]
            assert "cannot match on sockets" in log, log
            lines = rule_lines(node.node)["iptables-nft"]
            assert len(lines) == 32 and not any("socket" in ln for ln in lines), lines
            assert [len(t) for t in owned_tables(node.node).values()] == [4]  # that needs no xt_socket
            metrics = run_in_netns(node.node, lambda: _get("http://127.0.0.1:9353/metrics"))
            assert 'coredns_nodecache_setup_errors_total{errortype="socket_match"} 1.0' in metrics
            assert served_by_agent(node, 4)


def _get(url: str) -> str:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=3) as resp:
        return str(resp.read().decode())

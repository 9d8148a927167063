"""``nodelocaldns doctor`` against a real node built inside a network namespace.

The node: a ``nodelocaldns`` bridge holding 169.254.20.10 and fd00:d15::10 (``ensure_interface``),
node-cache's rules installed by a real backend (``ensure``), conntrack active (as kube-proxy makes
it), unbound in the namespace as the upstream, and ``nodelocaldns serve`` binding both addresses.
A healthy node must come out all ok; each breakage an operator meets must fail the right check
(and only the checks it really breaks). Doctor runs as a subprocess inside the namespace, exactly
as an operator would run it on a node. Pure judgement tests (no root) come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dns.message
import dns.query
import pytest

from nodelocaldns.node.backend import RulesBackend
from nodelocaldns.node.interface import ensure_interface
from nodelocaldns.node.iptables import IptablesBackend
from nodelocaldns.node.nft import NftBackend
from nodelocaldns.node.rules import Rule, desired_rules
from nodelocaldns.tools.doctor import parse_options
from nodelocaldns.tools.doctor_checks import check_policy_routing, check_rules
from nodelocaldns.tools.doctor_corefile import corefile_hints
from nodelocaldns.tools.doctor_facts import (
    RTN_LOCAL,
    RTN_THROW,
    BackendRules,
    PolicyFacts,
    RouteFact,
    RuleFact,
    RulesetFacts,
    covering_listener,
    parse_proc_net,
)
from support.addon import AGENT_TEMPLATE
from support.netns import add_bridge, enable_conntrack, netns, netns_available, ns_exec, run_in_netns
from support.upstreams import CLUSTER_ZONES, PROBE_NAME, UpstreamServer, unbound_server

T = TypeVar("T")
IP4 = "169.254.20.10"
IP6 = "fd00:d15::10"
IPS = (IP4, IP6)
IFACE = "nodelocaldns"
EXTERNAL = "www.example.net."
ZONES = {**CLUSTER_ZONES, "example.net.": ["www.example.net. 300 IN A 198.18.2.2"]}
UPSTREAM_PORT = 5300

COREFILE = """\
cluster.local:53 {{
    errors
    cache {{
        success 9984 30
        denial 9984 5
    }}
    bind {ips}
    forward . 127.0.0.1:{up} {{
        force_tcp
    }}
    prometheus :9253
    health {ip4}:8080
    ready {ip4}:8181
}}
.:53 {{
    errors
    cache 30
    bind {ips}
    forward . 127.0.0.1:{up}
    prometheus :9253
}}
"""

needs_netns = pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")


# ---------------------------------------------------------------- pure judgements (no root)


def test_proc_net_parser_finds_a_real_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        t.bind(("127.0.0.1", 0))
        t.listen(1)
        uport, tport = u.getsockname()[1], t.getsockname()[1]
        with open("/proc/thread-self/net/udp") as f:
            udp = parse_proc_net(f.read(), "udp")
        with open("/proc/thread-self/net/tcp") as f:
            tcp = parse_proc_net(f.read(), "tcp")
    assert covering_listener(udp, "udp", "127.0.0.1", uport) is not None
    assert covering_listener(tcp, "tcp", "127.0.0.1", tport) is not None
    assert covering_listener(tcp, "tcp", "127.0.0.2", tport) is None


def test_proc_net_parser_reads_ipv6_words_in_host_order() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
        u.bind(("::1", 0))
        port = u.getsockname()[1]
        with open("/proc/thread-self/net/udp6") as f:
            found = [s for s in parse_proc_net(f.read(), "udp") if s.port == port]
    assert [s.ip for s in found] == ["::1"]


# The `ip rule` / `routel 102` layout from seed 002 (EKS, POD_SECURITY_GROUP_ENFORCING_MODE=strict).
EKS_RULES = (
    RuleFact(4, 10, 102, iif="vlan.eth.2"),
    RuleFact(4, 10, 102, iif="vlanc6461fc2633"),
    RuleFact(4, 20, 255),
    RuleFact(4, 512, 254, dst="10.0.42.112", dst_len=32),
    RuleFact(4, 1024, 254, fwmark=0x80),
    RuleFact(4, 32766, 254),
    RuleFact(4, 32767, 253),
)
EKS_TABLE_102 = (
    RouteFact(4, 102, "", 0, dev="vlan.eth.2", gateway="10.0.32.1"),
    RouteFact(4, 102, "10.0.32.1", 32, dev="vlan.eth.2"),
    RouteFact(4, 102, "10.0.60.20", 32, dev="vlanc6461fc2633"),
)


def test_eks_strict_mode_layout_fails_with_the_standard_mode_fix() -> None:
    check = check_policy_routing(
        ["169.254.20.10", "172.20.0.10"], PolicyFacts(EKS_RULES, {(4, 102): EKS_TABLE_102}), IFACE
    )
    assert check.status == "fail"
    assert check.data["eks"] is True
    assert "POD_SECURITY_GROUP_ENFORCING_MODE=standard" in check.hint
    assert "`10: from all iif vlan.eth.2 lookup 102`" in check.detail
    assert "default via 10.0.32.1 dev vlan.eth.2 table 102" in check.detail
    assert {o["ip"] for o in check.data["offending"]} == {"169.254.20.10", "172.20.0.10"}


def test_eks_standard_mode_layout_is_ok() -> None:
    # After POD_SECURITY_GROUP_ENFORCING_MODE=standard: local first, per-pod rules after it.
    rules = (
        RuleFact(4, 20, 255),
        RuleFact(4, 512, 254, dst="10.0.62.182", dst_len=32),
        RuleFact(4, 1536, 101, src="10.0.62.182", src_len=32),
        RuleFact(4, 32766, 254),
    )
    check = check_policy_routing(["169.254.20.10"], PolicyFacts(rules, {}), IFACE)
    assert check.status == "ok", check.detail


@pytest.mark.parametrize(
    ("route", "status"),
    [
        (RouteFact(4, 102, "169.254.20.10", 32, type=RTN_LOCAL, dev=IFACE), "ok"),  # the manual workaround
        (RouteFact(4, 102, "", 0, type=RTN_THROW), "ok"),  # falls through to the next rule
        (RouteFact(4, 102, "10.0.0.0", 8, dev="vlan.eth.2"), "ok"),  # does not cover the IP
        (RouteFact(4, 102, "169.254.0.0", 16, dev="eth0", gateway="10.0.0.1"), "fail"),
    ],
)
def test_a_table_ahead_of_local_only_matters_if_it_routes_the_ip_away(route: RouteFact, status: str) -> None:
    rules = (RuleFact(4, 10, 102, iif="eth1"), RuleFact(4, 20, 255), RuleFact(4, 32766, 254))
    check = check_policy_routing([IP4], PolicyFacts(rules, {(4, 102): (route,)}), IFACE)
    assert check.status == status, check.detail
    assert check.data.get("eks", False) is False


def test_rules_that_cannot_match_dns_to_the_ip_are_ignored() -> None:
    away = (RouteFact(4, 7, "", 0, dev="eth0", gateway="10.0.0.1"),)
    for rule in (
        RuleFact(4, 5, 7, dst="10.0.0.0", dst_len=8),  # another destination
        RuleFact(4, 5, 7, dport_range=(443, 443)),  # another port
        RuleFact(4, 5, 7, iif="gone0", flags=0x8),  # detached: the interface does not exist
    ):
        facts = PolicyFacts((rule, RuleFact(4, 20, 255)), {(4, 7): away})
        assert check_policy_routing([IP4], facts, IFACE).status == "ok", rule.render()
    facts = PolicyFacts((RuleFact(4, 5, 7, dport_range=(53, 53)), RuleFact(4, 20, 255)), {(4, 7): away})
    assert check_policy_routing([IP4], facts, IFACE).status == "fail"


def test_unreadable_rulesets_are_a_warning_not_a_verdict() -> None:
    facts = RulesetFacts(
        tuple(
            BackendRules(b, error="Permission denied (you must be root)")
            for b in ("iptables-nft", "iptables-legacy", "nft")
        )
    )
    check = check_rules(desired_rules([IP4]), facts)
    assert check.status == "warn" and "Permission denied" in check.detail


def test_missing_local_rule_fails() -> None:
    check = check_policy_routing([IP4], PolicyFacts((RuleFact(4, 32766, 254),), {}), IFACE)
    assert check.status == "fail" and "no `lookup local` rule" in check.detail


def test_corefile_hints_from_the_shipped_template() -> None:
    template = (Path(__file__).resolve().parents[2] / "deploy" / "base" / "Corefile").read_text()
    text = (
        template.replace("__PILLAR__DNS__DOMAIN__", "cluster.example")
        .replace("__PILLAR__LOCAL__DNS__", IP4)
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
        .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.20")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf")
    )
    hints = corefile_hints(text)
    assert hints.local_ips == (IP4, "10.96.0.10")
    assert hints.domain == "cluster.example"
    assert hints.health == f"http://{IP4}:8080/health"
    assert hints.ready == f"http://{IP4}:8181/ready"
    assert hints.metrics == f"http://{IP4}:9253/metrics"  # `prometheus :9253` listens everywhere


def test_node_cache_spelling_of_the_local_ip_flag_is_accepted() -> None:
    # The troubleshooting page says "the same -localip the DaemonSet uses": its value pastes as is.
    opts = parse_options(["-localip", f"{IP4},10.96.0.10", "--corefile", ""], {})
    assert opts.local_ips == [IP4, "10.96.0.10"]
    assert parse_options(["--local-ip", IP4, "--local-ip", "10.96.0.10", "--corefile", ""], {}).local_ips == [
        IP4,
        "10.96.0.10",
    ]
    assert not any("kube-dns" in n for n in opts.notes)


def test_skipped_kube_dns_ip_is_said() -> None:
    """No Corefile and no $KUBE_DNS_SERVICE_HOST: only the link-local IP is checked, and doctor says so."""
    opts = parse_options(["--corefile", ""], {})
    assert opts.local_ips == [IP4]
    (note,) = opts.notes
    assert "checked only 169.254.20.10, not the kube-dns ClusterIP" in note
    assert "--local-ip 169.254.20.10,KUBE_DNS_IP" in note
    assert parse_options(["--corefile", ""], {"KUBE_DNS_SERVICE_HOST": "10.96.0.10"}).notes == []


def test_an_unreadable_corefile_is_said_in_words(tmp_path: Path) -> None:
    """--corefile that cannot be read stops doctor with the reason as an operator reads it; a broken
    Corefile names its file and line."""
    missing = tmp_path / "Corefile"
    with pytest.raises(SystemExit) as exc:
        parse_options(["--corefile", str(missing)], {})
    assert (
        str(exc.value) == f"nodelocaldns doctor: cannot use --corefile {missing}: no such file or directory"
    )
    missing.write_text(".:53 {\n    bind 169.254.20.10\n")
    with pytest.raises(SystemExit) as exc:
        parse_options(["--corefile", str(missing)], {})
    assert str(exc.value).startswith(f"nodelocaldns doctor: cannot use --corefile {missing}: {missing}:1: ")


# ---------------------------------------------------------------- the node in a namespace


def arun(ns: str, fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return run_in_netns(ns, lambda: asyncio.run(main()))


def make_backend(kind: str) -> RulesBackend:
    if kind == "nft":
        return NftBackend()
    return IptablesBackend("nft" if kind == "iptables-nft" else "legacy")


def udp_answers(ip: str, name: str = PROBE_NAME) -> bool:
    try:
        dns.query.udp(dns.message.make_query(name, "A"), ip, port=53, timeout=0.3)
        return True
    except (OSError, dns.exception.Timeout):
        return False


@dataclass
class Node:
    ns: str
    backend: str
    server: subprocess.Popen[bytes]
    upstream: UpstreamServer
    log: Path

    def doctor(self, *args: str, env: dict[str, str] | None = None, as_json: bool = True) -> tuple[int, Any]:
        argv = [sys.executable, "-m", "nodelocaldns", "doctor", *(["--json"] if as_json else [])]
        if not env and not any(a in ("--local-ip", "-localip", "--corefile") for a in args):
            argv += ["--local-ip", ",".join(IPS)]
        argv += ["--external-name", EXTERNAL, "--timeout", "1", *args]
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        res = subprocess.run(
            ["ip", "netns", "exec", self.ns, *prefix, *argv], capture_output=True, text=True, timeout=60
        )
        assert res.returncode in (0, 1), res.stderr
        if not as_json:
            return res.returncode, res.stdout
        doc = json.loads(res.stdout)
        assert (res.returncode == 1) == (doc["status"] == "fail")
        return res.returncode, doc

    def stop_server(self) -> None:
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


def statuses(doc: Any) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["checks"]}


def by_id(doc: Any, check_id: str) -> Any:
    return next(c for c in doc["checks"] if c["id"] == check_id)


def serve_argv(ns: str, tmp_path: Path) -> list[str]:
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE.format(ips=" ".join(IPS), up=UPSTREAM_PORT, ip4=IP4))
    return [
        "ip",
        "netns",
        "exec",
        ns,
        sys.executable,
        "-m",
        "nodelocaldns",
        "serve",
        "--corefile",
        str(corefile),
    ]


def agent_argv(ns: str, tmp_path: Path) -> list[str]:
    """The real agent with the addon DaemonSet's flags; the second local IP comes from the kube-dns
    Service environment, as in a pod, and kube-dns-upstream is the in-namespace unbound."""
    (tmp_path / "coredns").mkdir()
    (tmp_path / "coredns" / "Corefile.base").write_text(AGENT_TEMPLATE.format(up=UPSTREAM_PORT))
    env = [f"KUBE_DNS_SERVICE_HOST={IP6}", "KUBE_DNS_UPSTREAM_SERVICE_HOST=127.0.0.1"]
    return [
        "ip", "netns", "exec", ns, "env", *env, sys.executable, "-m", "nodelocaldns", "node-cache",
        "-localip", f"{IP4},__PILLAR__DNS__SERVER__", "-conf", str(tmp_path / "Corefile"),
        "-basecorefile", str(tmp_path / "coredns" / "Corefile.base"), "-upstreamsvc", "kube-dns-upstream",
        "-kubednscm", str(tmp_path / "no-kube-dns"), "-pidfile", str(tmp_path / "node-cache.pid"),
        "-syncinterval", "1s",
    ]  # fmt: skip


@contextlib.contextmanager
def node_in_netns(tmp_path: Path, backend: str, agent: bool = False) -> Iterator[Node]:
    """The node, set up by hand from the agent's building blocks or (``agent``) by the agent itself."""
    with netns("nlddoc") as ns:
        add_bridge(ns, IFACE)  # what node-cache's dummy would be; the agent reuses it
        enable_conntrack(ns)
        if not agent:
            arun(ns, lambda: ensure_interface(IFACE, IPS))
            arun(ns, lambda: make_backend(backend).ensure(desired_rules(IPS)))
        cm = unbound_server(ZONES, port=UPSTREAM_PORT)
        upstream = run_in_netns(ns, cm.__enter__)
        try:
            log = tmp_path / "server.log"
            argv = agent_argv(ns, tmp_path) if agent else serve_argv(ns, tmp_path)
            with open(log, "wb") as out:
                server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            node = Node(ns, backend, server, upstream, log)
            try:
                deadline = time.monotonic() + 20
                while not (
                    run_in_netns(ns, lambda: all(udp_answers(ip) for ip in IPS))
                    and (not agent or (tmp_path / "node-cache.pid").exists())
                ):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{argv[4:7]} did not come up:\n{log.read_text()}")
                    time.sleep(0.05)
                yield node
            finally:
                node.stop_server()
        finally:
            run_in_netns(ns, lambda: cm.__exit__(None, None, None))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with node_in_netns(tmp_path, "iptables-nft") as n:
        yield n


def xt(ns: str, variant: str, rule: Rule, *verb: str) -> None:
    """An iptables command as an operator types it (not built with our renderer)."""
    tool = f"{'iptables' if rule.family == 4 else 'ip6tables'}-{variant}"
    flag, pflag = ("-d", "--dport") if rule.direction == "dst" else ("-s", "--sport")
    socket = ["-m", "socket", "--nowildcard"] if rule.socket else []
    spec = ["-p", rule.proto, flag, rule.ip, pflag, str(rule.port), *socket, "-j", rule.target]
    ns_exec(ns, tool, "-t", rule.table, *verb, *spec, "-m", "comment", "--comment", rule.comment)


def host_client_notrack(ip: str) -> Rule:
    """raw OUTPUT -p udp -d IP --dport 53 -j NOTRACK: what keeps a host-network client's query untracked."""
    return next(
        r
        for r in desired_rules([ip])
        if (r.table, r.chain, r.proto, r.direction, r.port) == ("raw", "OUTPUT", "udp", "dst", 53)
    )


@pytest.mark.root
@needs_netns
@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy", "nft"])
def test_healthy_node_is_all_ok(tmp_path: Path, backend: str) -> None:
    with node_in_netns(tmp_path, backend) as n:
        code, doc = n.doctor()
        assert code == 0 and doc["status"] == "ok", json.dumps(doc, indent=1)
        assert set(statuses(doc).values()) == {"ok"}
        assert list(statuses(doc)) == [
            "interface", "local-routes", "policy-routing", "rules", "rules-duplicates", "listeners",
            "dns-cluster", "dns-external", "conntrack", "health", "ready", "metrics",
        ]  # fmt: skip
        assert by_id(doc, "rules")["data"]["backend"] == backend
        assert by_id(doc, "rules")["detail"].startswith(f"24/24 rules in {backend}")
        # every lookup was answered by the cache on the repeat, through both addresses
        for check_id, name in (
            ("dns-cluster", "kubernetes.default.svc.cluster.local"),
            ("dns-external", EXTERNAL),
        ):
            lookups = by_id(doc, check_id)["data"]["lookups"]
            assert {lk["ip"] for lk in lookups} == set(IPS)
            for lk in lookups:
                assert lk["name"].rstrip(".") == name.rstrip(".")
                assert lk["first"]["rcode"] == "NOERROR" and lk["first"]["answers"] >= 1
                assert lk["cache_hits_delta"] >= 1
        # the upstream saw each name once: every other query was answered from the cache
        assert n.upstream.query_count("kubernetes.default.svc.cluster.local.") == 1
        assert n.upstream.query_count(EXTERNAL) == 1
        conntrack = by_id(doc, "conntrack")["data"]["probes"]
        assert all(p["control_tracked"] and not p["dns_tracked"] for p in conntrack), conntrack


@pytest.mark.root
@needs_netns
def test_local_ips_default_to_link_local_plus_kube_dns_service_host(node: Node) -> None:
    code, doc = node.doctor(env={"KUBE_DNS_SERVICE_HOST": IP6})
    assert doc["local_ips"] == [IP4, IP6]
    assert code == 0, json.dumps(doc, indent=1)


@pytest.mark.root
@needs_netns
def test_settings_come_from_the_served_corefile(node: Node, tmp_path: Path) -> None:
    code, doc = node.doctor("--corefile", str(tmp_path / "Corefile"))
    assert code == 0, json.dumps(doc, indent=1)
    assert doc["local_ips"] == list(IPS)  # the Corefile's bind line
    assert by_id(doc, "ready")["data"]["url"] == f"http://{IP4}:8181/ready"
    assert by_id(doc, "metrics")["data"]["url"] == f"http://{IP4}:9253/metrics"
    # A ready endpoint the Corefile declares must answer: stopping the server now fails it.
    node.stop_server()
    code, doc = node.doctor("--corefile", str(tmp_path / "Corefile"))
    assert statuses(doc)["ready"] == "fail" and statuses(doc)["metrics"] == "fail"


@pytest.mark.root
@needs_netns
def test_deleted_notrack_rule_fails_rules_and_conntrack(node: Node) -> None:
    xt(node.ns, "nft", host_client_notrack(IP4), "-D", "OUTPUT")
    code, doc = node.doctor()
    assert code == 1
    failing = {k for k, v in statuses(doc).items() if v != "ok"}
    assert failing == {"rules", "conntrack"}, json.dumps(doc, indent=1)
    rules = by_id(node_doc := doc, "rules")
    assert rules["data"]["missing"] == [
        f"-t raw OUTPUT -p udp -d {IP4} --dport 53 -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack"
    ]
    assert "23/24 rules in iptables-nft" in rules["detail"]
    probes = {p["ip"]: p for p in by_id(node_doc, "conntrack")["data"]["probes"]}
    assert probes[IP4]["dns_tracked"] and not probes[IP6]["dns_tracked"]


@pytest.mark.root
@needs_netns
def test_duplicate_rule_fails_duplicates_only(tmp_path: Path) -> None:
    with node_in_netns(tmp_path, "iptables-legacy") as n:
        rule = desired_rules([IP6])[0]
        xt(n.ns, "legacy", rule, "-I", rule.chain, "1")
        xt(n.ns, "legacy", rule, "-I", rule.chain, "1")
        code, doc = n.doctor()
    assert code == 1
    assert {k for k, v in statuses(doc).items() if v != "ok"} == {"rules-duplicates"}, json.dumps(
        doc, indent=1
    )
    dups = by_id(doc, "rules-duplicates")["data"]["duplicates"]
    assert dups == {
        "iptables-legacy": [
            {
                "rule": f"-t raw PREROUTING -p tcp -d {IP6} --dport 53 -m socket --nowildcard -j NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack",
                "copies": 3,
            }
        ]
    }


@pytest.mark.root
@needs_netns
def test_rules_split_over_two_rulesets_warn(node: Node) -> None:
    # An old agent's leftovers in the other variant: still works, but the ACCEPTs cannot help.
    arun(node.ns, lambda: make_backend("iptables-legacy").ensure(desired_rules([IP4])))
    code, doc = node.doctor()
    assert code == 0
    assert by_id(doc, "rules")["status"] == "warn"
    assert "also found in iptables-legacy (12)" in by_id(doc, "rules")["detail"]


@pytest.mark.root
@needs_netns
def test_removed_address_fails_interface_routes_and_lookups(node: Node) -> None:
    ns_exec(node.ns, "ip", "addr", "del", f"{IP6}/128", "dev", IFACE)
    code, doc = node.doctor()
    assert code == 1
    got = statuses(doc)
    assert {k for k, v in got.items() if v == "fail"} == {
        "interface",
        "local-routes",
        "dns-cluster",
        "dns-external",
    }, json.dumps(doc, indent=1)
    assert got["conntrack"] == "warn"  # cannot be verified for an address that is gone
    assert by_id(doc, "conntrack")["detail"].startswith(f"not verified: cannot send to {IP6}: ")
    assert f"{IP6} is missing" in by_id(doc, "interface")["detail"]
    assert f"no `local {IP6}` route in table local" in by_id(doc, "local-routes")["detail"]
    assert f"ip addr add {IP6}/128 dev {IFACE}" in by_id(doc, "interface")["hint"]
    lookups = {lk["ip"]: lk for lk in by_id(doc, "dns-cluster")["data"]["lookups"]}
    assert lookups[IP4]["first"]["rcode"] == "NOERROR" and lookups[IP6]["first"]["rcode"] == ""


@pytest.mark.root
@needs_netns
def test_stopped_server_fails_listeners_lookups_and_health(node: Node) -> None:
    node.stop_server()
    code, doc = node.doctor()
    assert code == 1
    got = statuses(doc)
    assert {k for k, v in got.items() if v == "fail"} == {
        "listeners",
        "dns-cluster",
        "dns-external",
        "health",
    }, json.dumps(doc, indent=1)
    # ready and metrics were not named on the command line: their absence is only a warning
    assert got["ready"] == "warn" and got["metrics"] == "warn"
    assert all(got[k] == "ok" for k in ("interface", "local-routes", "policy-routing", "rules", "conntrack"))
    assert f"udp {IP4}:53" in by_id(doc, "listeners")["detail"]
    # Every failure is said once: one line per lookup, the URL once per endpoint.
    for check_id in ("dns-cluster", "dns-external"):
        detail = by_id(doc, check_id)["detail"]
        for ip in IPS:
            assert detail.count(f" via {ip}") == 1, detail
    cluster = by_id(doc, "dns-cluster")["detail"]
    assert cluster.count("udp no answer") == 2 and cluster.count("tcp no answer") == 2, cluster
    for check_id in ("health", "ready", "metrics"):
        check = by_id(doc, check_id)
        assert check["detail"].count(check["data"]["url"]) == 1, check["detail"]
    # The socket's reason in words and what to check, not Python's "[Errno 111] Connection refused".
    assert by_id(doc, "health")["detail"] == (
        f"http://{IP4}:8080/health: connection refused: is the agent running and listening on {IP4}:8080?"
    )
    # The hints name what exists: the `prometheus` plugin, no `-upstream` flag.
    assert "`prometheus` plugin" in by_id(doc, "metrics")["hint"]
    assert "`metrics`" not in by_id(doc, "metrics")["hint"]
    assert "-upstream" not in by_id(doc, "dns-external")["hint"]
    assert "upstreamNameservers" in by_id(doc, "dns-external")["hint"]
    code, doc = node.doctor("--ready", f"http://{IP4}:8181/ready")
    assert statuses(doc)["ready"] == "fail"
    # node-cache's flag spelling gives the same run.
    code, doc = node.doctor("-localip", ",".join(IPS))
    assert doc["local_ips"] == list(IPS) and statuses(doc)["listeners"] == "fail"


def _route_get(ns: str, iif: str) -> str:
    return ns_exec(ns, "ip", "route", "get", IP4, "from", "198.18.7.7", "iif", iif).stdout


@pytest.mark.root
@needs_netns
def test_eks_policy_routing_ahead_of_local_is_detected(node: Node) -> None:
    ns = node.ns
    # The branch-ENI layout: a VLAN interface (a veth here: this kernel has no vlan driver) with its
    # own table whose default route leaves through it, consulted (priority 10) before `lookup local`
    # (moved to 20), as the VPC CNI sets it up in strict mode.
    ns_exec(ns, "ip", "link", "add", "vlan.eth.2", "type", "veth", "peer", "name", "trunk0p")
    for dev in ("vlan.eth.2", "trunk0p"):
        ns_exec(ns, "ip", "link", "set", dev, "up")
    ns_exec(ns, "ip", "addr", "add", "198.18.5.2/24", "dev", "vlan.eth.2")
    # forwarding on, so `ip route get ... iif` can show where a pod's packet would go
    ns_exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    ns_exec(ns, "ip", "route", "add", "default", "via", "198.18.5.1", "dev", "vlan.eth.2", "table", "100")
    ns_exec(ns, "ip", "rule", "add", "pref", "20", "table", "local")
    ns_exec(ns, "ip", "rule", "del", "pref", "0", "table", "local")
    ns_exec(ns, "ip", "rule", "add", "pref", "10", "iif", "vlan.eth.2", "table", "100")
    # the kernel agrees a pod's query arriving on the VLAN is routed away, not delivered locally
    assert "via 198.18.5.1 dev vlan.eth.2" in _route_get(ns, "vlan.eth.2")

    code, doc = node.doctor()
    assert code == 1
    got = statuses(doc)
    assert {k for k, v in got.items() if v != "ok"} == {"policy-routing"}, json.dumps(doc, indent=1)
    check = by_id(doc, "policy-routing")
    assert check["data"]["eks"] is True
    assert "`10: from all iif vlan.eth.2 lookup 100`" in check["detail"]
    assert "POD_SECURITY_GROUP_ENFORCING_MODE=standard" in check["hint"]
    code, text = node.doctor(as_json=False)
    assert code == 1 and "How to fix" in text and "POD_SECURITY_GROUP_ENFORCING_MODE=standard" in text

    # The manual workaround (amazon-vpc-cni-k8s #1661): the local route in the VLAN's table.
    ns_exec(ns, "ip", "route", "add", "local", IP4, "dev", IFACE, "table", "100")
    assert _route_get(ns, "vlan.eth.2").startswith(f"local {IP4}")
    code, doc = node.doctor()
    assert code == 0 and statuses(doc)["policy-routing"] == "ok", json.dumps(doc, indent=1)


@pytest.mark.root
@needs_netns
@pytest.mark.skipif(importlib.util.find_spec("nodelocaldns.node.agent") is None, reason="no node agent yet")
def test_real_agent_passes_and_its_teardown_is_seen(tmp_path: Path) -> None:
    with node_in_netns(tmp_path, "iptables-nft", agent=True) as n:
        # Rules go in once the pidfile exists; give the first sync a moment.
        deadline = time.monotonic() + 10
        while True:
            code, doc = n.doctor(env={"KUBE_DNS_SERVICE_HOST": IP6})
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert doc["local_ips"] == [IP4, IP6]
        assert code == 0 and set(statuses(doc).values()) == {"ok"}, (
            json.dumps(doc, indent=1) + n.log.read_text()
        )
        assert by_id(doc, "rules")["detail"].startswith("24/24 rules in ")
        n.stop_server()  # SIGTERM: node-cache tears down rules and addresses
        code, doc = n.doctor(env={"KUBE_DNS_SERVICE_HOST": IP6})
    assert code == 1
    got = statuses(doc)
    assert {k for k, v in got.items() if v == "fail"} >= {
        "interface",
        "local-routes",
        "rules",
        "listeners",
        "health",
    }
    assert got["policy-routing"] == got["rules-duplicates"] == "ok"
    # The address is gone with the interface: the finding says so in words, not "[Errno 101] ...".
    assert by_id(doc, "health")["detail"] == (
        f"http://{IP4}:8080/health: network is unreachable: is {IP4} on the node's interface, with a "
        "route to it? (see interface and local-routes)"
    )

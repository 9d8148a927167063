"""``render``, ``doctor`` and ``top`` against the agent that ``render``'s DaemonSet starts, as root.

``nodelocaldns render --mode iptables`` prints the manifests; the node-cache container of its
DaemonSet runs on a node built in network namespaces (``support.agent_ns``) exactly as rendered:
its args unchanged, its ConfigMap volumes projected where its volumeMounts say, the environment
kubelet gives a pod for the kube-dns Services. Then the rendered probes must pass, a pod must be
served on both rendered addresses, ``doctor`` run in the container (as ``kubectl exec`` would) must
find every check ok and see a rule deleted by hand, ``top`` must report the load a pod sent, and
SIGTERM must leave the node clean.

The tests share one running agent and build on each other, in file order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from nodelocaldns.tools import checks
from support.agent_ns import (
    EXTERNAL_NAME,
    KUBE_DNS,
    KUBE_DNS_UPSTREAM,
    LINK_LOCAL,
    POD_IP,
    Container,
    Dig,
    NodeAndPod,
    container_capabilities,
    dig,
    effective_capabilities,
    http_get,
    listening_ports,
    local_addresses,
    node_and_pod,
    rule_lines,
    run_container,
    wait_until,
)
from support.agent_render import (
    RENDER_ARGS,
    Rendered,
    _clean_env,
    _cli,
    kubelet_env,
)
from support.netns import netns_available, ns_exec, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

CLUSTER_NAME = "kubernetes.default.svc.cluster.local."
MISSING_NAME = "nothing-here.default.svc.cluster.local."
REPEATS, MISSES = 200, 20
TOP_INTERVAL = 3.0
NOTRACK_RULE = [
    "PREROUTING", "-p", "udp", "-d", LINK_LOCAL, "--dport", "53", "-j", "NOTRACK",
    "-m", "comment", "--comment", "NodeLocal DNS Cache: skip conntrack",
]  # fmt: skip


# ---------------------------------------------------------------- what render printed


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    res = _cli("render", *RENDER_ARGS)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "List"
    return Rendered(doc["items"])


# ---------------------------------------------------------------- the node and the agent


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAndPod]:
    with node_and_pod(tmp_path_factory.mktemp("tools-e2e"), prefix="nldtool") as t:
        yield t


@dataclass
class Agent:
    container: Container
    rendered: Rendered
    started: float

    def doctor(self, *args: str) -> tuple[int, Any]:
        """``kubectl exec ds/node-local-dns -- nodelocaldns doctor --json``: the container's view."""
        prefix = tuple(self.container.exec_argv())
        return _doctor(_cli("doctor", "--json", *args, prefix=prefix))


def _doctor(res: subprocess.CompletedProcess[str]) -> tuple[int, Any]:
    assert res.returncode in (0, 1), res.stderr
    doc = json.loads(res.stdout)
    assert (res.returncode == 1) == (doc["status"] == "fail")
    return res.returncode, doc


def statuses(doc: Any) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["checks"]}


def by_id(doc: Any, check_id: str) -> Any:
    return next(c for c in doc["checks"] if c["id"] == check_id)


@pytest.fixture(scope="module")
def agent(topo: NodeAndPod, rendered: Rendered) -> Iterator[Agent]:
    cm = rendered.get("ConfigMap", "node-local-dns")
    with run_container(
        topo,
        rendered.container,
        rendered.pod_spec["volumes"],
        {"node-local-dns": cm["data"]},  # the optional kube-dns ConfigMap does not exist here
        kubelet_env(rendered),
        name="node-local-dns",
    ) as container:
        pidfile = container.path(rendered.arg("-pidfile"))

        def up() -> bool:
            assert container.proc.poll() is None, f"agent exited:\n{container.log()}"
            return pidfile.exists()

        wait_until(up, 20, "the agent's pidfile")
        yield Agent(container, rendered, time.monotonic())


# ---------------------------------------------------------------- 1. the rendered DaemonSet runs


def test_rendered_daemonset_serves_and_its_probes_pass(topo: NodeAndPod, agent: Agent) -> None:
    r, container = agent.rendered, agent.container
    assert r.pod_spec["hostNetwork"] is True  # what running it in the node namespace assumes
    assert int(container.path(r.arg("-pidfile")).read_text()) == container.proc.pid
    # It runs with exactly the capabilities the rendered securityContext leaves it, and needs no more.
    security = r.container["securityContext"]
    assert effective_capabilities(container.proc.pid) == container_capabilities(security)
    # Readiness: the rendered probe, as kubelet sends it from the node; rules go in after the pidfile.
    ready = r.probe_url("readinessProbe")
    wait_until(lambda: http_get(topo.node, ready)[0] == 200, 15, f"{ready} to answer 200")
    assert http_get(topo.node, r.probe_url("livenessProbe")) == (200, "OK")
    # Every node port the pod lists (hostNetwork: declared ports would be host ports, see
    # test_deploy_surge) has a listener.
    listening = listening_ports(topo.node)
    template = r.get("DaemonSet", "node-local-dns")["spec"]["template"]
    assert len(checks.host_ports(template)) == 6
    for port in checks.host_ports(template):
        number, proto = port.split("/")
        assert (proto, int(number)) in listening, port
    # The template is the ConfigMap's Corefile (render already wrote the addresses in); the agent
    # filled in what only the node knows: the domain, kube-dns-upstream's IP, the upstream servers.
    template = r.get("ConfigMap", "node-local-dns")["data"]["Corefile"]
    assert f"bind {LINK_LOCAL} {KUBE_DNS}\n" in template
    corefile = container.path(r.arg("-conf")).read_text()
    assert corefile == (
        template.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__CLUSTER__DNS__", KUBE_DNS_UPSTREAM)
        .replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf")
    )
    assert f"[INFO] Using Corefile {r.arg('-conf')}" in container.log()
    assert local_addresses(topo.node) == {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
    assert len(rule_lines(topo.node)) == 24


def test_rendered_capabilities_let_either_iptables_variant_work(agent: Agent) -> None:
    """Nodes whose kubelet chains are legacy get iptables-legacy, which needs more than NET_ADMIN."""
    for tool in ("iptables-nft", "iptables-legacy"):
        res = subprocess.run(
            agent.container.exec_argv(tool, "-w", "5", "-t", "raw", "-S"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, (tool, res.stderr)


# ---------------------------------------------------------------- 2. a pod is served


def test_pod_lookups_are_answered_by_the_agent(topo: NodeAndPod, agent: Agent) -> None:
    upstream_before = topo.kube_dns.count(CLUSTER_NAME)
    for server in (LINK_LOCAL, KUBE_DNS):
        assert dig(topo.pod, server, CLUSTER_NAME) == Dig("NOERROR", ("198.18.0.1",))
    # The agent answered both (no query from the pod's address reached kube-dns through kube-proxy),
    # asking kube-dns-upstream once and the cache the second time.
    assert topo.kube_dns.count(CLUSTER_NAME, client=POD_IP) == 0
    assert topo.kube_dns.count(CLUSTER_NAME) == upstream_before + 1


# ---------------------------------------------------------------- 3. doctor


def test_doctor_in_the_container_is_all_ok_then_sees_a_deleted_rule(topo: NodeAndPod, agent: Agent) -> None:
    r = agent.rendered
    code, doc = agent.doctor("--external-name", EXTERNAL_NAME, "--timeout", "1")
    assert code == 0 and set(statuses(doc).values()) == {"ok"}, json.dumps(doc, indent=1)
    # Everything it expected came from the Corefile the agent wrote, found where the pod has it.
    assert any(n.startswith(f"defaults from {r.arg('-conf')}") for n in doc["notes"]), doc["notes"]
    assert doc["local_ips"] == [LINK_LOCAL, KUBE_DNS]
    assert by_id(doc, "ready")["data"]["url"] == r.probe_url("readinessProbe")
    assert by_id(doc, "health")["data"]["url"] == r.probe_url("livenessProbe")
    rules = by_id(doc, "rules")
    backend = rules["data"]["backend"]
    assert backend in ("iptables-nft", "iptables-legacy")  # --mode iptables: kube-proxy's iptables
    assert rules["detail"].startswith(f"24/24 rules in {backend}")

    # The rendered args keep node-cache's 60 s -syncinterval: the agent cannot put the rule back
    # before this doctor run unless the test has been running for a minute already.
    assert "-syncinterval" not in r.container["args"]
    assert time.monotonic() - agent.started < 45, "too slow to stay inside one sync interval"
    ns_exec(topo.node, backend, "-t", "raw", "-D", *NOTRACK_RULE)
    try:
        code, doc = agent.doctor("--external-name", EXTERNAL_NAME, "--timeout", "1")
    finally:
        ns_exec(topo.node, backend, "-t", "raw", "-A", *NOTRACK_RULE)  # what the next sync would do
    assert code == 1
    # A pod's NOTRACK rule: the host-side conntrack probe cannot see it, only the rules check can.
    assert {k for k, v in statuses(doc).items() if v != "ok"} == {"rules"}, json.dumps(doc, indent=1)
    rules = by_id(doc, "rules")
    assert rules["data"]["missing"] == [
        f"-t raw PREROUTING -p udp -d {LINK_LOCAL} --dport 53 -j NOTRACK -m comment --comment "
        "NodeLocal DNS Cache: skip conntrack"
    ]
    assert rules["detail"].startswith(f"23/24 rules in {backend}")


# ---------------------------------------------------------------- 4. top


def _connections(node: str, port: int) -> dict[str, str]:
    """State of every TCP socket on ``port``, by its local and peer address."""
    out = ns_exec(node, "ss", "-Htan", f"( sport = :{port} or dport = :{port} )").stdout
    return {" ".join(f[3:5]): f[0] for f in (line.split() for line in out.splitlines())}


def _pod_load(pod: str) -> Counter[str]:
    """REPEATS queries of one name and MISSES of a missing one, interleaved, from the pod; bounded."""

    def send() -> Counter[str]:
        got: Counter[str] = Counter()
        deadline = time.monotonic() + 10
        for i in range(REPEATS + MISSES):
            assert time.monotonic() < deadline, f"load took over 10 s ({got})"
            name = MISSING_NAME if i % 11 == 10 else CLUSTER_NAME
            try:
                reply = dns.query.udp(dns.message.make_query(name, "A"), LINK_LOCAL, timeout=2)
                got[dns.rcode.to_text(reply.rcode())] += 1
            except (OSError, dns.exception.DNSException) as e:
                got[type(e).__name__] += 1
        return got

    return run_in_netns(pod, send)


def test_top_reports_the_load_a_pod_sent(topo: NodeAndPod, agent: Agent) -> None:
    port = agent.rendered.port("metrics")
    metrics = f"http://{LINK_LOCAL}:{port}/metrics"
    seen = set(_connections(topo.node, port))
    argv = ["ip", "netns", "exec", topo.node, sys.executable, "-m", "nodelocaldns", "top"]
    argv += ["--once", "--json", "--interval", str(TOP_INTERVAL), "--metrics", metrics]
    top = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
    try:
        # The load starts once top's first scrape is over: a new connection to the metrics port
        # that both ends have begun to close (the reply, and so the snapshot, is complete).
        def scraped() -> bool:
            assert top.poll() is None, top.communicate()
            new = [state for conn, state in _connections(topo.node, port).items() if conn not in seen]
            return bool(new) and not any(state == "ESTAB" or state.startswith("SYN") for state in new)

        wait_until(scraped, 10, "top's first scrape")
        first_scrape = time.monotonic()
        sent = _pod_load(topo.pod)
        assert time.monotonic() - first_scrape < TOP_INTERVAL - 0.5, "load did not fit in top's window"
        out, err = top.communicate(timeout=30)
    finally:
        if top.poll() is None:
            top.kill()
            top.communicate()
    assert sent == {"NOERROR": REPEATS, "NXDOMAIN": MISSES}
    assert top.returncode == 0, err
    doc = json.loads(out)
    assert doc["source"] == metrics
    total = REPEATS + MISSES
    assert doc["requests"] == total  # nothing else asked the agent in the window
    assert doc["qps"] == pytest.approx(total / doc["interval"]) and doc["qps"] > 0
    assert doc["rcodes"] == {"NOERROR": REPEATS, "NXDOMAIN": MISSES}
    (block,) = [
        b for b in doc["blocks"] if b["zone"] == "cluster.local." and b["server"] == f"dns://{LINK_LOCAL}:53"
    ]
    assert block["requests"] == block["cache_requests"] == total
    # Misses: the missing name once; the repeated name at most once (its entry from the earlier
    # tests may have outlived its 30 s TTL). Every other query was a cache hit.
    misses = total - block["cache_hits"]
    assert 1 <= misses <= 2, block
    assert block["hit_ratio"] == pytest.approx(block["cache_hits"] / total) and block["hit_ratio"] >= 0.9
    (upstream,) = [u for u in doc["upstreams"] if u["to"] == f"{KUBE_DNS_UPSTREAM}:53"]
    assert upstream["requests"] == misses and upstream["error_ratio"] == 0
    # kube-dns saw the missing name once, from the agent, never from the pod.
    assert topo.kube_dns.count(MISSING_NAME) == 1 and topo.kube_dns.count(MISSING_NAME, client=POD_IP) == 0


# ---------------------------------------------------------------- 5. SIGTERM


def test_sigterm_leaves_the_node_clean_and_doctor_says_so(topo: NodeAndPod, agent: Agent) -> None:
    r = agent.rendered
    saved = topo.tmp / "Corefile.served"
    saved.write_text(agent.container.path(r.arg("-conf")).read_text())
    assert len(rule_lines(topo.node)) == 24
    assert agent.container.stop() == 0, agent.container.log()
    log = agent.container.log()
    assert "SIGTERM: Shutting down servers then terminating" in log
    assert rule_lines(topo.node) == []
    assert local_addresses(topo.node) == set()
    argv = ["doctor", "--json", "--corefile", str(saved), "--external-name", EXTERNAL_NAME, "--timeout", "1"]
    code, doc = _doctor(_cli(*argv, prefix=("ip", "netns", "exec", topo.node)))
    assert code == 1
    failing = {k for k, v in statuses(doc).items() if v == "fail"}
    assert {"interface", "local-routes", "rules", "listeners", "health"} <= failing, json.dumps(doc, indent=1)
    interface = by_id(doc, "interface")["detail"]
    assert f"{LINK_LOCAL} is missing" in interface and f"{KUBE_DNS} is missing" in interface
    assert by_id(doc, "rules")["detail"].startswith("none of the 24 rules found")
    # With the agent gone, kube-proxy's DNAT serves the ClusterIP again: doctor and a pod both see it.
    lookups = {lk["ip"]: lk for lk in by_id(doc, "dns-cluster")["data"]["lookups"]}
    assert lookups[KUBE_DNS]["first"]["rcode"] == "NOERROR" and lookups[LINK_LOCAL]["first"]["rcode"] == ""
    assert dig(topo.pod, KUBE_DNS, CLUSTER_NAME) == Dig("NOERROR", ("198.18.0.1",))
    assert topo.kube_dns.count(CLUSTER_NAME, client=POD_IP) == 1

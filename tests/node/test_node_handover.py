"""Handover between two agents on one node, under load, as the rendered DaemonSet runs them.

The node and pod namespaces come from ``support.agent_ns``; each agent is the rendered
DaemonSet's container (args unchanged, the runtime-dir hostPath shared), started next to the
other as a ``maxSurge`` rollout does. dnsperf runs in the pod namespace against both local IPs,
bounded by ``-l`` and ``-Q``, while a sampler checks the rules and addresses every 50 ms.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodelocaldns.core.cpus import usable_cpus
from nodelocaldns.native import native_available
from support.agent_ns import (
    KUBE_DNS,
    LINK_LOCAL,
    NODE_IP,
    Container,
    NodeAndPod,
    dig,
    http_get,
    local_addresses,
    node_and_pod,
    rule_lines,
    run_container,
    run_init_containers,
    wait_until,
)
from support.agent_render import RENDER_ARGS, Rendered, _cli, kubelet_env
from support.load import Load, query_file
from support.netns import netns_available, ns_exec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

NAMES = ["kubernetes.default.svc.cluster.local.", "kube-dns.kube-system.svc.cluster.local."]
ADDRESSES = {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
RULES = 24  # 12 per local IP
QPS = 1200  # per local IP: 2400 in all
IN_FLIGHT_AT_KILL = 2  # per local IP; without the socket sharing a kill lost 8 to 20


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAndPod]:
    with node_and_pod(tmp_path_factory.mktemp("handover"), prefix="nldho") as t:
        yield t


def render(*extra: str) -> Rendered:
    import json

    res = _cli("render", *RENDER_ARGS, *extra)
    assert res.returncode == 0, res.stderr
    return Rendered(json.loads(res.stdout)["items"])


@contextlib.contextmanager
def agent(
    topo: NodeAndPod, r: Rendered, name: str, container: dict[str, Any] | None = None, *, scrub: bool = True
) -> Iterator[Container]:
    """One agent container; ``scrub=False`` when another agent still owns the node's state at exit."""
    cm = r.get("ConfigMap", "node-local-dns")
    spec = container or r.container
    # A new pod: its init container (net.ipv4.tcp_migrate_req on the node) runs first, as kubelet runs it.
    run_init_containers(topo, r.pod_spec, {"node-local-dns": cm["data"]}, kubelet_env(r), pod=name)
    with run_container(
        topo,
        spec,
        r.pod_spec["volumes"],
        {"node-local-dns": cm["data"]},
        kubelet_env(r),
        name=name,
        scrub_after=scrub,
    ) as c:
        yield c


def wait_serving(c: Container, r: Rendered) -> None:
    pidfile = c.path(r.arg("-pidfile"))

    def up() -> bool:
        assert c.proc.poll() is None, f"agent exited:\n{c.log()}"
        return pidfile.exists()

    wait_until(up, 30, "the agent's pidfile")


class Sampler:
    """Rules and addresses every 50 ms, from a thread, until stopped."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.samples: list[tuple[int, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((len(rule_lines(self.node)), frozenset(local_addresses(self.node))))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def gaps(self) -> list[tuple[int, frozenset[str]]]:
        return [s for s in self.samples if s != (RULES, frozenset(ADDRESSES))]


def loads(topo: NodeAndPod, tmp: Path, seconds: float) -> list[Load]:
    queries = query_file(tmp / "queries", NAMES)
    return [Load(ip, 53, queries, seconds=seconds, qps=QPS, ns=topo.pod) for ip in (LINK_LOCAL, KUBE_DNS)]


def owned_tables(node: str) -> list[str]:
    """The agents' own nft tables (one per live agent, deleted by the kernel with it)."""
    out = ns_exec(node, "nft", "list", "tables", check=False).stdout
    return [ln.split()[2] for ln in out.splitlines() if ln.startswith("table inet nodelocaldns-agent-")]


def host_query_stays_local(topo: NodeAndPod) -> bool:
    """A host-network client's query to the ClusterIP is answered and skips conntrack: NOTRACKed by
    an agent's own table, not DNAT'd by kube-proxy to the kube-dns stand-in."""
    ns_exec(topo.node, "conntrack", "-F", check=False)
    out = ns_exec(
        topo.node, "dig", f"@{KUBE_DNS}", "-b", NODE_IP, NAMES[0], "+time=2", "+tries=1", check=False
    )
    flows = ns_exec(topo.node, "conntrack", "-L", "-p", "udp", "--dport", "53", check=False).stdout
    return "status: NOERROR" in out.stdout and f"src={NODE_IP} dst={KUBE_DNS} " not in flows


def warm(topo: NodeAndPod) -> None:
    for ip in (LINK_LOCAL, KUBE_DNS):
        for n in NAMES:
            assert dig(topo.pod, ip, n).status == "NOERROR"


def test_handover_under_load_loses_no_query_and_the_last_one_out_tears_down(
    topo: NodeAndPod, tmp_path: Path
) -> None:
    r = render()
    with agent(topo, r, "old") as old:
        wait_serving(old, r)
        wait_until(lambda: http_get(topo.node, r.probe_url("readinessProbe"))[0] == 200, 15, "ready")
        warm(topo)
        running = loads(topo, tmp_path, seconds=10)
        try:
            with Sampler(topo.node) as sampler:
                time.sleep(1.5)
                with agent(topo, r, "new", scrub=False) as new:
                    wait_serving(new, r)
                    assert len(owned_tables(topo.node)) == 2  # each agent holds its own
                    time.sleep(1.5)  # both serve: the kernel spreads the flows over both
                    assert old.stop(signal.SIGTERM) == 0
                    assert len(owned_tables(topo.node)) == 1 and host_query_stays_local(topo)
                    results = [ld.result() for ld in running]
                    sampler.__exit__()
                    assert "Agent pid" in old.log() and "handing over to it" in old.log(), old.log()
                    assert "adopting the interface and rules" in new.log(), new.log()
                    assert new.proc.poll() is None
                    # The last one out tears down as node-cache does.
                    assert new.stop(signal.SIGTERM) == 0
                    assert rule_lines(topo.node) == []
                    assert local_addresses(topo.node) == set()
                    assert "tearing down on the way out" in new.log()
        finally:
            for ld in running:
                ld.kill()
    for res in results:
        assert res.sent >= QPS * 9, res.output
        assert res.lost == 0 and res.completed == res.sent, res.output
    # Each sample runs iptables-save and ip: on a loaded machine that alone can take 200 ms, so the
    # ~10 s window gives 40-200 samples. 20 still covers the handover many times over.
    assert len(sampler.samples) > 20 and sampler.gaps() == [], sampler.gaps()[:5]


def test_a_second_agent_that_fails_to_start_leaves_the_first_ones_state(topo: NodeAndPod) -> None:
    """The second agent's Corefile wants a metrics port someone else holds without SO_REUSEPORT:
    its start fails, and the first agent's rules and addresses stay, and the error names no DNS port."""
    import socket

    r = render()
    with agent(topo, r, "first") as first:
        wait_serving(first, r)
        cm = r.get("ConfigMap", "node-local-dns")
        broken = cm["data"]["Corefile"].replace("prometheus :9253", "prometheus 127.0.0.1:9299", 1)
        assert broken != cm["data"]["Corefile"]
        r2 = Rendered(
            [{**cm, "data": {**cm["data"], "Corefile": broken}} if o is cm else o for o in r.objects]
        )
        from support.netns import run_in_netns

        def hold() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 9299))
            s.listen(1)
            return s

        holder = run_in_netns(topo.node, hold)
        try:
            with agent(topo, r2, "second", scrub=False) as second:
                assert second.proc.wait(30) == 1, second.log()
                log = second.log()
        finally:
            holder.close()
        assert "Failed to start the DNS server" in log, log
        assert "is held by another process" not in log, log  # the DNS ports are shared, not held
        assert "Leaving the interface and rules in place: agent pid" in log, log
        assert len(rule_lines(topo.node)) == RULES
        assert local_addresses(topo.node) == ADDRESSES
        assert dig(topo.pod, LINK_LOCAL, NAMES[0]).status == "NOERROR"
        assert first.proc.poll() is None
        assert first.stop() == 0
        assert rule_lines(topo.node) == [] and local_addresses(topo.node) == set()


# UDP sockets an agent binds itself: two addresses, each with one socket per native worker
# (multisocket's default: the CPUs the agent may use), or one on the pure-Python path.
OWN = 2 * (usable_cpus() if native_available() else 1)


def dns_sockets(c: Container) -> int:
    """UDP sockets bound to :53 that the agent's process holds (its own and its peers' copies)."""
    pid = c.proc.pid
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[1].endswith(":0035") and cols[9] in inodes:
                count += 1
    return count


@pytest.mark.parametrize("victim", [0, 1])
def test_redundant_mode_a_sigkill_of_either_agent_loses_only_what_it_had_read(
    topo: NodeAndPod, tmp_path: Path, victim: int
) -> None:
    """``render --redundant``: both containers of the pod serve the node all the time; SIGKILL one
    (no teardown runs) and both local IPs keep answering, with rules and addresses in place.

    Each agent holds and reads its peer's UDP sockets (node/sockshare.py), so the killed one's
    sockets stay in the SO_REUSEPORT group with their queues, read by the survivor; without that,
    8 to 20 queries per IP were lost at the kill. dnsperf waits 5 s for an answer: on a busy test
    machine a late answer is not a lost one. What the killed process had itself read and not yet
    answered is lost with it, as from any process that dies."""
    r = render("--redundant")
    containers = r.pod_spec["containers"]
    assert len(containers) == 2
    with (
        agent(topo, r, f"a{victim}", containers[0]) as a,
        agent(topo, r, f"b{victim}", containers[1], scrub=False) as b,
    ):
        wait_serving(a, r)
        wait_serving(b, r)
        warm(topo)
        assert len(owned_tables(topo.node)) == 2 and host_query_stays_local(topo)
        killed, survivor = (a, b) if victim == 0 else (b, a)
        # Both UDP sockets of each agent, and the two of its peer's it reads.
        wait_until(lambda: dns_sockets(survivor) == 2 * OWN, 10, "the peer's sockets shared")
        queries = query_file(tmp_path / "queries", NAMES)
        running = [
            Load(ip, 53, queries, seconds=8, qps=QPS, ns=topo.pod, timeout=5.0)
            for ip in (LINK_LOCAL, KUBE_DNS)
        ]
        try:
            time.sleep(3)
            killed.proc.send_signal(signal.SIGKILL)
            killed.proc.wait(10)
            results = [ld.result() for ld in running]
        finally:
            for ld in running:
                ld.kill()
        assert survivor.proc.poll() is None
        # The killed agent's own table went with it; the survivor's keeps host-network DNS local.
        assert len(owned_tables(topo.node)) == 1 and host_query_stays_local(topo)
        assert "is gone: answering what its sockets still hold" in survivor.log(), survivor.log()
        assert dns_sockets(survivor) == OWN  # the dead peer's copies are closed
        assert len(rule_lines(topo.node)) == RULES and local_addresses(topo.node) == ADDRESSES
    for res in results:
        assert res.sent >= QPS * 7, res.output
        # A query the killed agent had read and not yet answered dies with it (the client's retry
        # covers it): at 1,200 QPS that is one, rarely two. What its sockets held, the survivor answers.
        assert res.lost <= IN_FLIGHT_AT_KILL and res.completed == res.sent - res.lost, res.output


def test_redundant_mode_a_killed_agent_that_comes_back_shares_again_and_a_clean_exit_closes_its_copies(
    topo: NodeAndPod,
) -> None:
    """The killed container restarts (as the kubelet does): it shares with the survivor again, one
    copy each, no pile-up across restarts; a SIGTERM then closes the survivor's copies of its sockets."""
    r = render("--redundant")
    containers = r.pod_spec["containers"]
    with agent(topo, r, "keep", containers[0]) as keep:
        wait_serving(keep, r)
        for run in range(2):
            with agent(topo, r, f"back{run}", containers[1], scrub=False) as back:
                wait_serving(back, r)
                wait_until(
                    lambda: dns_sockets(keep) == 2 * OWN and dns_sockets(back) == 2 * OWN,
                    10,
                    "sockets shared",
                )  # noqa: B023
                if run == 0:
                    back.proc.send_signal(signal.SIGKILL)
                    back.proc.wait(10)
                else:
                    assert back.stop(signal.SIGTERM) == 0
                    assert "handing over to it" in back.log(), back.log()
                wait_until(lambda: dns_sockets(keep) == OWN, 10, "the departed peer's copies closed")
                assert dig(topo.pod, LINK_LOCAL, NAMES[0]).status == "NOERROR"
        assert keep.log().count("Sharing DNS sockets with agent pid") == 2, keep.log()
        assert len(rule_lines(topo.node)) == RULES and local_addresses(topo.node) == ADDRESSES
        assert keep.stop(signal.SIGTERM) == 0
        assert rule_lines(topo.node) == [] and local_addresses(topo.node) == set()

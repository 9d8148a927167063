"""The agent under a flood of unique names toward a blackholed upstream, in namespaces (issue 10).

The node and pod namespaces come from ``support.agent_ns``; the agent is the rendered DaemonSet's
container, its ``.`` zone forwarding to a real unbound in a third namespace, reached over a veth.
That upstream answers until an nft rule in its own namespace drops every DNS packet (the process
keeps running: a blackhole, not a closed port). dnsperf in the pod namespace then sends unique
names to 169.254.20.10, bounded by ``-l`` and ``-Q``, while a client asks for cached names.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from support.agent_ns import (
    KUBE_DNS,
    LINK_LOCAL,
    Container,
    NodeAndPod,
    NsUnbound,
    http_get,
    local_addresses,
    node_and_pod,
    ns_unbound,
    rule_lines,
    run_container,
    run_init_containers,
    wait_until,
)
from support.agent_render import RENDER_ARGS, Rendered, _cli, kubelet_env
from support.load import dnsperf_summary
from support.netns import add_veth, netns, netns_available, ns_exec, run_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

UPSTREAM_NODE_IP, UPSTREAM_IP = "198.18.4.1", "198.18.4.53"
# Across the pod's veth and the agent's NOTRACK rules dnsperf reaches 15k QPS here; 8 s keeps the
# test near half a minute, with the forward budget (5 s) and dnsperf's own timeout after it.
QPS, SECONDS = 15_000, 8
FORWARD_BUDGET = 5.0  # forward's deadline per query (CoreDNS: 5 s)
NAMES = [f"n{i}.cached.test." for i in range(20)]
DRAIN = 1.0  # seconds a REFUSED/SERVFAIL may take past the budget: the wait in the agent's queue
ADDRESSES = {f"{LINK_LOCAL}/32", f"{KUBE_DNS}/32"}
RULES = 24  # 12 per local IP (as tests/node/test_node_handover.py counts them)


def render() -> Rendered:
    import json

    res = _cli("render", *RENDER_ARGS)
    assert res.returncode == 0, res.stderr
    return Rendered(json.loads(res.stdout)["items"])


def wait_serving(c: Container, r: Rendered) -> None:
    pidfile = c.path(r.arg("-pidfile"))

    def up() -> bool:
        assert c.proc.poll() is None, f"agent exited:\n{c.log()}"
        return pidfile.exists()

    wait_until(up, 30, "the agent's pidfile")


@contextlib.contextmanager
def upstream(topo: NodeAndPod) -> Iterator[tuple[str, NsUnbound]]:
    """A real unbound in its own namespace, one veth hop from the node."""
    with netns("nldflup") as up:
        add_veth(topo.node, "vup", "vupp", up)
        ns_exec(topo.node, "ip", "addr", "add", f"{UPSTREAM_NODE_IP}/24", "dev", "vup")
        ns_exec(topo.node, "ip", "link", "set", "vup", "up")
        ns_exec(up, "ip", "addr", "add", f"{UPSTREAM_IP}/24", "dev", "vupp")
        ns_exec(up, "ip", "link", "set", "vupp", "up")
        records = [f"{n} 300 IN A 198.18.7.{i}" for i, n in enumerate(NAMES)]
        with ns_unbound(up, UPSTREAM_IP, {"cached.test.": records}, topo.tmp) as server:
            yield up, server


def blackhole(up: str) -> None:
    """Every DNS packet that reaches the upstream's namespace is dropped, silently (the input hook:
    no ICMP, no error to anyone), and counted."""
    ruleset = (
        "table inet flood_blackhole {\n  chain input {\n    type filter hook input priority -300; policy accept;\n"
        "    udp dport 53 counter drop\n    tcp dport 53 counter drop\n  }\n}\n"
    )
    subprocess.run(["ip", "netns", "exec", up, "nft", "-f", "-"], input=ruleset, text=True, check=True)


def dropped_at_upstream(up: str) -> int:
    out = ns_exec(up, "nft", "list", "table", "inet", "flood_blackhole").stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# The client runs as a process of its own in the pod namespace: in this one it would share the GIL
# with the state sampler's subprocess calls, and its own waits would count against the agent.
PROBER = """
import json, select, sys, time
import dns.exception, dns.message, dns.query, dns.rcode
server, names, out, i = sys.argv[1], sys.argv[2:], [], 0
while not select.select([sys.stdin], [], [], 0)[0]:
    q = dns.message.make_query(names[i % len(names)], "A")
    i += 1
    t0 = time.monotonic()
    try:
        r = dns.query.udp(q, server, port=53, timeout=1.0)
        ok = r.rcode() == dns.rcode.NOERROR and bool(r.answer)
    except dns.exception.Timeout:
        ok = False
    dt = time.monotonic() - t0
    out.append(dt if ok else -1.0)
    time.sleep(max(0.0, 0.005 - dt))
print(json.dumps(out))
"""


class Prober:
    """A client in the pod namespace asking for cached names the whole time, one at a time."""

    def __init__(self, pod: str) -> None:
        argv = ["ip", "netns", "exec", pod, sys.executable, "-c", PROBER, LINK_LOCAL, *NAMES]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def latencies(self) -> list[float]:
        """Seconds per query; inf: no NOERROR answer within 1 s."""
        out, _ = self.proc.communicate("stop\n", timeout=15)
        assert self.proc.returncode == 0
        return [x if x >= 0 else float("inf") for x in json.loads(out)]


class StateSampler(threading.Thread):
    """The agent's rules and addresses, every 0.25 s (each sample runs iptables-save and nft)."""

    def __init__(self, node: str) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.samples: list[tuple[int, frozenset[str]]] = []

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append((len(rule_lines(self.node)), frozenset(local_addresses(self.node))))


def udp_drops(ns: str, ips: tuple[str, ...], port: int) -> int:
    """Datagrams the kernel dropped at full receive queues of the sockets on ``ips``:``port`` in ``ns``
    (/proc/net/udp's addresses are the u32 in host order, in hex)."""
    wanted = {f"{int.from_bytes(socket.inet_aton(ip), sys.byteorder):08X}:{port:04X}" for ip in ips}
    total = 0
    for line in ns_exec(ns, "cat", "/proc/net/udp").stdout.splitlines()[1:]:
        cols = line.split()
        if cols[1] in wanted:
            total += int(cols[-1])
    return total


def reported_drops(node: str) -> int:
    """The agent's own count of the same: nodelocaldns_dns_receive_queue_drops_total, all listeners."""
    status, text = http_get(node, "http://127.0.0.1:9253/metrics")
    assert status == 200, text
    found = re.findall(r"^nodelocaldns_dns_receive_queue_drops_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert found, text[-2000:]
    return int(sum(float(n) for n in found))


def test_a_flood_toward_a_blackholed_upstream_keeps_the_agent_bounded_and_answering(tmp_path: Path) -> None:
    r = render()
    cm = r.get("ConfigMap", "node-local-dns")
    data = dict(cm["data"])
    corefile = data["Corefile"].replace(
        "forward . __PILLAR__UPSTREAM__SERVERS__", f"forward . {UPSTREAM_IP}", 1
    )
    assert corefile != data["Corefile"]
    data["Corefile"] = corefile
    flood = tmp_path / "flood.txt"
    flood.write_text("".join(f"u{i}.flood.test. A\n" for i in range(QPS * SECONDS + 10_000)))
    with node_and_pod(tmp_path, prefix="nldfl") as topo, upstream(topo) as (up, _server):
        run_init_containers(topo, r.pod_spec, {"node-local-dns": data}, kubelet_env(r), pod="flood")
        with run_container(topo, r.container, r.pod_spec["volumes"], {"node-local-dns": data}, kubelet_env(r),
                           name="flood") as agent:  # fmt: skip
            wait_serving(agent, r)
            wait_until(lambda: http_get(topo.node, r.probe_url("readinessProbe"))[0] == 200, 15, "ready")

            def warm() -> None:
                for n in NAMES:
                    got = dns.query.udp(dns.message.make_query(n, "A"), LINK_LOCAL, port=53, timeout=2)
                    assert got.answer, (n, got)

            run_in_netns(topo.pod, warm)
            time.sleep(1.0)
            pid = agent.proc.pid
            idle = rss_mib(pid)
            blackhole(up)
            prober, state = Prober(topo.pod), StateSampler(topo.node)
            state.start()
            out_path = tmp_path / "dnsperf.out"
            with open(out_path, "w") as out:
                perf = subprocess.Popen(
                    ["ip", "netns", "exec", topo.pod, "dnsperf", "-s", LINK_LOCAL, "-p", "53", "-d", str(flood),
                     "-c", "8", "-b", "2048", "-q", "60000", "-Q", str(QPS), "-l", str(SECONDS),
                     "-t", str(int(FORWARD_BUDGET + DRAIN))],
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
                peak = idle
                deadline = time.monotonic() + SECONDS + FORWARD_BUDGET + 15
                while perf.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, rss_mib(pid))
                    time.sleep(0.1)
                if perf.poll() is None:
                    perf.kill()
                perf.wait()
            lat = prober.latencies()
            state.stop.set()
            state.join(5)
            holed = dropped_at_upstream(up)
            kdrops = udp_drops(topo.node, (LINK_LOCAL, KUBE_DNS), 53)
            reported = reported_drops(topo.node)
            alive = agent.proc.poll() is None
            log = agent.log()
    res = dnsperf_summary(out_path.read_text())
    within = sum(1 for x in lat if x <= 0.050)
    slowest = max(lat, default=0.0)
    figures = (
        f"RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB; cached names within 50 ms {within}/{len(lat)} (slowest "
        f"{slowest * 1000:.1f} ms); dnsperf sent {res['sent']:.0f} lost {res['lost']:.0f} SERVFAIL "
        f"{res.get('SERVFAIL', 0):.0f} REFUSED {res.get('REFUSED', 0):.0f} max latency {res['max_latency']:.3f} s; "
        f"upstream dropped {holed}; kernel drops at the agent's :53 sockets {kdrops} (reported {reported}); state samples "
        f"{len(state.samples)}"
    )
    print(figures)
    assert alive, log
    assert holed > 0, figures  # the upstream was asked, and nothing came back
    # dnsperf shares the 2 CPUs: with 20-48 % of them stolen from this VM (vmstat) it sent 23-43 % of
    # its target. Even that is thousands of new names a second toward a blackholed upstream.
    assert res["sent"] >= 0.2 * QPS * SECONDS, figures
    assert peak <= 2 * idle + 20, figures
    # Every uncached query is answered, SERVFAIL or REFUSED, within forward's budget plus the wait
    # in the agent's bounded queue: dnsperf counts anything later than that as lost.
    assert set(res) - {"sent", "completed", "lost", "max_latency"} <= {"SERVFAIL", "REFUSED"}, figures
    assert res["max_latency"] <= FORWARD_BUDGET + DRAIN, figures
    # What the kernel dropped before the agent read it, the agent reports exactly: none in every run
    # measured here, the bound is the server flood test's (CPU steal on this VM, see there).
    assert reported == kdrops and kdrops <= 0.15 * res["sent"], figures
    assert res["lost"] <= kdrops and res["completed"] == res["sent"] - res["lost"], (
        figures
    )  # all read: answered
    # Every cached name asked during the flood is answered, none near a client's retry, and 99.5 %
    # within 50 ms (the rest when the host descheduled the agent: 94 ms the slowest measured); one the
    # kernel dropped with the flood goes unanswered.
    late = sum(1 for x in lat if x >= 1.0)
    assert len(lat) > 200 and within >= 0.995 * len(lat), figures
    assert late == 0 or (kdrops > 0 and late <= 0.01 * len(lat)), figures
    # Rules and addresses stay as they were throughout.
    assert len(state.samples) > 10, figures
    assert all(s == (RULES, frozenset(ADDRESSES)) for s in state.samples), state.samples[:5]
    assert "panic" not in log and "Traceback" not in log, log[-3000:]

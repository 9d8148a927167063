"""The rendered pod sets net.ipv4.tcp_migrate_req on the node; without it, the agent says so in one line.

The node is a network namespace of its own (``support.agent_ns``), so the sysctl written is that
namespace's, never this machine's. Kubelet is played as the runtime behaves: the init containers
run to completion first, and every container that is not privileged sees ``/proc/sys`` read-only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agent_ns import (
    LINK_LOCAL,
    NodeAndPod,
    dig,
    node_and_pod,
    run_container,
    run_init_containers,
    wait_until,
)
from support.agent_render import RENDER_ARGS, Rendered, _cli, kubelet_env
from support.netns import netns_available, ns_exec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`"),
]

KNOB = "/proc/sys/net/ipv4/tcp_migrate_req"
NAME = "kubernetes.default.svc.cluster.local."


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAndPod]:
    host = Path(KNOB).read_text()
    with node_and_pod(tmp_path_factory.mktemp("sysctl"), prefix="nldsc") as t:
        yield t
    assert Path(KNOB).read_text() == host  # this machine's own value was never touched


def render(*extra: str) -> Rendered:
    res = _cli("render", *RENDER_ARGS, *extra)
    assert res.returncode == 0, res.stderr
    return Rendered(json.loads(res.stdout)["items"])


def knob(node: str) -> str:
    return ns_exec(node, "cat", KNOB).stdout.strip()


def reset(node: str) -> None:
    ns_exec(node, "sh", "-c", f"echo 0 > {KNOB}")
    assert knob(node) == "0"


def serve_once(topo: NodeAndPod, r: Rendered, name: str) -> str:
    """Start the agent container, wait until it answers on the link-local IP, stop it: its log."""
    configmaps = {"node-local-dns": r.get("ConfigMap", "node-local-dns")["data"]}
    with run_container(topo, r.container, r.pod_spec["volumes"], configmaps, kubelet_env(r), name=name) as c:

        def answers() -> bool:
            assert c.proc.poll() is None, f"agent exited:\n{c.log()}"
            return dig(topo.pod, LINK_LOCAL, NAME).status == "NOERROR"

        wait_until(answers, 30, "the agent to answer")
        assert c.stop() == 0
        return c.log()


def test_the_init_container_sets_tcp_migrate_req_on_the_node(topo: NodeAndPod) -> None:
    reset(topo.node)
    r = render()
    configmaps = {"node-local-dns": r.get("ConfigMap", "node-local-dns")["data"]}
    (log,) = run_init_containers(topo, r.pod_spec, configmaps, kubelet_env(r), pod="first")
    assert "[INFO] Set net.ipv4.tcp_migrate_req=1 (set for the node agent's TCP handover)" in log, log
    assert knob(topo.node) == "1"
    # The next pod's init container (a rollout, a restart) finds it set and says so.
    (again,) = run_init_containers(topo, r.pod_spec, configmaps, kubelet_env(r), pod="second")
    assert "net.ipv4.tcp_migrate_req is 1 already" in again, again
    # The agent itself cannot write /proc/sys, and has nothing to warn about.
    agent_log = serve_once(topo, r, "agent-with-init")
    assert "tcp_migrate_req" not in agent_log, agent_log
    assert knob(topo.node) == "1"


def test_without_the_init_container_the_agent_warns_once_in_one_line(topo: NodeAndPod) -> None:
    reset(topo.node)
    r = render("--no-sysctl-init")
    assert "initContainers" not in r.pod_spec
    log = serve_once(topo, r, "agent-without-init")
    lines = [ln for ln in log.splitlines() if "tcp_migrate_req" in ln]
    assert lines == [
        f"[WARNING] net.ipv4.tcp_migrate_req is off and cannot write {KNOB}: Read-only file system "
        "(the node agent hands TCP over to its peers): TCP connections waiting in a closing listener's "
        "queue are reset instead of moving to the other server; set it on the node (sysctl -w "
        "net.ipv4.tcp_migrate_req=1, or the manifests' sysctl init container)"
    ], log
    assert "Traceback" not in log
    assert knob(topo.node) == "0"

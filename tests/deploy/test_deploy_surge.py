"""The manifests let Kubernetes run the handover: surge pod next to the old one, no port clash.

For a hostNetwork pod every declared container port is a host port to the scheduler, so a surge
pod that declares :53 stays Pending next to the old pod. The rendered objects (``render`` in every
mode, ``--redundant``, and the kustomize overlays) must surge with ``maxSurge: 1, maxUnavailable: 0``,
gate on a readiness probe, declare no port when hostNetwork, and mount the runtime directory the
agents find each other in.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from nodelocaldns.node.flags import parse_args
from nodelocaldns.tools import checks, manifests
from support.kustomize import DEPLOY, KUBECTLS, MODES, kustomize, load, needs_kubectl, overlay, run_render

Obj = dict[str, Any]


def daemon_set(objs: list[Obj]) -> Obj:
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    return ds


def check_surge(objs: list[Obj], mode: str) -> None:
    ds = daemon_set(objs)
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = ds["spec"]["template"]["spec"]
    for c in pod["containers"]:
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready", c["name"]
    assert checks.lint(objs) == []
    if mode == "cilium":
        assert "hostNetwork" not in pod  # its own pod IP: ports are the pod's, declared for the redirect
        assert "initContainers" not in pod  # and its own network namespace: no node sysctl to set
        return
    assert pod["hostNetwork"] is True
    check_sysctl_init(pod, present=True)
    for c in pod["containers"]:
        assert "ports" not in c, c["name"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["runtime-dir"] == manifests.RUNTIME_DIR
        params = parse_args(
            c["args"], env={"KUBE_DNS_SERVICE_HOST": "10.96.0.10"}, path_exists=lambda _: False
        )
        assert params.runtime_dir == manifests.RUNTIME_DIR  # the agent's default is where the volume is
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["runtime-dir"]["hostPath"] == {"path": manifests.RUNTIME_DIR, "type": "DirectoryOrCreate"}
    # Metrics stay discoverable: the scrape annotation and the headless Service's numeric targetPorts,
    # which the lint checks against the node ports the pod lists.
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9253"
    assert {"53/UDP", "9253/TCP", "9353/TCP"} <= checks.host_ports(ds["spec"]["template"])


def check_sysctl_init(pod: Obj, present: bool) -> None:
    """The privileged init container that sets net.ipv4.tcp_migrate_req in the node's namespace."""
    inits = pod.get("initContainers", [])
    if not present:
        assert inits == []
        return
    (init,) = inits
    assert init["name"] == manifests.SYSCTL_CONTAINER and init["command"] == ["nodelocaldns", "sysctl"]
    assert init["image"] == pod["containers"][0]["image"]  # no other image to pull or mirror
    assert init["securityContext"] == {"privileged": True}  # /proc/sys is read-only for any other
    assert "ports" not in init and "volumeMounts" not in init
    # The agents stay unprivileged: the capabilities they use, nothing more.
    for c in pod["containers"]:
        assert "privileged" not in c["securityContext"], c["name"]
        assert c["securityContext"]["capabilities"]["add"] == list(manifests.NODE_CAPABILITIES)


@pytest.mark.parametrize("mode", MODES)
def test_rendered_manifests_surge_without_port_clashes(mode: str) -> None:
    check_surge(run_render("--mode", mode), mode)


@needs_kubectl
@pytest.mark.parametrize("mode", MODES)
def test_kustomize_overlays_surge_without_port_clashes(mode: str) -> None:
    check_surge(load(kustomize(KUBECTLS[0], overlay(mode))), mode)


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_redundant_renders_two_full_agents_per_pod(mode: str) -> None:
    objs = run_render("--mode", mode, "--redundant")
    check_surge(objs, mode)
    first, second = daemon_set(objs)["spec"]["template"]["spec"]["containers"]
    assert (first["name"], second["name"]) == ("node-cache", manifests.PEER_CONTAINER)
    assert {k: v for k, v in second.items() if k != "name"} == {k: v for k, v in first.items() if k != "name"}


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_no_sysctl_init_leaves_the_init_container_out(mode: str) -> None:
    objs = run_render("--mode", mode, "--no-sysctl-init")
    assert checks.lint(objs) == []
    pod = daemon_set(objs)["spec"]["template"]["spec"]
    check_sysctl_init(pod, present=False)
    rest = daemon_set(run_render("--mode", mode))["spec"]["template"]["spec"]
    assert {k: v for k, v in rest.items() if k != "initContainers"} == pod  # nothing else changes


@needs_kubectl
def test_the_documented_kustomize_patch_drops_the_init_container_as_render_does(tmp_path: Path) -> None:
    """deploy/README.md's patch, in a kustomization of one's own next to the overlay."""
    readme = (DEPLOY / "README.md").read_text()
    block = readme.split("# no-sysctl-init.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "no-sysctl-init.yaml").write_text(block)
    base = os.path.relpath(overlay("iptables"), tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"bases:\n- {base}\npatchesStrategicMerge:\n- no-sysctl-init.yaml\n"
    )
    for kubectl in KUBECTLS:
        objs = load(kustomize(kubectl, str(tmp_path)))
        check_sysctl_init(daemon_set(objs)["spec"]["template"]["spec"], present=False)
        assert daemon_set(objs) == daemon_set(run_render("--no-sysctl-init"))


def test_redundant_is_refused_where_it_means_nothing() -> None:
    from nodelocaldns.tools.render import main

    for argv in (
        ["--mode", "cilium", "--redundant"],
        ["--standalone", "x", "--service-ip", "10.0.0.9", "--redundant"],
        ["--mode", "cilium", "--no-sysctl-init"],
        ["--standalone", "x", "--service-ip", "10.0.0.9", "--no-sysctl-init"],
    ):
        assert main(argv) == 2


def test_the_clash_check_can_fail() -> None:
    objs = run_render()
    broken = copy.deepcopy(objs)
    daemon_set(broken)["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"}
    ]
    assert any("declares port 53/UDP" in p for p in checks.lint(broken))
    # Without surge the same declaration is no clash (one pod per node at a time).
    daemon_set(broken)["spec"]["updateStrategy"] = {"rollingUpdate": {"maxUnavailable": 1}}
    assert not any("declares port" in p for p in checks.lint(broken))
    # An init container's port clashes as well (the scheduler counts sidecars' ports).
    broken = copy.deepcopy(objs)
    daemon_set(broken)["spec"]["template"]["spec"]["initContainers"][0]["ports"] = [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"}
    ]
    assert any("container sysctl declares port 53/UDP" in p for p in checks.lint(broken))
    # A numeric metrics targetPort the pod does not list is caught.
    svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "node-local-dns")
    svc["spec"]["ports"][0]["targetPort"] = 9999
    assert any("9999/TCP is not a port" in p for p in checks.lint(objs))

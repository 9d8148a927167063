"""What ``render --discover`` learns from the cluster through kubectl.

Two facts: the kube-dns ClusterIP and how Services are implemented on nodes (kube-proxy's
mode, or Cilium's kube-proxy replacement). The decisions are pure functions of the objects
kubectl prints; ``Kubectl`` is the only part that runs anything.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.errors import NodeLocalDNSError
from nodelocaldns.tools.corefiles import MODES

_TIMEOUT = 30.0
# klog's prefix (severity, date, time, pid, file:line]): client-go's retries, not the answer.
_KLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
WITHOUT_CLUSTER = "hint: without a cluster, pass what --discover would find instead: --dns-server IP"
_MODE_LINE = re.compile(r"""^mode:[ \t]*(["']?)([A-Za-z]*)\1[ \t]*(?:#.*)?$""", re.M)


class DiscoveryError(NodeLocalDNSError):
    """kubectl failed, or the cluster does not say what render needs to know."""


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    dns_server: str
    mode: str | None  # None when not asked for
    notes: tuple[str, ...] = field(default=())


class Kubectl:
    """Runs kubectl with fixed global flags (``--context`` and the like)."""

    def __init__(self, binary: str = "kubectl", global_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.global_args = tuple(global_args)

    def run(self, *args: str) -> str:
        cmd = [self.binary, *self.global_args, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        except FileNotFoundError:
            raise DiscoveryError(f"{self.binary}: not found; install kubectl or pass --kubectl") from None
        except subprocess.TimeoutExpired:
            raise DiscoveryError(f"{' '.join(cmd)}: no answer within {_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            raise DiscoveryError(f"{' '.join(cmd)}: {_failure(proc.stderr, proc.returncode)}")
        return proc.stdout

    def get_json(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        out = self.run("get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found")
        if not out.strip():
            return None
        try:
            obj = json.loads(out)
        except json.JSONDecodeError as e:
            raise DiscoveryError(f"kubectl get {kind} {name}: output is not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise DiscoveryError(f"kubectl get {kind} {name}: output is not an object")
        return obj


def _failure(stderr: str, status: int) -> str:
    """kubectl's own message, without the client-go retry lines logged before it."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    kept = [line for line in lines if not _KLOG_LINE.match(line)] or lines[-1:]
    return "; ".join(kept) or f"exit status {status}"


def proxy_mode_from_config(text: str) -> str | None:
    """The top-level ``mode:`` of a KubeProxyConfiguration ("" means kube-proxy's default)."""
    match = _MODE_LINE.search(text)
    return match.group(2) if match else None


def _data(configmap: dict[str, Any] | None) -> dict[str, str]:
    data = (configmap or {}).get("data") or {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def decide_mode(
    kube_proxy: dict[str, Any] | None, cilium_config: dict[str, Any] | None
) -> tuple[str, tuple[str, ...]]:
    """The overlay for a cluster, from kube-proxy's and Cilium's ConfigMaps, and why."""
    replacement = _data(cilium_config).get("kube-proxy-replacement", "").lower()
    if replacement in ("true", "strict"):
        return "cilium", (f"cilium-config kube-proxy-replacement={replacement}: using mode cilium",)
    data = _data(kube_proxy)
    # kubeadm names the key config.conf; EKS ships kube-proxy-config with the key config.
    text = data.get("config.conf") or data.get("config")
    if text is None:
        raise DiscoveryError(
            "found neither a kube-proxy ConfigMap nor Cilium's kube-proxy replacement; pass --mode"
        )
    mode = proxy_mode_from_config(text)
    if mode in (None, "", "iptables"):
        shown = mode or "unset (iptables)"
        return "iptables", (f"kube-proxy mode {shown}: using mode iptables",)
    if mode == "ipvs":
        return "ipvs", ("kube-proxy mode ipvs: using mode ipvs; set kubelet --cluster-dns to the local IP",)
    if mode == "nftables":
        return "iptables", (
            "kube-proxy mode nftables: using mode iptables; the agent's -rules-backend auto "
            "picks nftables on this node",
        )
    raise DiscoveryError(f"kube-proxy mode {mode!r} is not supported; pass --mode")


def discover(kubectl: Kubectl, namespace: str, want_mode: bool = True) -> ClusterFacts:
    try:
        ip = kubectl.run("get", "service", "kube-dns", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}")
    except DiscoveryError as e:
        # The first call fails when there is no cluster to ask: say how to go on without one.
        mode = f" and --mode {'|'.join(MODES)}" if want_mode else ""
        raise DiscoveryError(f"{e}\n{WITHOUT_CLUSTER}{mode}") from None
    ip = ip.strip()
    if not ip or ip == "None":
        raise DiscoveryError(f"service kube-dns in {namespace} has no ClusterIP")
    notes: tuple[str, ...] = (f"kube-dns ClusterIP {ip}",)
    if not want_mode:
        return ClusterFacts(dns_server=ip, mode=None, notes=notes)
    cilium = kubectl.get_json("configmap", "cilium-config", "kube-system")
    kube_proxy = kubectl.get_json("configmap", "kube-proxy", "kube-system")
    if kube_proxy is None:
        kube_proxy = kubectl.get_json("configmap", "kube-proxy-config", "kube-system")
    mode, why = decide_mode(kube_proxy, cilium)
    return ClusterFacts(dns_server=ip, mode=mode, notes=notes + why)

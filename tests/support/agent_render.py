"""The agent that `render`'s DaemonSet starts: the render arguments, the rendered objects, the CLI runner, the kubelet environment."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from support.agent_ns import (
    KUBE_DNS,
    KUBE_DNS_UPSTREAM,
    LINK_LOCAL,
)

RENDER_ARGS = ["--mode", "iptables", "--dns-server", KUBE_DNS, "--local-ip", LINK_LOCAL, "-o", "json"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NODELOCALDNS_", "KUBE_"))}


def _cli(*argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "nodelocaldns", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
        return found[0]

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.get("DaemonSet", "node-local-dns")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod_spec["containers"]
        (container,) = [c for c in containers if c["name"] == "node-cache"]
        return container

    def port(self, name: str) -> int:
        """A metrics Service port's target: the node port (hostNetwork pods declare none)."""
        svc = self.get("Service", "node-local-dns")
        (port,) = [p["targetPort"] for p in svc["spec"]["ports"] if p["name"] == name]
        return int(port)

    def arg(self, flag: str) -> str:
        args: list[str] = self.container["args"]
        return args[args.index(flag) + 1]

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        return f"http://{get['host']}:{get['port']}{get['path']}"


def kubelet_env(r: Rendered) -> dict[str, str]:
    """The container's own env plus the Service variables kubelet adds for the kube-dns Services."""
    env = {e["name"]: e["value"] for e in r.container.get("env", []) if "value" in e}
    upstream_svc = r.arg("-upstreamsvc")
    r.get("Service", upstream_svc)  # the Service the agent will look up is part of the install
    # kube-dns itself is not part of the install; its ClusterIP is the one render was given.
    for svc, ip in (("kube-dns", KUBE_DNS), (upstream_svc, KUBE_DNS_UPSTREAM)):
        env[svc.upper().replace("-", "_") + "_SERVICE_HOST"] = ip
        env[svc.upper().replace("-", "_") + "_SERVICE_PORT"] = "53"
    return env

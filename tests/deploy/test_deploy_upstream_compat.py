"""An install of the upstream addon can be upgraded in place: what must not change, has not.

The reference is kubernetes/kubernetes cluster/addons/dns/nodelocaldns/nodelocaldns.yaml (image
1.26.4). A DaemonSet's selector is immutable, and the agent is a drop-in for the container's args,
ConfigMap key and mounts; docs/upgrade.md promises all of this.
"""

from __future__ import annotations

import io
import re
from typing import Any

import yaml

from nodelocaldns.tools import render
from support.addon import ADDON_COREFILE as ADDON_TEMPLATE

ADDON_COREFILE = "\n" + ADDON_TEMPLATE
# The addon's args after its documented iptables-mode sed of __PILLAR__LOCAL__DNS__ only.
ADDON_ARGS = [
    "-localip",
    "169.254.20.10,__PILLAR__DNS__SERVER__",
    "-conf",
    "/etc/Corefile",
    "-upstreamsvc",
    "kube-dns-upstream",
    "-pidfile",
    "/tmp/node-cache.pid",
]


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = io.StringIO()
    assert render.main([], out=out) == 0
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def words(text: str) -> list[str]:
    return text.split()


def test_corefile_is_the_addon_plus_health_lameduck_and_ready() -> None:
    ours = objects()[("ConfigMap", "node-local-dns")]["data"]["Corefile"]
    without_additions = re.sub(r"\{\s*lameduck 5s\s*\}", "", ours)
    without_additions = re.sub(r"ready __PILLAR__LOCAL__DNS__:8181", "", without_additions)
    assert words(without_additions) == words(ADDON_COREFILE)


def test_daemonset_keeps_every_field_an_upgrade_depends_on() -> None:
    ds = objects()[("DaemonSet", "node-local-dns")]
    assert ds["metadata"]["namespace"] == "kube-system"
    assert ds["spec"]["selector"] == {"matchLabels": {"k8s-app": "node-local-dns"}}
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node-cache"
    assert container["args"] == ADDON_ARGS
    assert pod["serviceAccountName"] == "node-local-dns"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "xtables-lock": "/run/xtables.lock",
        "runtime-dir": "/run/nodelocaldns",  # ours: peer discovery for the surge pod
        "config-volume": "/etc/coredns",
        "kube-dns-config": "/etc/kube-dns",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config-volume"]["configMap"] == {
        "name": "node-local-dns",
        "items": [{"key": "Corefile", "path": "Corefile.base"}],
    }
    assert volumes["kube-dns-config"]["configMap"] == {"name": "kube-dns", "optional": True}
    assert volumes["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9253"


def test_services_keep_their_names_selectors_and_ports() -> None:
    objs = objects()
    upstream = objs[("Service", "kube-dns-upstream")]
    assert upstream["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert upstream["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in upstream["spec"]["ports"]] == [
        ("dns", 53, "UDP", 53),
        ("dns-tcp", 53, "TCP", 53),
    ]
    metrics = objs[("Service", "node-local-dns")]
    assert metrics["spec"]["clusterIP"] == "None"
    assert ("metrics", 9253) in [(p["name"], p["port"]) for p in metrics["spec"]["ports"]]
    assert ("ServiceAccount", "node-local-dns") in objs

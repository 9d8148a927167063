"""The Kubernetes objects of a nodelocaldns install, built in code for ``nodelocaldns render``.

They are the objects deploy/ gives through kustomize, in the same order: with no values
given, ``objects(Options(mode=m))`` equals ``kubectl kustomize deploy/overlays/m`` (a test
renders both). Each value given explicitly is then filled in the way the upstream ``sed``
recipe fills it, so what is printed is what runs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError
from nodelocaldns.tools import corefiles, sizing
from nodelocaldns.tools.corefiles import AnswerSettings, CacheSettings, UpstreamSettings

Obj = dict[str, Any]

DEFAULT_IMAGE = f"ghcr.io/nodelocaldns/nodelocaldns:{__version__}"
DEFAULT_LOCAL_IP = "169.254.20.10"
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_DOMAIN = "cluster.local"
APP = "node-local-dns"
PART_OF = {"app.kubernetes.io/part-of": "nodelocaldns"}
SETUP_METRICS_PORT = 9353
RUNTIME_DIR = "/run/nodelocaldns"  # -runtimedir: where agents of one node find each other
PEER_CONTAINER = "node-cache-peer"  # the second agent of --redundant
# What a hostNetwork pod listens on in the node's namespace without declaring it (tools/checks.py).
HOST_PORTS_ANNOTATION = "nodelocaldns.io/host-ports"
HOST_PORTS = f"53/UDP,53/TCP,{corefiles.HEALTH_PORT}/TCP,{corefiles.READY_PORT}/TCP,{corefiles.PROMETHEUS_PORT}/TCP,{SETUP_METRICS_PORT}/TCP"
STANDALONE_PORT = 5353
# What the agent does with privilege on the node, and nothing else: the interface, addresses and
# nft/iptables-nft rules (NET_ADMIN); binding :53 (NET_BIND_SERVICE); iptables-legacy, chosen on
# nodes whose kubelet chains are legacy, opens a raw socket even to read (NET_RAW).
NODE_CAPABILITIES = ("NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW")
POD_DNS_ANNOTATION = "nodelocaldns.io/pod-dns-config"
SYSCTL_CONTAINER = "sysctl"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class Options:
    """What ``render`` was asked for; None means "leave it to the agent" (placeholder kept)."""

    mode: str = "iptables"
    dns_server: str | None = None
    local_ip: str | None = None
    domain: str | None = None
    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    cache: CacheSettings = field(default_factory=CacheSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    answers: AnswerSettings = field(default_factory=AnswerSettings)
    redundant: bool = False
    """Two agents in each pod, both serving the node's addresses all the time (docs/node-agent.md)."""
    sysctl_init: bool = True
    """A privileged init container sets net.ipv4.tcp_migrate_req=1 on the node (hostNetwork modes)."""

    def validate(self) -> None:
        if self.mode not in corefiles.MODES:
            raise ConfigError(f"mode must be one of {', '.join(corefiles.MODES)}, got {self.mode!r}")
        if self.redundant and self.mode == "cilium":
            raise ConfigError(
                "--redundant needs a hostNetwork mode (iptables or ipvs): with cilium each pod has its own IP"
            )
        if not self.sysctl_init and self.mode == "cilium":
            raise ConfigError(
                "--no-sysctl-init does not apply to cilium: its pod has a network namespace of its own "
                "and renders no sysctl init container"
            )
        check_namespace(self.namespace)
        if self.domain is not None:
            check_domain(self.domain)
        local = parse_ip("local IP", self.local_ip or DEFAULT_LOCAL_IP)
        if self.dns_server is not None:
            server = parse_ip("DNS server", self.dns_server)
            # node-cache refuses a -localip list that mixes families.
            if self.mode != "cilium" and server.version != local.version:
                raise ConfigError(
                    f"local IP {local} and DNS server {server} must be the same IP family "
                    "(run one install per family for dual-stack)"
                )
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"image {self.image!r} is not an image reference")
        self.cache.validate()
        self.upstream.validate()
        self.answers.validate()


def parse_ip(what: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an IP address") from None


def check_namespace(name: str) -> None:
    if not _DNS1123_LABEL.fullmatch(name):
        raise ConfigError(f"namespace {name!r} is not a valid DNS-1123 label")


def check_domain(domain: str) -> None:
    if not _DNS1123_SUBDOMAIN.fullmatch(domain.rstrip(".")):
        raise ConfigError(f"cluster domain {domain!r} is not a valid DNS name")


def _meta(name: str, namespace: str, labels: dict[str, str], **extra: Any) -> Obj:
    return {"name": name, "namespace": namespace, "labels": labels, **extra}


def service_account(namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(APP, namespace, {"k8s-app": APP, **PART_OF}),
    }


def config_map(namespace: str, corefile: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(APP, namespace, {"k8s-app": APP, **PART_OF}),
        "data": {"Corefile": corefile},
    }


def _dns_ports(target: int | None) -> list[Obj]:
    """Port 53 over UDP and TCP, to ``target`` or else to the container ports of the same names."""
    return [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": target or "dns"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": target or "dns-tcp"},
    ]


def upstream_service(namespace: str) -> Obj:
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNSUpstream", **PART_OF}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("kube-dns-upstream", namespace, labels),
        "spec": {"ports": _dns_ports(53), "selector": {"k8s-app": "kube-dns"}},
    }


def _scrape_annotations() -> dict[str, str]:
    return {"prometheus.io/port": str(corefiles.PROMETHEUS_PORT), "prometheus.io/scrape": "true"}


def metrics_service(namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, namespace, {"k8s-app": APP, **PART_OF}, annotations=_scrape_annotations()),
        "spec": {
            "clusterIP": "None",
            "ports": [
                {"name": "metrics", "port": 9253, "targetPort": 9253, "protocol": "TCP"},
                {
                    "name": "setup-metrics",
                    "port": SETUP_METRICS_PORT,
                    "targetPort": SETUP_METRICS_PORT,
                    "protocol": "TCP",
                },
            ],
            "selector": {"k8s-app": APP},
        },
    }


def _resources(cache: CacheSettings) -> Obj:
    # The limit follows the cache size (tools/sizing.py); the default size gives the addon's 128Mi.
    return {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": sizing.memory_limit(cache.size)},
    }


def _probe(path: str, port: int, host: str | None, **timing: int) -> Obj:
    get: Obj = {"path": path, "port": port}
    if host is not None:
        get = {"host": host, **get}
    return {"httpGet": get, **timing}


def node_args(opts: Options) -> list[str]:
    local = opts.local_ip or DEFAULT_LOCAL_IP
    server = opts.dns_server or corefiles.DNS_SERVER
    localip = local if opts.mode == "ipvs" else f"{local},{server}"
    args = ["-localip", localip, "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"]
    args += ["-pidfile", "/tmp/node-cache.pid"]
    if opts.mode == "cilium":
        args += ["-skipteardown=true", "-setupinterface=false", "-setupiptables=false"]
    return args


def _node_cache_ports() -> list[Obj]:
    return [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        {"name": "metrics", "containerPort": corefiles.PROMETHEUS_PORT, "protocol": "TCP"},
        {"name": "setup-metrics", "containerPort": SETUP_METRICS_PORT, "protocol": "TCP"},
    ]


def sysctl_container(image: str) -> Obj:
    """The init container that sets the node's net.ipv4.tcp_migrate_req (node/sysctls.py).

    The agent's own container sees /proc/sys read-only and Kubernetes refuses net.* pod sysctls for
    a hostNetwork pod, so only a privileged container can write it; this one runs for a moment
    before the agent, in the node's network namespace, and never fails the pod. The same image: no
    other image to pull or mirror."""
    return {
        "name": SYSCTL_CONTAINER,
        "image": image,
        "command": ["nodelocaldns", "sysctl"],
        "securityContext": {"privileged": True},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }


def daemon_set(opts: Options) -> Obj:
    cilium = opts.mode == "cilium"
    host = None if cilium else (opts.local_ip or DEFAULT_LOCAL_IP)
    security: Obj
    if cilium:
        security = {
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "allowPrivilegeEscalation": False,
        }
    else:
        security = {"capabilities": {"add": list(NODE_CAPABILITIES), "drop": ["ALL"]}}
    mounts: list[Obj] = [
        {"name": "config-volume", "mountPath": "/etc/coredns"},
        {"name": "kube-dns-config", "mountPath": "/etc/kube-dns"},
    ]
    volumes: list[Obj] = [
        {"name": "kube-dns-config", "configMap": {"name": "kube-dns", "optional": True}},
        {
            "name": "config-volume",
            "configMap": {"name": APP, "items": [{"key": "Corefile", "path": "Corefile.base"}]},
        },
    ]
    if not cilium:
        mounts.insert(0, {"name": "xtables-lock", "mountPath": "/run/xtables.lock", "readOnly": False})
        volumes.insert(
            0, {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}
        )
        # Peer discovery: the old and the surge pod (or the two agents of --redundant) see each other here.
        mounts.insert(1, {"name": "runtime-dir", "mountPath": RUNTIME_DIR})
        volumes.insert(
            1, {"name": "runtime-dir", "hostPath": {"path": RUNTIME_DIR, "type": "DirectoryOrCreate"}}
        )
    container: Obj = {
        "name": "node-cache",
        "image": opts.image,
        "args": node_args(opts),
        "securityContext": security,
        "resources": _resources(opts.cache),
        "livenessProbe": _probe(
            "/health", corefiles.HEALTH_PORT, host, initialDelaySeconds=60, timeoutSeconds=5
        ),
        "readinessProbe": _probe(
            "/ready", corefiles.READY_PORT, host, periodSeconds=5, timeoutSeconds=2, failureThreshold=2
        ),
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", "import time; time.sleep(5)"]}}},
        "volumeMounts": mounts,
    }
    if cilium:
        # A pod of its own: ports are the pod's, not the node's, and the redirect policy names them.
        container = {**container, "ports": _node_cache_ports()}
    annotations = _scrape_annotations()
    if cilium:
        annotations = {"io.cilium.no-track-port": "53", **annotations}
    else:
        annotations = {**annotations, HOST_PORTS_ANNOTATION: HOST_PORTS}
    pod_spec: Obj = {
        "priorityClassName": "system-node-critical",
        "serviceAccountName": APP,
        "automountServiceAccountToken": False,
        "hostNetwork": True,
        "dnsPolicy": "Default",
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 30,
        **({"initContainers": [sysctl_container(opts.image)]} if opts.sysctl_init and not cilium else {}),
        "containers": [container, {**container, "name": PEER_CONTAINER}] if opts.redundant else [container],
        "volumes": volumes,
    }
    if cilium:
        del pod_spec["hostNetwork"]
    labels = {"k8s-app": APP, **PART_OF}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(APP, opts.namespace, labels),
        "spec": {
            # The surge pod starts next to the old one and takes over (node/peers.py); the old one
            # goes once the new one is ready. hostNetwork: no declared ports, or the surge pod
            # could never be scheduled next to the old one (every containerPort is a hostPort).
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": {"k8s-app": APP}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def local_redirect_policy(namespace: str) -> Obj:
    """Cilium's redirect of kube-dns traffic to this node's cache pod (cilium.io/v2)."""
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumLocalRedirectPolicy",
        "metadata": _meta("nodelocaldns", namespace, dict(PART_OF)),
        "spec": {
            "redirectFrontend": {"serviceMatcher": {"serviceName": "kube-dns", "namespace": namespace}},
            "redirectBackend": {
                "localEndpointSelector": {"matchLabels": {"k8s-app": APP}},
                "toPorts": [
                    {"port": "53", "name": "dns", "protocol": "UDP"},
                    {"port": "53", "name": "dns-tcp", "protocol": "TCP"},
                ],
            },
        },
    }


def node_corefile(opts: Options) -> str:
    text = corefiles.node_corefile(opts.mode, opts.cache, opts.upstream, opts.answers)
    values: dict[str, str] = {}
    if opts.domain is not None:
        values[corefiles.DNS_DOMAIN] = opts.domain
    if opts.local_ip is not None:
        values[corefiles.LOCAL_DNS] = opts.local_ip
    if opts.dns_server is not None:
        values[corefiles.DNS_SERVER] = opts.dns_server
    return corefiles.fill(text, values)


def objects(opts: Options) -> list[Obj]:
    """Every object of a node-cache install, in kustomize's output order."""
    opts.validate()
    out = [
        service_account(opts.namespace),
        config_map(opts.namespace, node_corefile(opts)),
        upstream_service(opts.namespace),
        metrics_service(opts.namespace),
        daemon_set(opts),
    ]
    if opts.mode == "cilium":
        out.append(local_redirect_policy(opts.namespace))
    return out

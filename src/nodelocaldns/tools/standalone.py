"""``nodelocaldns render --standalone``: the cache as its own DaemonSet with a pod IP, no node setup.

Built from the same pieces as the node install (tools/manifests.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from nodelocaldns.errors import ConfigError
from nodelocaldns.tools import corefiles
from nodelocaldns.tools.corefiles import AnswerSettings, CacheSettings, UpstreamSettings
from nodelocaldns.tools.manifests import (
    _DNS1123_LABEL,
    DEFAULT_DOMAIN,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    PART_OF,
    POD_DNS_ANNOTATION,
    STANDALONE_PORT,
    Obj,
    _dns_ports,
    _meta,
    _probe,
    _resources,
    _scrape_annotations,
    check_domain,
    check_namespace,
    config_map,
    parse_ip,
)


@dataclass(frozen=True, slots=True)
class Standalone:
    """A second, independent DNS (a Deployment behind its own ClusterIP) for selected pods."""

    name: str
    service_ip: str
    dns_server: str
    domain: str = DEFAULT_DOMAIN
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    replicas: int = 2
    client_namespace: str = "default"
    cache: CacheSettings = field(default_factory=CacheSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    answers: AnswerSettings = field(default_factory=AnswerSettings)

    def validate(self) -> None:
        if not _DNS1123_LABEL.fullmatch(self.name):
            raise ConfigError(f"standalone name {self.name!r} is not a valid DNS-1123 label")
        parse_ip("service IP", self.service_ip)
        parse_ip("DNS server", self.dns_server)
        check_namespace(self.namespace)
        check_namespace(self.client_namespace)
        check_domain(self.domain)
        if self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}")
        self.cache.validate()
        self.upstream.validate()
        self.answers.validate()


def pod_dns_config(s: Standalone) -> Obj:
    """The pod spec fields that send one pod's lookups to the standalone DNS.

    ``dnsPolicy: None`` drops kubelet's search list too, so it is spelled out here the way
    kubelet writes it for ClusterFirst.
    """
    domain = s.domain.rstrip(".")
    return {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": [s.service_ip],
            "searches": [f"{s.client_namespace}.svc.{domain}", f"svc.{domain}", domain],
            "options": [{"name": "ndots", "value": "5"}],
        },
    }


def standalone_objects(s: Standalone) -> list[Obj]:
    """ConfigMap, Service and Deployment of a standalone DNS running ``nodelocaldns serve``."""
    s.validate()
    labels = {"k8s-app": s.name, **PART_OF}
    corefile = corefiles.standalone_corefile(
        s.domain.rstrip("."), s.dns_server, s.cache, s.upstream, STANDALONE_PORT, s.answers
    )
    config = config_map(s.namespace, corefile)
    config["metadata"] = _meta(s.name, s.namespace, labels)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(
            s.name,
            s.namespace,
            labels,
            annotations={POD_DNS_ANNOTATION: json.dumps(pod_dns_config(s), separators=(",", ":"))},
        ),
        "spec": {
            "clusterIP": s.service_ip,
            "ports": [
                *_dns_ports(None),
                {"name": "metrics", "port": 9253, "protocol": "TCP", "targetPort": "metrics"},
            ],
            "selector": {"k8s-app": s.name},
        },
    }
    # An unprivileged pod: it binds 5353 and the Service maps 53 to it, so no capability is needed.
    container: Obj = {
        "name": "dns",
        "image": s.image,
        "command": ["nodelocaldns", "serve", "--corefile", "/etc/coredns/Corefile"],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": _resources(s.cache),
        "ports": [
            {"name": "dns", "containerPort": STANDALONE_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": STANDALONE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": corefiles.PROMETHEUS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": _probe(
            "/health", corefiles.HEALTH_PORT, None, initialDelaySeconds=10, timeoutSeconds=5
        ),
        "readinessProbe": _probe("/ready", corefiles.READY_PORT, None, periodSeconds=5, timeoutSeconds=2),
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(s.name, s.namespace, labels),
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": {"k8s-app": s.name}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": _scrape_annotations()},
                "spec": {
                    # Forward "." to the node's resolvers, not back into cluster DNS.
                    "dnsPolicy": "Default",
                    "automountServiceAccountToken": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": {"k8s-app": s.name}},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": s.name}}],
                },
            },
        },
    }
    return [config, service, deployment]

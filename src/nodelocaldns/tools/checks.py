"""Consistency checks across rendered objects that no JSON schema expresses.

A schema validates one object; these check that objects fit together (a Service selects a
pod that has the target port, a volume names a ConfigMap that exists) and that the
CiliumLocalRedirectPolicy, which has no schema in kubernetes-validate, carries what its CRD
requires. ``render`` runs them on its own output; the tests run them on kustomize's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]

WORKLOADS = ("DaemonSet", "Deployment", "StatefulSet")
# IANA_SVC_NAME, as Kubernetes validates container and service port names.
_PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
# From the CiliumLocalRedirectPolicy CRD (cilium.io/v2): a port is a decimal uint16 string.
_CILIUM_PORT = re.compile(
    r"^([1-9]|[1-5]?[0-9]{2,4}|6[1-4][0-9]{3}|65[1-4][0-9]{2}|655[1-2][0-9]|6553[1-5])$"
)


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _ns(obj: Obj) -> str | None:
    ns = obj.get("metadata", {}).get("namespace")
    return ns if isinstance(ns, str) else None


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pods(objs: Iterable[Obj]) -> list[tuple[Obj, Obj]]:
    """(workload, pod template) pairs."""
    return [(o, o["spec"]["template"]) for o in objs if o.get("kind") in WORKLOADS]


def _container_ports(template: Obj) -> list[Obj]:
    return [p for c in template["spec"].get("containers", []) for p in c.get("ports", [])]


def lint(objs: Sequence[Obj]) -> list[str]:
    """Every inconsistency found, as one sentence each; empty when all fit."""
    problems: list[str] = []
    names = {(o.get("kind"), _ns(o), o.get("metadata", {}).get("name")) for o in objs}
    pods = _pods(objs)
    for workload, template in pods:
        where = _name(workload)
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        if not _selects(selector, template.get("metadata", {}).get("labels", {})):
            problems.append(f"{where}: selector {selector} does not match its pod template labels")
        spec = template["spec"]
        account = spec.get("serviceAccountName")
        if account and ("ServiceAccount", _ns(workload), account) not in names:
            problems.append(f"{where}: service account {account} is not among the objects")
        problems += surge_port_clashes(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _all_containers(spec):
            for port in container.get("ports", []):
                if not _PORT_NAME.fullmatch(str(port.get("name", ""))):
                    problems.append(
                        f"{where}: container port name {port.get('name')!r} is not an IANA_SVC_NAME"
                    )
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}: mount {mount['name']} has no volume")
        for volume in volumes.values():
            cm = volume.get("configMap")
            if cm and not cm.get("optional") and ("ConfigMap", _ns(workload), cm["name"]) not in names:
                problems.append(f"{where}: volume {volume['name']} needs ConfigMap {cm['name']}")
    for svc in (o for o in objs if o.get("kind") == "Service"):
        problems += _lint_service(svc, pods)
    for lrp in (o for o in objs if o.get("kind") == "CiliumLocalRedirectPolicy"):
        problems += check_local_redirect_policy(lrp, objs)
    for monitor in (o for o in objs if o.get("kind") == "ServiceMonitor"):
        problems += check_service_monitor(monitor, objs)
    return problems


def check_service_monitor(monitor: Obj, objs: Iterable[Obj]) -> list[str]:
    """It selects Services of its own namespace, and every endpoint names a port they all have."""
    where = _name(monitor)
    selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
    services = [
        o
        for o in objs
        if o.get("kind") == "Service"
        and _ns(o) == _ns(monitor)
        and _selects(selector, o["metadata"].get("labels", {}))
    ]
    if not services:
        return [f"{where}: selector {selector} matches no Service in its namespace"]
    problems = []
    for endpoint in monitor["spec"].get("endpoints", []):
        for svc in services:
            if endpoint.get("port") not in {p.get("name") for p in svc["spec"].get("ports", [])}:
                problems.append(
                    f"{where}: endpoint port {endpoint.get('port')!r} is not a port of {_name(svc)}"
                )
    return problems


HOST_PORTS_ANNOTATION = "nodelocaldns.io/host-ports"


def host_ports(template: Obj) -> set[str]:
    """``53/UDP``... that a hostNetwork pod listens on without declaring them (its annotation)."""
    text = template.get("metadata", {}).get("annotations", {}).get(HOST_PORTS_ANNOTATION, "")
    return {p.strip() for p in text.split(",") if p.strip()}


def surge_port_clashes(workload: Obj) -> list[str]:
    """A hostNetwork DaemonSet that surges runs two pods on one node for a while. Every container
    port of a hostNetwork pod is a host port to the scheduler, so a surge pod that declares one
    stays Pending next to the old pod: such a workload must declare none (the listeners share
    their ports through SO_REUSEPORT, which the scheduler knows nothing about)."""
    spec = workload.get("spec", {})
    if workload.get("kind") != "DaemonSet" or not spec["template"]["spec"].get("hostNetwork"):
        return []
    surge = spec.get("updateStrategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
    if surge in (0, "0", "0%"):
        return []
    return [
        f"{_name(workload)}: container {c['name']} declares port {p.get('containerPort')}/{p.get('protocol', 'TCP')}:"
        " with hostNetwork and maxSurge the surge pod could not be scheduled next to the old one"
        for c in _all_containers(spec["template"]["spec"])
        for p in c.get("ports", [])
    ]


def _all_containers(pod: Obj) -> list[Obj]:
    """Init containers too: the scheduler counts a (sidecar) init container's ports as well."""
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _lint_service(svc: Obj, pods: list[tuple[Obj, Obj]]) -> list[str]:
    problems: list[str] = []
    where = _name(svc)
    selector = svc["spec"].get("selector", {})
    for port in svc["spec"].get("ports", []):
        if not _PORT_NAME.fullmatch(str(port.get("name", ""))):
            problems.append(f"{where}: port name {port.get('name')!r} is not an IANA_SVC_NAME")
    targets = [
        t for w, t in pods if _ns(w) == _ns(svc) and _selects(selector, t["metadata"].get("labels", {}))
    ]
    for template in targets:
        ports = _container_ports(template)
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            proto = port.get("protocol", "TCP")
            if isinstance(target, int) and template["spec"].get("hostNetwork"):
                # A node port the pod cannot declare (see surge_port_clashes); it lists them instead.
                if f"{target}/{proto}" not in host_ports(template):
                    problems.append(
                        f"{where}: target port {target}/{proto} is not a port of the selected pods"
                    )
                continue
            key = "name" if isinstance(target, str) else "containerPort"
            if not any(p.get(key) == target and p.get("protocol", "TCP") == proto for p in ports):
                problems.append(f"{where}: target port {target}/{proto} is not a port of the selected pods")
    return problems


def external_services(objs: Sequence[Obj]) -> list[str]:
    """Services whose selector matches no pod template among the objects (they select pods
    that live elsewhere, like kube-dns-upstream)."""
    pods = _pods(objs)
    return [
        _name(s)
        for s in objs
        if s.get("kind") == "Service"
        and not any(
            _ns(w) == _ns(s) and _selects(s["spec"].get("selector", {}), t["metadata"].get("labels", {}))
            for w, t in pods
        )
    ]


def _check_ports(where: str, ports: Any) -> list[str]:
    if not isinstance(ports, list) or not ports:
        return [f"{where}: toPorts must be a non-empty list"]
    problems = []
    for port in ports:
        if not isinstance(port, Mapping):
            problems.append(f"{where}: toPorts entry {port!r} is not an object")
            continue
        if not isinstance(port.get("port"), str) or not _CILIUM_PORT.fullmatch(port["port"]):
            problems.append(f"{where}: port {port.get('port')!r} must be a uint16 written as a string")
        if port.get("protocol") not in ("TCP", "UDP"):
            problems.append(f"{where}: protocol {port.get('protocol')!r} must be TCP or UDP")
        if len(ports) > 1 and not port.get("name"):
            problems.append(f"{where}: with several ports every port needs a name")
    named = [p.get("name") for p in ports if isinstance(p, Mapping) and p.get("name")]
    if len(named) != len(set(named)):
        problems.append(f"{where}: port names repeat")
    return problems


def check_local_redirect_policy(lrp: Obj, objs: Iterable[Obj]) -> list[str]:
    """What the cilium.io/v2 CRD requires, and that the policy reaches this install's pods."""
    where = _name(lrp)
    if lrp.get("apiVersion") != "cilium.io/v2":
        return [f"{where}: apiVersion must be cilium.io/v2"]
    spec = lrp.get("spec")
    if not isinstance(spec, Mapping):
        return [f"{where}: spec is required"]
    problems: list[str] = []
    front = spec.get("redirectFrontend") or {}
    matchers = [k for k in ("addressMatcher", "serviceMatcher") if k in front]
    if len(matchers) != 1:
        problems.append(f"{where}: redirectFrontend needs exactly one of addressMatcher, serviceMatcher")
    svc = front.get("serviceMatcher")
    if isinstance(svc, Mapping):
        for key in ("serviceName", "namespace"):
            if not isinstance(svc.get(key), str) or not svc.get(key):
                problems.append(f"{where}: serviceMatcher.{key} is required")
        if svc.get("namespace") != _ns(lrp):
            problems.append(f"{where}: serviceMatcher.namespace must be the policy's own namespace")
        if "toPorts" in svc:
            problems += _check_ports(f"{where} serviceMatcher", svc["toPorts"])
    addr = front.get("addressMatcher")
    if isinstance(addr, Mapping):
        if not addr.get("ip"):
            problems.append(f"{where}: addressMatcher.ip is required")
        problems += _check_ports(f"{where} addressMatcher", addr.get("toPorts"))
    back = spec.get("redirectBackend")
    if not isinstance(back, Mapping):
        return [*problems, f"{where}: redirectBackend is required"]
    selector = back.get("localEndpointSelector")
    if not isinstance(selector, Mapping):
        return [*problems, f"{where}: redirectBackend.localEndpointSelector is required"]
    problems += _check_ports(f"{where} redirectBackend", back.get("toPorts"))
    labels = selector.get("matchLabels") or {}
    backends = [t for w, t in _pods(objs) if _ns(w) == _ns(lrp) and _selects(labels, t["metadata"]["labels"])]
    if not backends:
        problems.append(f"{where}: localEndpointSelector {labels} selects no pod in {_ns(lrp)}")
    for template in backends:
        if template["spec"].get("hostNetwork"):
            problems.append(f"{where}: backend pods must not use hostNetwork (no pod IP to redirect to)")
        ports = _container_ports(template)
        for port in back.get("toPorts") or []:
            if not isinstance(port, Mapping):
                continue
            if not any(
                str(p.get("containerPort")) == port.get("port")
                and p.get("protocol", "TCP") == port.get("protocol")
                for p in ports
            ):
                problems.append(
                    f"{where}: backend port {port.get('port')}/{port.get('protocol')} is not a pod port"
                )
    return problems

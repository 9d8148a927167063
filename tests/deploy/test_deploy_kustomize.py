"""deploy/ through real kustomize (every kubectl found), validated offline, and `render` against it.

CI gets kubectl from Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3); developer machines
often have a current kubectl (kustomize v5). Both must give the same objects, so every kubectl found
is used: the one on PATH plus any listed in $NODELOCALDNS_TEST_KUBECTL (os.pathsep-separated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from nodelocaldns.corefile import parse_corefile
from nodelocaldns.node import flags as node_flags
from nodelocaldns.node import render as node_render
from nodelocaldns.server.config import plan
from nodelocaldns.tools import checks, corefiles
from support.kustomize import (
    DEPLOY,
    KUBECTLS,
    MODES,
    _kustomize_version,
    kustomize,
    load,
    needs_kubectl,
    overlay,
    run_render,
)

# The oldest and newest schemas kubernetes-validate ships: nothing newer than 1.25 may be used.
K8S_VERSIONS = ("1.25.0", "1.37.0")
KUBE_DNS_IP = "10.96.0.10"
UPSTREAM_SVC_IP = "10.96.0.11"
AGENT_ENV = {"KUBE_DNS_SERVICE_HOST": KUBE_DNS_IP, "KUBE_DNS_UPSTREAM_SERVICE_HOST": UPSTREAM_SVC_IP}


kubectl_param = pytest.mark.parametrize("kubectl", KUBECTLS or ["<none>"])


def normalized(value: Any) -> Any:
    """Drop empty maps: kustomize v2.0 writes `annotations: {}` on a ConfigMap an overlay
    generator replaced, v5 writes nothing; the API server treats both alike."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if v != {}}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def substituted(value: Any, values: dict[str, str]) -> Any:
    """The sed recipe applied to every string in an object tree."""
    if isinstance(value, dict):
        return {k: substituted(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [substituted(v, values) for v in value]
    if isinstance(value, str):
        for old, new in values.items():
            value = value.replace(old, new)
    return value


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


# --- deploy/ renders, validates and fits together -------------------------------------------


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_overlay_objects_validate(kubectl: str, mode: str) -> None:
    objs = load(kustomize(kubectl, overlay(mode)))
    kinds = [o["kind"] for o in objs]
    expected = ["ServiceAccount", "ConfigMap", "Service", "Service", "DaemonSet"]
    assert kinds == expected + (["CiliumLocalRedirectPolicy"] if mode == "cilium" else [])
    for obj in objs:
        assert obj["metadata"]["namespace"] == "kube-system", obj["metadata"]
        if obj["kind"] == "CiliumLocalRedirectPolicy":
            continue  # a CRD: kubernetes-validate has no schema; checks.lint covers it below
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert checks.lint(objs) == []
    # The one Service selecting pods that are not ours: the kube-dns pods.
    assert checks.external_services(objs) == ["Service/kube-dns-upstream"]


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_overlay_mode_specifics(kubectl: str, mode: str) -> None:
    objs = load(kustomize(kubectl, overlay(mode)))
    (ds,) = by_kind(objs, "DaemonSet")
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    localip = args[args.index("-localip") + 1]
    corefile = by_kind(objs, "ConfigMap")[0]["data"]["Corefile"]
    bind_lines = {line.strip() for line in corefile.splitlines() if line.strip().startswith("bind")}
    caps = container["securityContext"]["capabilities"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    if mode == "cilium":
        assert "hostNetwork" not in spec
        assert pod["metadata"]["annotations"]["io.cilium.no-track-port"] == "53"
        assert {"-skipteardown=true", "-setupinterface=false", "-setupiptables=false"} <= set(args)
        assert bind_lines == {"bind 0.0.0.0"}
        assert "NET_ADMIN" not in caps.get("add", []) and caps["drop"] == ["ALL"]
        assert "/run/xtables.lock" not in mounts
        assert "host" not in container["livenessProbe"]["httpGet"]
        assert "host" not in container["readinessProbe"]["httpGet"]
    else:
        assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "Default"
        assert caps == {"add": ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"], "drop": ["ALL"]}
        assert "/run/xtables.lock" in mounts
        assert container["livenessProbe"]["httpGet"]["host"] == "169.254.20.10"
        assert "-skipteardown=true" not in args
        if mode == "ipvs":
            assert localip == "169.254.20.10"
            assert bind_lines == {"bind __PILLAR__LOCAL__DNS__"}
        else:
            assert localip == "169.254.20.10,__PILLAR__DNS__SERVER__"
            assert bind_lines == {"bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert container["resources"]["limits"] == {"memory": "128Mi"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "preStop" in container["lifecycle"]
    metrics = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "node-local-dns")
    assert metrics["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in metrics["spec"]["ports"]} == {9253, 9353}


def test_lint_catches_what_it_claims() -> None:
    """The checks used above must be able to fail."""
    objs = run_render("--mode", "cilium")
    ds = by_kind(objs, "DaemonSet")[0]
    ds["spec"]["template"]["spec"]["hostNetwork"] = True
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = "dns-over-udp-port53"
    lrp = by_kind(objs, "CiliumLocalRedirectPolicy")[0]
    lrp["spec"]["redirectBackend"]["toPorts"][0]["port"] = 53
    del lrp["spec"]["redirectBackend"]["toPorts"][1]["name"]
    lrp["spec"]["redirectFrontend"]["serviceMatcher"]["namespace"] = "default"
    problems = "\n".join(checks.lint(objs))
    for needle in ("hostNetwork", "IANA_SVC_NAME", "uint16", "needs a name", "own namespace"):
        assert needle in problems
    objs = run_render()
    by_kind(objs, "Service")[1]["spec"]["ports"][1]["targetPort"] = 9999
    volumes = by_kind(objs, "DaemonSet")[0]["spec"]["template"]["spec"]["volumes"]
    next(v for v in volumes if v["name"] == "config-volume")["configMap"]["name"] = "gone"
    problems = "\n".join(checks.lint(objs))
    assert "9999/TCP is not a port" in problems and "needs ConfigMap gone" in problems


@needs_kubectl
@pytest.mark.parametrize("mode", MODES)
def test_kustomize_versions_agree(mode: str) -> None:
    if len(KUBECTLS) < 2:
        pytest.skip(f"only one kubectl ({KUBECTLS[0]}); add another via $NODELOCALDNS_TEST_KUBECTL")
    outputs = [normalized(load(kustomize(k, overlay(mode)))) for k in KUBECTLS]
    for kubectl, objs in zip(KUBECTLS[1:], outputs[1:], strict=True):
        assert objs == outputs[0], f"{kubectl} ({_kustomize_version(kubectl)}) differs from {KUBECTLS[0]}"


# --- render gives what kustomize gives -------------------------------------------------------


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_render_equals_overlay(kubectl: str, mode: str) -> None:
    assert normalized(run_render("--mode", mode)) == normalized(load(kustomize(kubectl, overlay(mode))))


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_render_values_equal_sed_on_overlay(kubectl: str, mode: str) -> None:
    got = run_render(
        "--mode", mode, "--dns-server", "10.0.0.10", "--local-ip", "169.254.0.53", "--domain", "corp.example"
    )
    want = substituted(
        load(kustomize(kubectl, overlay(mode))),
        {
            "__PILLAR__DNS__SERVER__": "10.0.0.10",
            "__PILLAR__LOCAL__DNS__": "169.254.0.53",
            "__PILLAR__DNS__DOMAIN__": "corp.example",
            "169.254.20.10": "169.254.0.53",
        },
    )
    assert normalized(got) == normalized(want)
    text = by_kind(got, "ConfigMap")[0]["data"]["Corefile"]
    assert "__PILLAR__DNS__SERVER__" not in text and "corp.example:53 {" in text


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_render_namespace_and_image_equal_kustomize_transformers(
    kubectl: str, mode: str, tmp_path: Path
) -> None:
    # kustomize v2.0 refuses absolute base paths.
    base = os.path.relpath(overlay(mode), tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"bases:\n- {base}\nnamespace: dns-system\nimages:\n"
        "- name: ghcr.io/nodelocaldns/nodelocaldns\n  newName: registry.example/nld\n  newTag: '9.9'\n"
    )
    want = load(kustomize(kubectl, str(tmp_path)))
    got = run_render("--mode", mode, "--namespace", "dns-system", "--image", "registry.example/nld:9.9")
    if mode == "cilium":
        # kustomize's namespace transformer does not know the CRD's serviceMatcher; the CRD
        # wants it equal to the policy's namespace, and render writes it so.
        lrp = by_kind(want, "CiliumLocalRedirectPolicy")[0]
        assert checks.check_local_redirect_policy(lrp, want) != []
        lrp["spec"]["redirectFrontend"]["serviceMatcher"]["namespace"] = "dns-system"
    assert normalized(got) == normalized(want)
    assert checks.lint(got) == []


# --- the Corefiles: the same text in deploy/ and in code, and usable by the agent -------------


@pytest.mark.parametrize("mode", MODES)
def test_deploy_corefile_is_the_code_corefile(mode: str) -> None:
    path = DEPLOY / ("base" if mode == "iptables" else f"overlays/{mode}") / "Corefile"
    defaults = corefiles.node_corefile(mode, corefiles.CacheSettings(), corefiles.UpstreamSettings())
    assert path.read_text() == defaults


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(objs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
def test_agent_renders_configmap_into_a_valid_corefile(mode: str) -> None:
    """The DaemonSet's args and the ConfigMap's template, through the agent's own flag parser
    and template renderer, give a Corefile whose listeners are where the probes look."""
    objs = run_render("--mode", mode)
    container = _container(objs)
    params = node_flags.parse_args(container["args"], env=AGENT_ENV, path_exists=lambda _: False)
    template = by_kind(objs, "ConfigMap")[0]["data"]["Corefile"]
    result = node_render.render_corefile(template, params, env=AGENT_ENV, file_exists=lambda _: True)
    assert "__PILLAR__" not in result.text
    blocks = parse_corefile(result.text, "Corefile")
    p = plan(blocks)
    hosts = {h for b in p.blocks for h in b.hosts}
    zones = [z for b in p.blocks for z in b.zones]
    assert zones == ["cluster.local.", "in-addr.arpa.", "ip6.arpa.", "."]
    want_hosts = {
        "iptables": {"169.254.20.10", KUBE_DNS_IP},
        "ipvs": {"169.254.20.10"},
        "cilium": {"0.0.0.0"},
    }
    assert hosts == want_hosts[mode]
    directives = {d.name: d for b in blocks for d in b.directives}
    for probe, directive in (("livenessProbe", "health"), ("readinessProbe", "ready")):
        get = container[probe]["httpGet"]
        address = directives[directive].args[0]
        assert address == f"{get.get('host', '')}:{get['port']}", (probe, address)
    forwards = [d for b in blocks for d in b.directives if d.name == "forward"]
    assert [f.args[1] for f in forwards] == [UPSTREAM_SVC_IP] * 3 + ["/etc/resolv.conf"]
    # Declared ports (a pod of its own), or the node ports a hostNetwork pod lists instead.
    if "ports" in container:
        ports = {p["containerPort"] for p in container["ports"]}
    else:
        ports = {
            int(p.split("/")[0]) for p in checks.host_ports(by_kind(objs, "DaemonSet")[0]["spec"]["template"])
        }
    assert {int(d.args[0].rsplit(":", 1)[1]) for d in directives.values() if d.name == "prometheus"} <= ports
    assert int(params.metrics_listen_address.rsplit(":", 1)[1]) in ports
    assert params.health_port == container["livenessProbe"]["httpGet"]["port"]


# --- the optional ServiceMonitor (deploy/monitoring, render --service-monitor) ----------------


@needs_kubectl
@kubectl_param
@pytest.mark.parametrize("mode", MODES)
def test_monitoring_base_equals_render_service_monitor(kubectl: str, mode: str, tmp_path: Path) -> None:
    rel = {
        name: os.path.relpath(path, tmp_path)
        for name, path in (("o", overlay(mode)), ("m", DEPLOY / "monitoring"))
    }
    (tmp_path / "kustomization.yaml").write_text(f"bases:\n- {rel['o']}\n- {rel['m']}\n")
    want = load(kustomize(kubectl, str(tmp_path)))
    got = run_render("--mode", mode, "--service-monitor")
    assert normalized(got) == normalized(want)
    (monitor,) = by_kind(got, "ServiceMonitor")
    # Both registries are scraped: the DNS metrics and the agent's setup errors.
    metrics = next(s for s in by_kind(got, "Service") if s["metadata"]["name"] == "node-local-dns")
    ports = {p["name"]: p["port"] for p in metrics["spec"]["ports"]}
    assert {ports[e["port"]] for e in monitor["spec"]["endpoints"]} == {9253, 9353}
    assert checks.lint(got) == []


def test_service_monitor_lint_catches_a_wrong_port_or_selector() -> None:
    objs = run_render("--service-monitor")
    (monitor,) = by_kind(objs, "ServiceMonitor")
    monitor["spec"]["endpoints"].append({"port": "http-metrics"})
    assert checks.lint(objs) == [
        "ServiceMonitor/node-local-dns: endpoint port 'http-metrics' is not a port of Service/node-local-dns"
    ]
    monitor["spec"]["selector"]["matchLabels"] = {"k8s-app": "kube-dns-typo"}
    assert "matches no Service" in checks.lint(objs)[0]

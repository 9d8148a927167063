"""`nodelocaldns render` options, errors and the standalone DNS, checked with the real parsers.

Corefiles are read back with the project's Corefile parser and plugin setup (server.config.plan),
and node Corefile templates go through the agent's own renderer first, so a knob is only
"working" when the program that will read it agrees.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from nodelocaldns.corefile import parse_corefile
from nodelocaldns.node import flags as node_flags
from nodelocaldns.node import render as node_render
from nodelocaldns.node.kubednscm import KubeDNSConfig
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.server.config import Plan, plan
from nodelocaldns.tools import checks, manifests, render, sizing
from support.render import (
    corefile_of,
    objects,
    run,
)

ENV = {"KUBE_DNS_SERVICE_HOST": "10.96.0.10", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.11"}
K8S_VERSIONS = ("1.25.0", "1.37.0")


def agent_plan(objs: list[dict[str, Any]], kubedns: KubeDNSConfig | None = None) -> Plan:
    """What the agent would serve: its flag parser on the DaemonSet args, its renderer on the
    ConfigMap, then the server's plugin setup on the result."""
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    params = node_flags.parse_args(args, env=ENV, path_exists=lambda _: False)
    text = node_render.render_corefile(
        corefile_of(objs), params, kubedns, env=ENV, file_exists=lambda _: True
    )
    return plan(parse_corefile(text.text))


def validate_all(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        if obj["kind"] not in ("CiliumLocalRedirectPolicy", "ServiceMonitor"):  # CRDs: lint covers them
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
    assert checks.lint(objs) == []


def test_defaults_are_the_iptables_mode_as_yaml() -> None:
    status, out, err = run()
    assert status == 0 and err == ""
    assert out.startswith("# nodelocaldns ") and "render\n---\n" not in out
    assert objects() == objects("--mode", "iptables")
    validate_all(objects())


@pytest.mark.parametrize("mode", ["iptables", "ipvs", "cilium"])
def test_json_output_holds_the_same_objects(mode: str) -> None:
    status, out, _ = run("--mode", mode, "-o", "json")
    assert status == 0
    doc = json.loads(out)
    assert doc["kind"] == "List" and doc["items"] == objects("--mode", mode)


CACHE_KNOBS = ("--success-ttl", "60", "--denial-ttl", "10", "--cache-size", "20000")


def test_cache_knobs_reach_every_block() -> None:
    p = agent_plan(
        objects("--mode", "ipvs", *CACHE_KNOBS, "--prefetch", "5 2m 20%", "--serve-stale", "1h verify")
    )
    assert len(p.blocks) == 4
    for block in p.blocks:
        c: CacheConfig = block.single["cache"]
        assert (c.success_cap, c.success_max_ttl, c.denial_cap, c.denial_max_ttl) == (20000, 60, 20000, 10)
        assert (c.prefetch_amount, c.prefetch_window, c.prefetch_percentage) == (5, 120.0, 20)
        assert (c.serve_stale, c.stale_verify) == (3600.0, True)


def test_one_cache_knob_keeps_every_other_setting_of_each_block() -> None:
    plain = agent_plan(objects("--mode", "ipvs"))
    stale = agent_plan(objects("--mode", "ipvs", "--serve-stale", "30m"))
    for before, after in zip(plain.blocks, stale.blocks, strict=True):
        b, a = before.single["cache"], after.single["cache"]
        assert a.serve_stale == 1800.0
        assert dataclasses.replace(a, serve_stale=b.serve_stale) == b
    # The addon's own numbers: cluster block 9984 / 30 s / 5 s, the others `cache 30`.
    first = plain.blocks[0].single["cache"]
    assert (first.success_cap, first.success_max_ttl, first.denial_max_ttl) == (9984, 30, 5)


def test_upstream_knobs_change_only_the_dot_block() -> None:
    objs = objects(
        "--mode", "ipvs", "--upstream", "1.1.1.1, 9.9.9.9:5353", "--upstream", "[fd00::1]:53", "--force-tcp"
    )
    p = agent_plan(objs)
    *cluster, dot = p.blocks
    (fwd,) = dot.configs["forward"]
    assert [u.label for u in fwd.upstreams] == ["1.1.1.1:53", "9.9.9.9:5353", "[fd00::1]:53"]
    assert fwd.force_tcp and not fwd.prefer_udp
    for block in cluster:
        assert [u.label for u in block.configs["forward"][0].upstreams] == ["10.96.0.11:53"]
        assert block.configs["forward"][0].force_tcp
    (fwd,) = agent_plan(objects("--mode", "ipvs", "--prefer-udp")).blocks[-1].configs["forward"]
    assert fwd.prefer_udp and not fwd.force_tcp


def test_force_tcp_upstream_text_is_what_the_agent_swaps_for_kube_dns_upstreams() -> None:
    """node-cache swaps `forward . __PILLAR__UPSTREAM__SERVERS__ { force_tcp }` by exact text
    when the kube-dns ConfigMap names upstreamNameservers; ours must be that text."""
    objs = objects("--mode", "ipvs", "--force-tcp")
    assert node_render.UPSTREAM_TCP_BLOCK in corefile_of(objs)
    (fwd,) = agent_plan(objs, KubeDNSConfig(upstream_nameservers=("10.1.1.1",))).blocks[-1].configs["forward"]
    assert [u.label for u in fwd.upstreams] == ["10.1.1.1:53"] and not fwd.force_tcp


def test_ipv6_local_address() -> None:
    objs = objects("--local-ip", "fd00::10", "--dns-server", "fd00::a")
    validate_all(objs)
    container = next(o for o in objs if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["-localip", "fd00::10,fd00::a"]
    assert container["livenessProbe"]["httpGet"]["host"] == "fd00::10"
    text = corefile_of(objs)
    assert "health [fd00::10]:8080 {" in text and "ready [fd00::10]:8181" in text
    assert "bind fd00::10 fd00::a" in text
    # With every address written in, only the agent's own placeholders remain.
    rendered = text.replace("__PILLAR__CLUSTER__DNS__", "fd00::b").replace(
        "__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf"
    )
    p = plan(parse_corefile(rendered.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")))
    assert {h for b in p.blocks for h in b.hosts} == {"fd00::10", "fd00::a"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dns-server", "10.0.0.300"], "not an IP address"),
        (["--local-ip", "fd00::1", "--dns-server", "10.0.0.10"], "same IP family"),
        (["--namespace", "Kube_System"], "DNS-1123"),
        (["--domain", "bad_domain.example"], "not a valid DNS name"),
        (["--cache-size", "0"], "at least 1"),
        (["--success-ttl", "-5"], "at least 1"),
        (["--prefetch", "often"], "positive integer"),
        (["--prefetch", "10 1m 5%"], "10% to 90%"),
        (["--prefetch", "10 soon"], "Go duration"),
        (["--serve-stale", "1h sometimes"], "immediate or verify"),
        (["--upstream", "tls://1.1.1.1"], "not an IP address"),
        (["--upstream", "dns.example"], "not an IP address"),
        (["--upstream", "1.1.1.1:99999"], "bad port"),
        (["--image", "has space:1"], "not an image reference"),
        (["--service-ip", "10.96.0.20"], "only applies with --standalone"),
        (["--standalone", "dns2"], "needs --service-ip"),
        (["--standalone", "dns2", "--service-ip", "10.96.0.20", "--mode", "ipvs"], "does not apply"),
        (["--standalone", "dns2", "--service-ip", "10.96.0.20"], "needs --dns-server"),
        (["--standalone", "DNS_2", "--service-ip", "10.96.0.20", "--dns-server", "10.96.0.10"], "DNS-1123"),
    ],
)
def test_bad_input_is_refused_with_a_reason(argv: list[str], message: str) -> None:
    status, out, err = run(*argv)
    assert (status, out) == (2, "")
    assert message in err and err.startswith("nodelocaldns render: error:")


@pytest.mark.parametrize("argv", [["--force-tcp", "--prefer-udp"], ["--mode", "userspace"], ["--bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(argv) == 2
    assert "usage: nodelocaldns render" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(["--help"]) == 0
    assert "--standalone" in capsys.readouterr().out


# --- standalone second DNS (a separate resolver for selected pods) ----------------------------

STANDALONE = ("--standalone", "dns-canary", "--service-ip", "10.96.0.20", "--dns-server", "10.96.0.10")


def test_standalone_objects() -> None:
    objs = objects(*STANDALONE, "--namespace", "dns-test", "--cache-size", "5000")
    assert [o["kind"] for o in objs] == ["ConfigMap", "Service", "Deployment"]
    validate_all(objs)
    cm, svc, deploy = objs
    assert checks.external_services(objs) == []
    assert svc["spec"]["clusterIP"] == "10.96.0.20"
    assert {(p["port"], p["protocol"], p["targetPort"]) for p in svc["spec"]["ports"]} >= {
        (53, "UDP", "dns"),
        (53, "TCP", "dns-tcp"),
    }
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["nodelocaldns", "serve", "--corefile", "/etc/coredns/Corefile"]
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    p = plan(parse_corefile(cm["data"]["Corefile"]))
    assert set(p.listeners) == {("", 5353)}
    assert {p["containerPort"] for p in container["ports"] if p["name"].startswith("dns")} == {5353}
    assert [b.zones for b in p.blocks] == [("cluster.local.",), ("in-addr.arpa.",), ("ip6.arpa.",), (".",)]
    assert [[u.label for u in b.configs["forward"][0].upstreams] for b in p.blocks[:3]] == [
        ["10.96.0.10:53"]
    ] * 3
    assert all(b.configs["forward"][0].force_tcp for b in p.blocks[:3])
    assert p.blocks[3].configs["forward"][0].from_zone == "."
    assert all(b.single["cache"].success_cap == 5000 for b in p.blocks)
    health = p.blocks[0].block.directives_named("health")[0].args[0]
    assert health == f":{container['livenessProbe']['httpGet']['port']}"


def test_standalone_pod_snippet_points_a_pod_at_the_service() -> None:
    status, out, _ = run(*STANDALONE, "--client-namespace", "team-a", "--domain", "corp.example")
    assert status == 0
    svc = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Service")
    snippet = json.loads(svc["metadata"]["annotations"][manifests.POD_DNS_ANNOTATION])
    assert snippet == {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["10.96.0.20"],
            "searches": ["team-a.svc.corp.example", "svc.corp.example", "corp.example"],
            "options": [{"name": "ndots", "value": "5"}],
        },
    }
    # The same fields, as comments after the last object, ready to paste into a pod spec.
    trailer = out[out.rindex("Send a pod's lookups") :]
    commented = "\n".join(line.removeprefix("#   ") for line in trailer.splitlines()[1:])
    assert yaml.safe_load(commented) == snippet
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dnsutils", "namespace": "team-a"},
        "spec": {
            "containers": [
                {"name": "dnsutils", "image": "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3"}
            ]
        }
        | snippet,
    }
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_standalone_json_has_the_snippet_in_the_annotation() -> None:
    status, out, _ = run(*STANDALONE, "-o", "json")
    items = json.loads(out)["items"]
    assert status == 0 and [i["kind"] for i in items] == ["ConfigMap", "Service", "Deployment"]
    assert (
        json.loads(items[1]["metadata"]["annotations"][manifests.POD_DNS_ANNOTATION])["dnsPolicy"] == "None"
    )


# --- the memory limit follows the cache size ---------------------------------------------------


def _limit(objs: list[dict[str, Any]]) -> str:
    pod = next(o for o in objs if o["kind"] in ("DaemonSet", "Deployment"))["spec"]["template"]["spec"]
    return pod["containers"][0]["resources"]["limits"]["memory"]  # type: ignore[no-any-return]


def _mib(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


@pytest.mark.parametrize("extra", [(), ("--standalone", "dns-canary", "--service-ip", "10.96.0.20")])
def test_memory_limit_follows_the_cache_size(extra: tuple[str, ...]) -> None:
    base = (*extra, "--dns-server", "10.96.0.10")
    # The addon's cache sizes keep the addon's limit, whether given or not.
    assert _limit(objects(*base)) == "128Mi"
    assert _limit(objects(*base, "--cache-size", "9984", "--success-ttl", "60")) == "128Mi"
    limits = [_mib(_limit(objects(*base, "--cache-size", str(n)))) for n in (100, 20000, 100000, 1000000)]
    assert limits == sorted(limits) and len(set(limits)) == 4, limits
    # A full cache of 8 x 100000 entries at the measured cost fits under its limit with the headroom.
    per_entry_mib = sizing.BYTES_PER_ENTRY / sizing.MiB
    full = sizing.IDLE_RSS / sizing.MiB + 8 * 99840 * per_entry_mib
    assert full + sizing.HEADROOM / sizing.MiB <= limits[2] < full + sizing.HEADROOM / sizing.MiB + 16
    validate_all(objects(*base, "--cache-size", "1000000"))


def test_sizing_constants_agree_with_the_benchmark_report() -> None:
    """Rerunning `make bench` with a heavier cache entry makes this fail until sizing.py is remeasured."""
    report = (Path(__file__).resolve().parents[2] / "bench" / "results" / "latest.md").read_text()
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if "RSS after fill MiB" in line)
    header = [c.strip() for c in lines[at].strip("|").split("|")]
    row = next(line for line in lines[at:] if line.startswith("| nodelocaldns |"))
    cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))
    rss_full_mib = float(cells["RSS after fill MiB"])
    entries = int(cells["cache entries (/metrics)"].replace(",", ""))
    assert entries == sizing.DEFAULT_ENTRIES  # the bench filled exactly the addon's caches
    measured = (rss_full_mib * sizing.MiB - sizing.IDLE_RSS) / entries
    assert abs(measured - sizing.BYTES_PER_ENTRY) < 2, measured


def test_service_monitor_follows_the_namespace_and_the_standalone_service() -> None:
    objs = objects("--service-monitor", "--namespace", "dns-system")
    monitor = objs[-1]
    assert (monitor["kind"], monitor["metadata"]["namespace"]) == ("ServiceMonitor", "dns-system")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "setup-metrics"]
    validate_all(objs)
    alone = objects(*STANDALONE, "--service-monitor")
    assert alone[-1]["spec"] == {
        "selector": {"matchLabels": {"k8s-app": "dns-canary"}},
        "endpoints": [{"port": "metrics"}],
    }
    validate_all(alone)
    assert "ServiceMonitor" not in {o["kind"] for o in objects()}

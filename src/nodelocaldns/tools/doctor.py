"""``nodelocaldns doctor``: check a node the way an operator would by hand, and say how to fix it.

Run it on the node or in the node-local-dns pod (``kubectl -n kube-system exec ds/node-local-dns --
nodelocaldns doctor``). It reads, in the current network namespace: the interface and its
addresses (``ip addr``), the ``local`` routes (``routel local``), the policy rules ahead of ``lookup
local`` (the EKS security-groups-for-pods trap), node-cache's NOTRACK/ACCEPT rules in every backend
(``iptables -t raw -nL``, ``nft list table``), the :53 listeners; then it talks to the cache: a
cluster name and an external name through every local IP (``dig``), twice, to see the cache hit; a
query whose conntrack entry must not exist; ``/health``, ``/ready`` and ``/metrics``.

What to expect comes from the flags, else from the Corefile the cache serves (``/etc/Corefile`` in
the pod: ``bind``, zones, ``health``/``ready``/``prometheus``), else node-cache's defaults.
``docs/doctor.md`` explains each check and its fixes.

Exit status: 0 when no check failed (warnings allowed), 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nodelocaldns.errors import ConfigError
from nodelocaldns.node.rules import desired_rules
from nodelocaldns.tools import doctor_probe as probe
from nodelocaldns.tools.doctor_checks import (
    Check,
    check_duplicates,
    check_interface,
    check_local_routes,
    check_policy_routing,
    check_rules,
    worst,
)
from nodelocaldns.tools.doctor_corefile import CorefileHints, corefile_hints
from nodelocaldns.tools.doctor_facts import CacheProbe, LookupFacts, PolicyFacts, RulesetFacts, family_of
from nodelocaldns.tools.doctor_serving import check_conntrack, check_http, check_listeners, check_lookups
from nodelocaldns.tools.promtext import FetchError, Scrape, fetch, in_words

DEFAULT_LOCAL_IP = "169.254.20.10"
DEFAULT_COREFILE = "/etc/Corefile"  # the DaemonSet's -conf: the Corefile the agent rendered
DEFAULT_EXTERNAL_NAME = "kubernetes.io"


@dataclass
class Options:
    local_ips: list[str]
    interface: str = "nodelocaldns"
    domain: str = "cluster.local"
    cluster_name: str = ""
    external_name: str = DEFAULT_EXTERNAL_NAME
    dns_port: int = 53
    health: str = ""
    ready: str = ""
    metrics: str = ""
    explicit: set[str] = field(default_factory=set)
    timeout: float = 2.0
    json: bool = False
    ips_from_env: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _url_host(ip: str) -> str:
    return f"[{ip}]" if family_of(ip) == 6 else ip


def _split_ips(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                ip = ipaddress.ip_address(part).compressed
            except ValueError:
                raise SystemExit(f"nodelocaldns doctor: invalid --local-ip {part!r}") from None
            if ip not in out:
                out.append(ip)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodelocaldns doctor",
        description="Check this node's NodeLocal DNSCache setup and say how to fix what is wrong.",
    )
    p.add_argument(
        "--local-ip",
        "-localip",  # node-cache's spelling: the DaemonSet's value can be pasted as is
        dest="local_ip",
        action="append",
        default=[],
        metavar="IP[,IP]",
        help=f"addresses the cache serves (default {DEFAULT_LOCAL_IP} plus $KUBE_DNS_SERVICE_HOST if set)",
    )
    p.add_argument(
        "--interface", default="nodelocaldns", help="link holding the local IPs (default %(default)s)"
    )
    p.add_argument(
        "--corefile",
        default=None,
        help=f"Corefile the cache serves, for the defaults below (default {DEFAULT_COREFILE} if it exists; '' skips)",
    )
    p.add_argument(
        "--domain",
        default=None,
        help="cluster domain (default: the Corefile's, $CLUSTER_DOMAIN, cluster.local)",
    )
    p.add_argument(
        "--cluster-name",
        default="",
        help="in-cluster name to resolve (default kubernetes.default.svc.DOMAIN)",
    )
    p.add_argument(
        "--external-name",
        default=DEFAULT_EXTERNAL_NAME,
        help="name outside the cluster to resolve (default %(default)s; '' skips)",
    )
    p.add_argument(
        "--dns-port", type=int, default=53, help="DNS port of the rules and listeners (default 53)"
    )
    p.add_argument("--health", default=None, help="health URL (default http://LOCALIP:8080/health; '' skips)")
    p.add_argument("--ready", default=None, help="ready URL (default http://LOCALIP:8181/ready; '' skips)")
    p.add_argument(
        "--metrics", default=None, help="metrics URL (default http://LOCALIP:9253/metrics; '' skips)"
    )
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per query or request (default 2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _read_hints(path: str, explicit: bool, notes: list[str]) -> CorefileHints:
    try:
        with open(path, encoding="utf-8") as f:
            hints = corefile_hints(f.read(), path)
    except (OSError, ConfigError) as e:
        why = in_words(e)
        if explicit:
            raise SystemExit(f"nodelocaldns doctor: cannot use --corefile {path}: {why}") from None
        notes.append(f"ignored {path}: {why}")
        return CorefileHints()
    notes.append(
        f"defaults from {path}: bind {' '.join(hints.local_ips) or '-'}, domain {hints.domain or '-'}"
    )
    return hints


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """Flags first, then what the Corefile says, then node-cache's defaults."""
    args = build_parser().parse_args(list(argv))
    notes: list[str] = []
    path = (
        args.corefile
        if args.corefile is not None
        else (DEFAULT_COREFILE if os.path.exists(DEFAULT_COREFILE) else "")
    )
    hints = _read_hints(path, args.corefile is not None, notes) if path else CorefileHints()
    from_env: set[str] = set()
    if args.local_ip:
        ips = _split_ips(args.local_ip)
    elif hints.local_ips:
        ips = list(hints.local_ips)
    else:
        ips = [DEFAULT_LOCAL_IP]
        kube_dns = env.get("KUBE_DNS_SERVICE_HOST", "").strip()
        if kube_dns:
            extra = _split_ips([kube_dns])
            from_env = {ip for ip in extra if ip not in ips}
            ips += [ip for ip in extra if ip not in ips]
        else:
            notes.append(
                f"no Corefile and no $KUBE_DNS_SERVICE_HOST: checked only {DEFAULT_LOCAL_IP}, not the "
                f"kube-dns ClusterIP; pass --local-ip {DEFAULT_LOCAL_IP},KUBE_DNS_IP (the DaemonSet's -localip)"
            )
    if not ips:
        raise SystemExit("nodelocaldns doctor: no --local-ip given")
    first = _url_host(ips[0])
    urls: dict[str, str] = {}
    explicit: set[str] = set()
    for name, hinted, default in (
        ("health", hints.health, f"http://{first}:8080/health"),
        ("ready", hints.ready, f"http://{first}:8181/ready"),
        ("metrics", hints.metrics, f"http://{first}:9253/metrics"),
    ):
        given = getattr(args, name)
        urls[name] = given if given is not None else (hinted or default)
        if given is not None or hinted:
            explicit.add(name)
    # The upstream manifest's liveness probe is <localip>:8080/health, so its absence is a failure
    # even when nobody named the URL; ready and metrics are optional there.
    explicit.add("health")
    domain = (args.domain or hints.domain or env.get("CLUSTER_DOMAIN") or "cluster.local").strip(".")
    return Options(
        local_ips=ips,
        interface=args.interface,
        domain=domain,
        cluster_name=args.cluster_name or f"kubernetes.default.svc.{domain}",
        external_name=args.external_name,
        dns_port=args.dns_port if args.dns_port is not None else hints.dns_port,
        health=urls["health"],
        ready=urls["ready"],
        metrics=urls["metrics"],
        explicit=explicit,
        timeout=args.timeout,
        json=args.json,
        ips_from_env=from_env,
        notes=notes,
    )


def _health_port(url: str) -> int:
    try:
        return urllib.parse.urlsplit(url).port or 8080
    except ValueError:
        return 8080


def _failed(check_id: str, title: str, error: str) -> Check:
    return Check(
        check_id, title, "fail", f"could not check: {error}", "Run doctor as root on the node or in the pod."
    )


class CacheCounter:
    """Reads the cache hit counter around a repeat query; None once the endpoint is known dead."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout, self.dead = url, timeout, not url

    def hits(self) -> float | None:
        if self.dead:
            return None
        try:
            return Scrape.from_text(fetch(self.url, self.timeout)).total("coredns_cache_hits_total")
        except (FetchError, ValueError):
            self.dead = True
            return None


def lookup(ip: str, name: str, opts: Options, counter: CacheCounter, tcp: bool) -> LookupFacts:
    first = probe.query(ip, name, "udp", opts.dns_port, opts.timeout)
    cache = CacheProbe(first)
    if first.answered:
        before = counter.hits()
        second = probe.query(ip, name, "udp", opts.dns_port, opts.timeout)
        after = counter.hits() if before is not None else None
        cache = CacheProbe(
            first, second, after - before if before is not None and after is not None else None
        )
    tcp_result = probe.query(ip, name, "tcp", opts.dns_port, opts.timeout) if tcp else None
    return LookupFacts(ip, name, cache, tcp_result)


def run_checks(opts: Options) -> tuple[list[Check], list[str]]:
    """Every check, in the order an operator would look; plus notes about what was left out."""
    checks: list[Check] = []
    notes: list[str] = list(opts.notes)
    families = sorted({family_of(ip) for ip in opts.local_ips})

    links_holders, err = probe.safely(probe.read_links)
    ips = list(opts.local_ips)
    if links_holders is not None:
        links, holders = links_holders
        for ip in sorted(opts.ips_from_env):
            if "kube-ipvs0" in holders.get(ip, []) and opts.interface not in holders.get(ip, []):
                ips.remove(ip)
                notes.append(
                    f"{ip} ($KUBE_DNS_SERVICE_HOST) is on kube-ipvs0: kube-proxy runs in IPVS mode, where only "
                    "the link-local IP can be the cache's address; not checked"
                )
        checks.append(check_interface(opts.interface, ips, links.get(opts.interface), holders))
    else:
        checks.append(_failed("interface", f"interface {opts.interface}", err))

    local_table, err = probe.safely(lambda: probe.read_routes(255, families))
    checks.append(
        check_local_routes(opts.interface, ips, local_table)
        if local_table is not None
        else _failed("local-routes", "local routes", err)
    )
    policy, err = probe.safely(lambda: probe.read_policy(families))
    checks.append(
        check_policy_routing(ips, policy, opts.interface, opts.dns_port)
        if isinstance(policy, PolicyFacts)
        else _failed("policy-routing", "policy routing", err)
    )

    desired = desired_rules(ips, opts.dns_port, _health_port(opts.health))
    ruleset, err = probe.safely(lambda: probe.read_rulesets(families))
    if isinstance(ruleset, RulesetFacts):
        checks += [check_rules(desired, ruleset), check_duplicates(desired, ruleset)]
    else:
        checks += [_failed("rules", "NOTRACK/ACCEPT rules", err)]

    sockets, err = probe.safely(probe.read_sockets)
    checks.append(
        check_listeners(ips, opts.dns_port, sockets)
        if sockets is not None
        else _failed("listeners", "listeners", err)
    )

    counter = CacheCounter(opts.metrics, opts.timeout)
    cluster = [lookup(ip, opts.cluster_name, opts, counter, tcp=True) for ip in ips]
    checks.append(check_lookups("dns-cluster", "cluster name lookup", cluster, cluster=True))
    if opts.external_name:
        external = [lookup(ip, opts.external_name, opts, counter, tcp=False) for ip in ips]
        checks.append(check_lookups("dns-external", "external name lookup", external, cluster=False))

    checks.append(check_conntrack([probe.conntrack_probe(ip, opts.dns_port) for ip in ips]))

    for check_id, url, expect in (
        ("health", opts.health, "OK"),
        ("ready", opts.ready, ""),
        ("metrics", opts.metrics, "coredns_"),
    ):
        if url:
            result = probe.http_probe(url, opts.timeout)
            title = {"health": "/health", "ready": "/ready", "metrics": "/metrics"}[check_id]
            checks.append(check_http(check_id, title, result, check_id in opts.explicit, expect))
    return checks, notes


# ---------------------------------------------------------------- output

_MARK = {"ok": "[green]✔ ok[/]", "warn": "[yellow]! warn[/]", "fail": "[bold red]✘ fail[/]"}


def render_table(checks: Sequence[Check], notes: Sequence[str], ips: Sequence[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(title=f"nodelocaldns doctor: {', '.join(ips)}", title_justify="left", show_lines=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for c in checks:
        table.add_row(_MARK[c.status], escape(c.title), escape(c.detail))
    console.print(table)
    for note in notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    todo = [c for c in checks if c.status != "ok" and c.hint]
    if todo:
        console.print()
        console.print("[bold]How to fix[/]")
        for c in todo:
            console.print(f"{_MARK[c.status]} [bold]{escape(c.title)}[/]: {escape(c.hint)}")
    overall = worst(c.status for c in checks)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    console.print(f"\n{_MARK[overall]}  {len(checks)} checks, {failed} failed, {warned} warning(s)")


def main(argv: list[str]) -> int:
    try:
        opts = parse_options(argv, os.environ)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return int(e.code or 0)
    checks, notes = run_checks(opts)
    overall = worst(c.status for c in checks)
    if opts.json:
        doc = {
            "status": overall,
            "local_ips": opts.local_ips,
            "notes": notes,
            "checks": [c.as_dict() for c in checks],
        }
        print(json.dumps(doc, indent=2))
    else:
        render_table(checks, notes, opts.local_ips)
    return 1 if overall == "fail" else 0

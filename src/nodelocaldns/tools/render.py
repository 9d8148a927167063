"""``nodelocaldns render``: print the manifests for one cluster, without kubectl or sed.

With no values given the output holds the same objects as ``kubectl kustomize
deploy/overlays/<mode>`` (not the same text): the agent fills the placeholders on each node. Values given (or found with ``--discover``)
are written in, as the upstream ``sed`` recipe would. ``--standalone`` prints a second,
independent DNS instead (a Deployment and a Service) plus the pod ``dnsConfig`` that uses it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError
from nodelocaldns.tools import checks, manifests, scrape, standalone, yamlout
from nodelocaldns.tools import discover as disc
from nodelocaldns.tools.corefiles import MODES, AnswerSettings, CacheSettings, UpstreamSettings

PROG = "nodelocaldns render"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Print the Kubernetes manifests of a nodelocaldns install.",
        epilog="Values left out stay placeholders that the agent fills on each node.",
    )
    c = p.add_argument_group("cluster")
    c.add_argument("--mode", choices=MODES, help="how Services work on nodes (default: iptables)")
    c.add_argument("--discover", action="store_true", help="read the kube-dns IP and the mode with kubectl")
    c.add_argument("--kubectl", default="kubectl", metavar="PATH", help="kubectl binary for --discover")
    c.add_argument("--context", help="kubeconfig context for --discover")
    c.add_argument("--dns-server", metavar="IP", help="kube-dns ClusterIP (default: found by the agent)")
    c.add_argument(
        "--local-ip", metavar="IP", help=f"node-local address (default {manifests.DEFAULT_LOCAL_IP})"
    )
    c.add_argument(
        "--redundant",
        action="store_true",
        help="two agents per node, both serving the local IPs: losing one loses no query",
    )
    c.add_argument(
        "--no-sysctl-init",
        dest="sysctl_init",
        action="store_false",
        help="no privileged init container setting net.ipv4.tcp_migrate_req=1 on the node "
        "(for policies that forbid privileged containers; set it on the node instead)",
    )
    c.add_argument("--domain", help=f"cluster domain (default: the agent's, {manifests.DEFAULT_DOMAIN})")
    c.add_argument("--image", default=manifests.DEFAULT_IMAGE, help="container image (default %(default)s)")
    c.add_argument(
        "--namespace",
        default=manifests.DEFAULT_NAMESPACE,
        help="namespace of kube-dns and of every object (default %(default)s)",
    )
    k = p.add_argument_group("cache (every server block)")
    k.add_argument("--success-ttl", type=int, metavar="SECONDS", help="max TTL of positive answers")
    k.add_argument("--denial-ttl", type=int, metavar="SECONDS", help="max TTL of NXDOMAIN/NODATA answers")
    k.add_argument("--cache-size", type=int, metavar="ENTRIES", help="entries per kind per block")
    k.add_argument("--prefetch", metavar="'AMOUNT [DURATION [PCT%]]'", help="cache prefetch arguments")
    k.add_argument(
        "--serve-stale", metavar="'DURATION [immediate|verify]'", help="cache serve_stale arguments"
    )
    u = p.add_argument_group("upstream (the '.' block)")
    u.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="SERVER",
        help="forward here instead of the node's /etc/resolv.conf (repeatable, or comma-separated)",
    )
    proto = u.add_mutually_exclusive_group()
    proto.add_argument("--force-tcp", action="store_true", help="always use TCP to the upstream servers")
    proto.add_argument("--prefer-udp", action="store_true", help="UDP even for queries that came over TCP")
    a = p.add_argument_group("answers the cache gives itself")
    a.add_argument(
        "--no-ipv6-lookups",
        action="store_true",
        help="answer every AAAA query NOERROR with no records (the Helm chart's noIPv6Lookups)",
    )
    a.add_argument(
        "--hosts-entry",
        action="append",
        default=[],
        metavar="'IP NAME...'",
        help="serve NAME... as IP from a hosts block that falls through for other names (repeatable)",
    )
    s = p.add_argument_group("standalone DNS (instead of the node cache)")
    s.add_argument("--standalone", metavar="NAME", help="render a separate DNS Deployment named NAME")
    s.add_argument("--service-ip", metavar="IP", help="its fixed ClusterIP (required with --standalone)")
    s.add_argument("--replicas", type=int, default=2, help="its replicas (default %(default)s)")
    s.add_argument(
        "--client-namespace",
        default="default",
        help="namespace of the pods that will use it, for their search list (default %(default)s)",
    )
    p.add_argument(
        "--service-monitor",
        action="store_true",
        help="add a Prometheus Operator ServiceMonitor for both metrics ports (9253 and 9353)",
    )
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    return p


def _cache(args: argparse.Namespace) -> CacheSettings:
    return CacheSettings(
        success_ttl=args.success_ttl,
        denial_ttl=args.denial_ttl,
        size=args.cache_size,
        prefetch=tuple(args.prefetch.split()) if args.prefetch else (),
        serve_stale=tuple(args.serve_stale.split()) if args.serve_stale else (),
    )


def _upstream(args: argparse.Namespace) -> UpstreamSettings:
    servers = tuple(s for value in args.upstream for s in re.split(r"[,\s]+", value) if s)
    transport = "force_tcp" if args.force_tcp else "prefer_udp" if args.prefer_udp else None
    return UpstreamSettings(servers=servers, transport=transport)


def _check_combinations(args: argparse.Namespace) -> None:
    if args.standalone is None:
        for flag, value in (
            ("--service-ip", args.service_ip),
            ("--replicas", args.replicas != 2),
            ("--client-namespace", args.client_namespace != "default"),
        ):
            if value:
                raise ConfigError(f"{flag} only applies with --standalone")
        return
    if args.service_ip is None:
        raise ConfigError("--standalone needs --service-ip: the fixed ClusterIP pods will use")
    for flag, value in (
        ("--mode", args.mode),
        ("--local-ip", args.local_ip),
        ("--redundant", args.redundant or None),
        ("--no-sysctl-init", None if args.sysctl_init else True),
    ):
        if value is not None:
            raise ConfigError(f"{flag} does not apply to --standalone")


def _header(argv: Sequence[str]) -> str:
    return f"nodelocaldns {__version__}: {shlex.join([*PROG.split(), *argv])}"


def _write(objs: list[dict[str, Any]], fmt: str, comment: str, trailer: str, out: TextIO) -> None:
    problems = checks.lint(list(objs))
    if problems:
        # Only reachable through a bug here; better no output than objects that do not fit.
        raise ConfigError("rendered objects do not fit together: " + "; ".join(problems))
    if fmt == "json":
        out.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2) + "\n")
        return
    out.write(yamlout.dump_all(objs, comment))
    if trailer:
        out.write("".join(f"# {line}".rstrip() + "\n" for line in trailer.splitlines()))


def _with_monitor(objs: list[dict[str, Any]], wanted: bool) -> list[dict[str, Any]]:
    if not wanted:
        return objs
    # The Service that selects our own pods and carries the metrics ports (not kube-dns-upstream).
    (svc,) = [
        o for o in objs if o["kind"] == "Service" and any(p["name"] == "metrics" for p in o["spec"]["ports"])
    ]
    return [*objs, scrape.service_monitor(svc)]


def _render(args: argparse.Namespace, argv: Sequence[str], out: TextIO, err: TextIO) -> None:
    _check_combinations(args)
    dns_server, mode = args.dns_server, args.mode
    if args.discover:
        global_args = ("--context", args.context) if args.context else ()
        kubectl = disc.Kubectl(args.kubectl, global_args)
        facts = disc.discover(kubectl, args.namespace, want_mode=args.standalone is None and mode is None)
        for note in facts.notes:
            err.write(f"{PROG}: {note}\n")
        dns_server = dns_server or facts.dns_server
        mode = mode or facts.mode
    cache, upstream = _cache(args), _upstream(args)
    answers = AnswerSettings(no_ipv6_lookups=args.no_ipv6_lookups, hosts_entries=tuple(args.hosts_entry))
    if args.standalone is not None:
        if dns_server is None:
            raise ConfigError("--standalone needs --dns-server (or --discover): it forwards there")
        spec = standalone.Standalone(
            name=args.standalone,
            service_ip=args.service_ip,
            dns_server=dns_server,
            domain=args.domain or manifests.DEFAULT_DOMAIN,
            namespace=args.namespace,
            image=args.image,
            replicas=args.replicas,
            client_namespace=args.client_namespace,
            cache=cache,
            upstream=upstream,
            answers=answers,
        )
        objs = _with_monitor(standalone.standalone_objects(spec), args.service_monitor)
        snippet = yamlout.dump(standalone.pod_dns_config(spec))
        trailer = "Send a pod's lookups to this DNS with these pod spec fields:\n" + "".join(
            f"  {line}\n" for line in snippet.splitlines()
        )
        _write(objs, args.output, _header(argv), trailer, out)
        return
    opts = manifests.Options(
        mode=mode or "iptables",
        dns_server=dns_server,
        local_ip=args.local_ip,
        domain=args.domain,
        image=args.image,
        namespace=args.namespace,
        cache=cache,
        upstream=upstream,
        answers=answers,
        redundant=args.redundant,
        sysctl_init=args.sysctl_init,
    )
    _write(_with_monitor(manifests.objects(opts), args.service_monitor), args.output, _header(argv), "", out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point for ``nodelocaldns render``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        _render(args, argv, out, err)
    except ConfigError as e:
        err.write(f"{PROG}: error: {e}\n")
        return 2
    except disc.DiscoveryError as e:
        err.write(f"{PROG}: error: {e}\n")
        return 1
    return 0

"""node-cache's command line, parsed the way Go's ``flag`` package does.

Existing DaemonSets pass node-cache flags (``-localip 169.254.20.10,10.0.0.10 -conf /etc/Corefile ...``)
and must keep working unchanged, so the grammar is Go's: ``-flag value``, ``-flag=value``, ``--flag``,
a bare boolean never takes the next argument, ``--`` or the first non-flag argument ends the flags.
Every flag can also come from ``NODELOCALDNS_<FLAG>`` (upper case, ``-`` and ``.`` as ``_``); a flag on
the command line wins over the environment, and an empty variable counts as unset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import InvalidOperation
from typing import Literal

from nodelocaldns.core.hostport import parse_port
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.backend import RULES_BACKENDS, RulesBackendChoice
from nodelocaldns.node.flagvalues import (
    check_cluster_domain,
    check_interface_name,
    check_listen_address,
    check_upstream_svc,
    parse_go_bool,
    parse_local_ips,
    parse_sync_interval,
)
from nodelocaldns.node.kubednscm import IPAddress

_BACKEND_BY_NAME: dict[str, RulesBackendChoice] = {b: b for b in RULES_BACKENDS}

ENV_PREFIX = "NODELOCALDNS_"
DEFAULT_KUBEDNS_CM_PATH = "/etc/kube-dns"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


class HelpRequested(Exception):
    """``-h``/``-help`` was given; ``usage`` is the text to print (Go prints it and exits 0)."""

    def __init__(self, usage: str) -> None:
        self.usage = usage
        super().__init__("help requested")


@dataclass(frozen=True)
class NodeCacheParams:
    """Validated node-cache settings (``app.ConfigParams`` plus the CoreDNS flags it reads)."""

    local_ips: tuple[IPAddress, ...]
    """``-localip``: addresses to listen on, add to the interface and cover with rules. Unlike
    node-cache, IPv4 and IPv6 may be mixed (dual-stack in one process). Empty only with -version/-plugins."""
    interface_name: str = "nodelocaldns"
    """``-interfacename``: the link that holds the local IPs."""
    setup_interface: bool = True
    """``-setupinterface``: create and keep the interface (false when another agent owns it, e.g. Cilium)."""
    setup_iptables: bool = True
    """``-setupiptables``: install, re-check and remove the NOTRACK/ACCEPT rules (iptables or nftables)."""
    skip_teardown: bool = False
    """``-skipteardown``: leave rules and interface in place on exit (HA/second-DaemonSet setups)."""
    sync_interval: float = 60.0
    """``-syncinterval`` in seconds: how often rules and interface are re-checked."""
    upstream_svc: str = "kube-dns"
    """``-upstreamsvc``: Service whose ``$<NAME>_SERVICE_HOST`` fills ``__PILLAR__CLUSTER__DNS__``."""
    base_corefile: str = "/etc/coredns/Corefile.base"
    """``-basecorefile``: the template; its directory is watched for changes."""
    corefile: str = "/etc/Corefile"
    """Where the rendered Corefile is written and served from: ``-conf`` if given, else ``-corefile``."""
    kubedns_cm: str | None = None
    """``-kubednscm``: kube-dns ConfigMap mount; ``/etc/kube-dns`` if unset and present; None skips it."""
    health_port: int = 8080
    """``-health-port``: only used for the NOTRACK rules of the liveness probe traffic."""
    metrics_listen_address: str = "0.0.0.0:9353"
    """``-metrics-listen-address``: ``host:port`` of the setup-errors metrics listener."""
    prometheus_listen_address: str = ":9253"
    """``-prometheus-listen-address`` (node-local-dns master): fills ``__PROMETHEUS__ENDPOINT__``."""
    pidfile: str | None = None
    """``-pidfile``: written once all servers listen; rules are installed when it appears."""
    reload_with_signal: bool = False
    """``-reloadwithsignal``: reload via SIGUSR1 to self after rewriting the Corefile."""
    dns_port: int = 53
    """``-dns.port``/``-p``: port of the rules and of generated stub-domain blocks."""
    rules_backend: RulesBackendChoice = "auto"
    """``-rules-backend``: ``iptables``, ``nftables``, or ``auto`` (follow what the node already uses)."""
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    """``-cluster-domain``: fills ``__PILLAR__DNS__DOMAIN__``; default ``$CLUSTER_DOMAIN``, cluster.local."""
    quiet: bool = False
    """``-quiet``: CoreDNS's flag; suppress the startup banner."""
    version: bool = False
    """``-version``: print the version and exit; other flags are then not required to be valid."""
    plugins: bool = False
    """``-plugins``: list the available plugins and exit (CoreDNS flag, accepted by node-cache)."""
    runtime_dir: str = "/run/nodelocaldns"
    """``-runtimedir`` (ours): where agents find their peers (node/peers.py); "" turns that off."""
    check: bool = False
    """``-check`` (ours): render and check the Corefile as start-up would, print the verdict, exit."""

    @property
    def local_ip_list(self) -> str:
        """The local IPs space-separated, as ``bind`` and node-cache's substitution want them."""
        return " ".join(str(ip) for ip in self.local_ips)


FlagKind = Literal["string", "bool", "duration", "port"]


@dataclass(frozen=True)
class _Flag:
    name: str
    kind: FlagKind
    default: str
    help: str
    env: bool = True


_FLAGS: tuple[_Flag, ...] = (
    _Flag("localip", "string", "", "comma-separated string of ip addresses to bind dnscache to"),
    _Flag("setupinterface", "bool", "true", "indicates whether network interface should be setup"),
    _Flag("interfacename", "string", "nodelocaldns", "name of the interface to be created"),
    _Flag("syncinterval", "duration", "60", "interval to check for iptables rules (60, 60s, 1m; 30ns = 30s)"),
    _Flag("metrics-listen-address", "string", "0.0.0.0:9353", "address to serve metrics on"),
    _Flag("prometheus-listen-address", "string", ":9253", "address to serve Prometheus metrics on"),
    _Flag("setupiptables", "bool", "true", "indicates whether iptables rules should be setup"),
    _Flag(
        "basecorefile", "string", "/etc/coredns/Corefile.base", "Path to the template Corefile for node-cache"
    ),
    _Flag("corefile", "string", "/etc/Corefile", "Path to the Corefile to be used by node-cache"),
    _Flag("kubednscm", "string", "", "Path where the kube-dns configmap will be mounted"),
    _Flag("upstreamsvc", "string", "kube-dns", "Service name whose cluster IP is upstream for node-cache"),
    _Flag("health-port", "port", "8080", "port used by health plugin"),
    _Flag("skipteardown", "bool", "false", "indicates whether iptables rules should be torn down on exit"),
    _Flag("reloadwithsignal", "bool", "false", "use SIGUSR1 on self to reload CoreDNS"),
    _Flag("conf", "string", "", "Corefile to load (default: -corefile)"),
    _Flag("pidfile", "string", "", "Path to write pid file"),
    _Flag("dns.port", "port", "53", "Default port"),
    _Flag("p", "port", "53", "Default port (same as -dns.port)", env=False),
    _Flag("rules-backend", "string", "auto", "packet filter to program: auto, iptables or nftables"),
    _Flag(
        "cluster-domain", "string", "", "cluster domain for __PILLAR__DNS__DOMAIN__ (default $CLUSTER_DOMAIN)"
    ),
    _Flag(
        "runtimedir",
        "string",
        "/run/nodelocaldns",
        "directory shared by the agents of a node (handover); '' for none",
    ),
    _Flag("quiet", "bool", "false", "Quiet mode (no initialization output)"),
    _Flag("version", "bool", "false", "Show version", env=False),
    _Flag("plugins", "bool", "false", "List installed plugins", env=False),
    _Flag(
        "check",
        "bool",
        "false",
        "render the Corefile as at start-up, check it and exit (no node changes)",
        env=False,
    ),  # fmt: skip
)
_BY_NAME = {f.name: f for f in _FLAGS}


def env_name(flag: str) -> str:
    """The environment variable that sets ``flag``: ``health-port`` -> ``NODELOCALDNS_HEALTH_PORT``."""
    return ENV_PREFIX + re.sub(r"[-.]", "_", flag).upper()


def usage(prog: str = "node-cache") -> str:
    """Go ``flag.PrintDefaults``-style help text."""
    lines = [
        f"Usage of {prog}:",
        "Runs a CoreDNS-compatible nodelocal cache listening on the specified ip:port",
        "",
    ]
    for f in sorted(_FLAGS, key=lambda f: f.name):
        type_name = {"string": " string", "bool": "", "duration": " duration", "port": " int"}[f.kind]
        lines.append(f"  -{f.name}{type_name}")
        default = ""
        if f.default and f.default != "false":
            default = f" (default {f.default!r})" if f.kind == "string" else f" (default {f.default})"
        env = f" [env {env_name(f.name)}]" if f.env else ""
        lines.append(f"    \t{f.help}{default}{env}")
    return "\n".join(lines) + "\n"


def _check_value(f: _Flag, value: str) -> None:
    try:
        if f.kind == "duration":
            parse_sync_interval(value)
        elif f.kind == "port":
            parse_port(value)
    except (ValueError, InvalidOperation) as exc:
        raise ConfigError(f"invalid value {value!r} for flag -{f.name}: {exc}") from exc


def _scan_argv(argv: Sequence[str], prog: str) -> dict[str, str]:
    """Go ``FlagSet.Parse``: returns flag name -> raw value (booleans as "true"/"false")."""
    given: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        if arg == "--":
            args.pop(0)
            break
        name = arg[2:] if arg[1] == "-" else arg[1:]
        if not name or name[0] in "-=":
            raise ConfigError(f"bad flag syntax: {arg}")
        args.pop(0)
        name, has_value, value = name.partition("=")
        f = _BY_NAME.get(name)
        if f is None:
            if name in ("h", "help"):
                raise HelpRequested(usage(prog))
            raise ConfigError(f"flag provided but not defined: -{name}")
        if f.kind == "bool":
            if has_value:
                try:
                    value = "true" if parse_go_bool(value) else "false"
                except ValueError as exc:
                    raise ConfigError(f"invalid boolean value {value!r} for -{name}: parse error") from exc
            else:
                value = "true"
        elif not has_value:
            if not args:
                raise ConfigError(f"flag needs an argument: -{name}")
            value = args.pop(0)
        _check_value(f, value)
        # -p and -dns.port are one CoreDNS setting under two names; the last one given wins.
        given["dns.port" if name == "p" else name] = value
    if args:
        raise ConfigError(f"extra command line arguments: {args}")
    return given


def _from_env(env: Mapping[str, str], given: dict[str, str]) -> dict[str, str]:
    values = {f.name: f.default for f in _FLAGS if f.name != "p"}
    for f in _FLAGS:
        if not f.env or f.name in given:
            continue
        raw = env.get(env_name(f.name), "")
        if raw == "":
            continue
        if f.kind == "bool":
            try:
                raw = "true" if parse_go_bool(raw.strip()) else "false"
            except ValueError as exc:
                raise ConfigError(f"invalid boolean value {raw!r} in ${env_name(f.name)}") from exc
        try:
            _check_value(f, raw)
        except ConfigError as exc:
            raise ConfigError(f"${env_name(f.name)}: {exc}") from exc
        values[f.name] = raw
    values.update(given)
    return values


def parse_args(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    prog: str = "node-cache",
    path_exists: Callable[[str], bool] = os.path.exists,
) -> NodeCacheParams:
    """Parse a node-cache command line (without the program name) into validated NodeCacheParams.

    ``env`` defaults to ``os.environ``; ``path_exists`` decides whether the default kube-dns ConfigMap
    directory is used. Raises ConfigError for any invalid input, HelpRequested for ``-h``/``-help``.
    """
    environ = os.environ if env is None else env
    given = _scan_argv(argv, prog)
    values = _from_env(environ, given)

    version = values["version"] == "true"
    plugins = values["plugins"] == "true"
    if values["localip"].strip() == "" and (version or plugins):
        local_ips: tuple[IPAddress, ...] = ()
    else:
        local_ips = parse_local_ips(values["localip"], environ)

    corefile = values["conf"] or values["corefile"]
    if not corefile:
        raise ConfigError("no Corefile path: give -conf or -corefile")

    kubedns_cm: str | None = values["kubednscm"] or None
    if kubedns_cm is None and path_exists(DEFAULT_KUBEDNS_CM_PATH):
        kubedns_cm = DEFAULT_KUBEDNS_CM_PATH

    backend = _BACKEND_BY_NAME.get(values["rules-backend"])
    if backend is None:
        raise ConfigError(
            f"invalid -rules-backend {values['rules-backend']!r}: want one of {', '.join(RULES_BACKENDS)}"
        )

    cluster_domain = values["cluster-domain"] or environ.get("CLUSTER_DOMAIN", "") or DEFAULT_CLUSTER_DOMAIN
    if not values["basecorefile"]:
        raise ConfigError("-basecorefile must not be empty")

    return NodeCacheParams(
        local_ips=local_ips,
        interface_name=check_interface_name(values["interfacename"]),
        setup_interface=values["setupinterface"] == "true",
        setup_iptables=values["setupiptables"] == "true",
        skip_teardown=values["skipteardown"] == "true",
        sync_interval=parse_sync_interval(values["syncinterval"]),
        upstream_svc=check_upstream_svc(values["upstreamsvc"]),
        base_corefile=values["basecorefile"],
        corefile=corefile,
        kubedns_cm=kubedns_cm,
        health_port=parse_port(values["health-port"]),
        metrics_listen_address=check_listen_address(values["metrics-listen-address"]),
        prometheus_listen_address=check_listen_address(values["prometheus-listen-address"], "prometheus"),
        pidfile=values["pidfile"] or None,
        reload_with_signal=values["reloadwithsignal"] == "true",
        dns_port=parse_port(values["dns.port"]),
        rules_backend=backend,
        cluster_domain=check_cluster_domain(cluster_domain),
        quiet=values["quiet"] == "true",
        runtime_dir=values["runtimedir"],
        version=version,
        plugins=plugins,
        check=values["check"] == "true",
    )

"""``node-cache``: the k8s-dns-node-cache command line, in front of :class:`NodeAgent`.

Exit codes: 0 after a clean shutdown (and for ``-h``, ``-version``, ``-plugins``), 2 for a flag error
(Go's ``flag`` convention), 1 for anything that stops the agent: a missing capability, no usable
Corefile at start-up, a listener that cannot bind, a forwarding loop.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError, SetupError
from nodelocaldns.node.flags import HelpRequested, env_name, parse_args
from nodelocaldns.node.lifecycle import AgentOptions, NodeAgent
from nodelocaldns.node.privileges import require_net_admin
from nodelocaldns.node.render import DNS_SERVER, KUBE_DNS_SERVICE_HOST_ENV
from nodelocaldns.server.process import run_async, setup_logging

log = logging.getLogger("nodelocaldns.node")

WATCH_INTERVAL_ENV = "NODELOCALDNS_WATCH_INTERVAL"
"""Seconds between polls of the mounted ConfigMap directories (default 10, node-cache's period)."""

_LOCALIP_FLAGS = ("-localip", "--localip")


def _fill_dns_server(value: str, env: Mapping[str, str]) -> str:
    if DNS_SERVER not in value:
        return value
    ip = env.get(KUBE_DNS_SERVICE_HOST_ENV, "").strip()
    if not ip:
        raise ConfigError(
            f"-localip contains {DNS_SERVER} but ${KUBE_DNS_SERVICE_HOST_ENV} is not set: the kube-dns"
            " Service must exist before the pod is created (and enableServiceLinks must not be false),"
            " or put the kube-dns ClusterIP in -localip yourself"
        )
    return value.replace(DNS_SERVER, ip)


def resolve_localip(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Fill ``__PILLAR__DNS__SERVER__`` in ``-localip`` (argument or environment) from
    ``$KUBE_DNS_SERVICE_HOST``, so the manifests need no ``sed`` for it either."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in _LOCALIP_FLAGS and i + 1 < len(argv):
            out += [arg, _fill_dns_server(argv[i + 1], env)]
            i += 2
            continue
        flag, eq, value = arg.partition("=")
        out.append(f"{flag}={_fill_dns_server(value, env)}" if eq and flag in _LOCALIP_FLAGS else arg)
        i += 1
    new_env = dict(env)
    key = env_name("localip")
    if key in new_env:
        new_env[key] = _fill_dns_server(new_env[key], env)
    return out, new_env


def version_text() -> str:
    """CoreDNS's ``-version`` shape: name-version, then platform and runtime."""
    return (
        f"nodelocaldns-{__version__}\n"
        f"{sys.platform}/{platform.machine()}, python{platform.python_version()}, node-cache drop-in"
    )


def plugins_text() -> str:
    """CoreDNS's ``-plugins`` listing, with the directives this server implements."""
    from nodelocaldns.server.config import DIRECTIVES

    lines = ["Server types:", "  dns", "", "Caddyfile loaders:", "  flag", "  default", "", "Other plugins:"]
    lines += [f"  dns.{name}" for name in sorted(DIRECTIVES)]
    return "\n".join(lines)


def watch_interval(env: Mapping[str, str]) -> float:
    raw = env.get(WATCH_INTERVAL_ENV, "").strip().removesuffix("s")
    if not raw:
        return AgentOptions.watch_interval
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"${WATCH_INTERVAL_ENV}={env[WATCH_INTERVAL_ENV]!r}: want seconds in (0, 3600]")
    return value


def main(argv: list[str]) -> int:
    """Run the agent with node-cache's command line (without the program name); return the exit code."""
    environ = dict(os.environ)
    try:
        argv, environ = resolve_localip(argv, environ)
        params = parse_args(argv, environ)
        interval = watch_interval(environ)
    except HelpRequested as exc:
        sys.stderr.write(exc.usage)
        return 0
    except ConfigError as exc:
        print(f"node-cache: {exc}", file=sys.stderr)
        print("Run 'node-cache -h' for the list of flags.", file=sys.stderr)
        return 2
    if params.version:
        print(version_text())
        return 0
    if params.plugins:
        print(plugins_text())
        return 0
    if params.check:
        from nodelocaldns.node.check import check_startup
        from nodelocaldns.server.check import print_check

        return print_check(check_startup(params, environ))

    setup_logging()
    log.info("Starting node-cache image: %s", __version__)
    if params.setup_interface or params.setup_iptables:
        try:
            require_net_admin()
        except SetupError as exc:
            log.error("%s", exc)
            return 1

    agent = NodeAgent(params, environ, AgentOptions(watch_interval=interval))
    return run_async(agent.run)

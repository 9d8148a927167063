"""Corefile template rendering: node-cache's ``updateCorefile``, as a pure function.

Template text, parameters, the kube-dns ConfigMap and an environment go in; the Corefile text comes
out. The steps and their order are node-cache's (stub-domain blocks, upstream servers with the exact
``force_tcp`` block swap, cluster DNS IP, local IPs, blanking ``__PILLAR__DNS__SERVER__``). Where
node-cache writes a broken Corefile this raises ConfigError instead, so the caller keeps the last good
one. Additions that make the admin's ``sed`` step optional:

* ``__PILLAR__DNS__DOMAIN__`` becomes the cluster domain;
* ``__PILLAR__DNS__SERVER__`` becomes ``$KUBE_DNS_SERVICE_HOST`` when that address is one of the local IPs
  (else blank, as node-cache does);
* an IP placeholder in ``host:port`` position (``health __PILLAR__LOCAL__DNS__:8080``) or in brackets
  becomes the first address in host form (``[fd00::10]:8080``); one listener takes one address;
* ``bind`` lines that held placeholders lose duplicate addresses and stray spaces, so
  ``bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__`` with the kube-dns IP among the local IPs does
  not bind it twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from nodelocaldns.core.hostport import split_host_port
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.kubednscm import IPAddress, KubeDNSConfig, join_host, parse_ip

UPSTREAM_SERVERS = "__PILLAR__UPSTREAM__SERVERS__"
CLUSTER_DNS = "__PILLAR__CLUSTER__DNS__"
LOCAL_DNS = "__PILLAR__LOCAL__DNS__"
DNS_SERVER = "__PILLAR__DNS__SERVER__"
DNS_DOMAIN = "__PILLAR__DNS__DOMAIN__"
PROMETHEUS_ENDPOINT = "__PROMETHEUS__ENDPOINT__"  # kubernetes-sigs/node-local-dns master

DEFAULT_UPSTREAM = "/etc/resolv.conf"
KUBE_DNS_SERVICE_HOST_ENV = "KUBE_DNS_SERVICE_HOST"
STUB_CACHE_TTL = 30

# Byte-exact copies of node-cache's constants: the swap only happens on this exact text.
UPSTREAM_TCP_BLOCK = "\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n"
UPSTREAM_UDP_BLOCK = "\n    forward . __PILLAR__UPSTREAM__SERVERS__\n"
STUB_DOMAIN_BLOCK = (
    "\n{domain}:{port} {{\n    errors\n    cache {ttl}\n    bind {local_ips}\n    forward . {servers}\n}}\n"
)

NO_TCP_BLOCK_WARNING = "Did not find TCP upstream block to replace, assuming upstreams already use UDP."

# __PROMETHEUS__ENDPOINT__ is the successor repo's (kubernetes-sigs/node-local-dns) placeholder.
_LEFTOVER = re.compile(r"__(?:PILLAR|PROMETHEUS)__[A-Z0-9_]*[A-Z0-9]__")
_FORWARD_TRANSPORTS = ("tls://", "dns://", "quic://", "grpc://", "https3://", "https://", "unix://")


@dataclass(frozen=True)
class RenderResult:
    """A rendered Corefile and what node-cache logs about it."""

    text: str
    """The Corefile: the rendered template followed by the generated stub-domain blocks."""
    stub_domains: int
    """How many stub-domain blocks were appended."""
    upstream_servers: str
    """What ``__PILLAR__UPSTREAM__SERVERS__`` became: ``/etc/resolv.conf`` or the ConfigMap's servers."""
    warnings: tuple[str, ...] = ()
    """Things worth a log line that did not stop rendering (node-cache's UDP fallback, stray tokens)."""

    @property
    def summary(self) -> str:
        """node-cache's log line, word for word."""
        return (
            f"Updated Corefile with {self.stub_domains} custom stubdomains "
            f"and upstream servers {self.upstream_servers}"
        )


def service_env_name(service: str) -> str:
    """node-cache's ``toSvcEnv`` minus ``$``: ``kube-dns-upstream`` -> ``KUBE_DNS_UPSTREAM_SERVICE_HOST``."""
    return service.replace("-", "_").upper() + "_SERVICE_HOST"


def _split_transport(server: str) -> tuple[str, str]:
    for prefix in _FORWARD_TRANSPORTS:
        if server.startswith(prefix):
            return prefix[:-3], server[len(prefix) :]
    return "dns", server


def _strip_zone(host: str) -> str:
    return host[: host.rfind("%")] if "%" in host else host


def _check_forward_server(server: str, file_exists: Callable[[str], bool]) -> None:
    """CoreDNS ``parse.HostPortOrFile`` for one server, restricted to dns/tls like node-cache."""
    transport, host = _split_transport(server)
    if not host:
        raise ValueError(f"invalid address: {server!r}")
    if transport not in ("dns", "tls"):
        raise ValueError(f"unsupported transport {transport} of nameserver {server}")
    try:
        addr, port = split_host_port(host)
    except ValueError:
        if parse_ip(_strip_zone(host)) is None and not file_exists(host):
            raise ValueError(f"not an IP address or file: {host!r}") from None
        return
    if parse_ip(_strip_zone(addr)) is None:
        if file_exists(host):
            return
        raise ValueError(f"not an IP address or file: {host!r}")
    # HostPortOrFile does not look at the port; forward would reject the whole Corefile later.
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"invalid port in {server!r}")


def validate_forward_proxy(nameservers: Sequence[str], file_exists: Callable[[str], bool]) -> None:
    """Raise ValueError unless every nameserver is usable by the ``forward`` plugin."""
    for server in nameservers:
        _check_forward_server(server, file_exists)


def validate_node_local_cache_config(
    config: KubeDNSConfig, file_exists: Callable[[str], bool] = os.path.isfile
) -> None:
    """kube-dns ``ValidateNodeLocalCacheConfig``: the ConfigMap can be compiled into a Corefile."""
    for stub in config.stub_domains:
        if not stub.nameservers:
            # node-cache would emit "forward . " and CoreDNS would then refuse the whole Corefile.
            raise ConfigError(f"stub domain {stub.domain} has no nameservers")
        try:
            validate_forward_proxy(stub.nameservers, file_exists)
        except ValueError as exc:
            raise ConfigError(
                f"invalid nameservers {list(stub.nameservers)} for the stub domain {stub.domain}: {exc}"
            ) from exc
    try:
        validate_forward_proxy(config.upstream_nameservers, file_exists)
    except ValueError as exc:
        raise ConfigError(f"invalid upstream nameservers {list(config.upstream_nameservers)}: {exc}") from exc


def stub_domain_blocks(config: KubeDNSConfig, local_ips: Sequence[IPAddress], port: int) -> str:
    """One server block per stub domain, node-cache's text/template layout, in domain order."""
    local = " ".join(str(ip) for ip in local_ips)
    return "".join(
        STUB_DOMAIN_BLOCK.format(
            domain=stub.domain,
            port=port,
            ttl=STUB_CACHE_TTL,
            local_ips=local,
            servers=" ".join(stub.nameservers),
        )
        for stub in config.stub_domains
    )


def _fill_ip_token(line: str, token: str, ips: Sequence[IPAddress]) -> str:
    if token not in line:
        return line
    host = join_host(ips[0]) if ips else ""
    line = re.sub(rf"\[{token}\]|{token}(?=:)", lambda _: host, line)
    return line.replace(token, " ".join(str(ip) for ip in ips))


def _tidy_bind(line: str) -> str:
    body = line.rstrip("\r\n")
    words = body.split()
    if not words or words[0] != "bind":
        return line
    ending = line[len(body) :]
    indent = body[: len(body) - len(body.lstrip())]
    args: list[str] = []
    rest: list[str] = []
    for word in words[1:]:
        if rest or word == "{":
            rest.append(word)
        elif word not in args:
            args.append(word)
    return indent + " ".join(["bind", *args, *rest]) + ending


def _env_ip(env: Mapping[str, str], name: str, purpose: str) -> IPAddress | None:
    raw = env.get(name, "")
    if raw == "":
        return None
    ip = parse_ip(raw.strip())
    if ip is None:
        raise ConfigError(f"${name}={raw!r} is not an IP address, cannot fill {purpose}")
    return ip


def _cluster_dns_ip(env: Mapping[str, str], service: str) -> IPAddress:
    name = service_env_name(service)
    ip = _env_ip(env, name, CLUSTER_DNS)
    if ip is None:
        raise ConfigError(
            f"cannot fill {CLUSTER_DNS}: ${name} is not set; the Service {service!r} must exist before "
            f"the pod is created and enableServiceLinks must not be false (-upstreamsvc {service})"
        )
    return ip


def _substitute_upstreams(text: str, upstreams: Sequence[str], warnings: list[str]) -> tuple[str, str]:
    if not upstreams:
        return text.replace(UPSTREAM_SERVERS, DEFAULT_UPSTREAM), DEFAULT_UPSTREAM
    servers = " ".join(upstreams)
    # Custom upstreams are often UDP-only resolvers, so node-cache drops force_tcp for them.
    text = text.replace(UPSTREAM_TCP_BLOCK, UPSTREAM_UDP_BLOCK.replace(UPSTREAM_SERVERS, servers))
    if UPSTREAM_SERVERS in text:
        warnings.append(NO_TCP_BLOCK_WARNING)
        text = text.replace(UPSTREAM_SERVERS, servers)
    return text, servers


def _substitute_lines(
    lines: Iterable[str], ip_tokens: Mapping[str, Sequence[IPAddress]], domain: str
) -> Iterable[str]:
    for line in lines:
        if "__PILLAR__" not in line:
            yield line
            continue
        for token, ips in ip_tokens.items():
            line = _fill_ip_token(line, token, ips)
        yield _tidy_bind(line.replace(DNS_DOMAIN, domain))


def render_corefile(
    template: str,
    params: NodeCacheParams,
    kubedns: KubeDNSConfig | None = None,
    env: Mapping[str, str] | None = None,
    *,
    file_exists: Callable[[str], bool] = os.path.isfile,
) -> RenderResult:
    """Render ``template`` (the ``-basecorefile`` text) into a Corefile.

    ``env`` (default ``os.environ``) supplies ``$<UPSTREAMSVC>_SERVICE_HOST`` and
    ``$KUBE_DNS_SERVICE_HOST``; ``file_exists`` decides whether a nameserver that is not an address is an
    acceptable resolv.conf-style file. Raises ConfigError when the result would not be a usable Corefile.
    """
    environ = os.environ if env is None else env
    config = kubedns if kubedns is not None else KubeDNSConfig()
    validate_node_local_cache_config(config, file_exists)
    warnings: list[str] = []

    stubs = stub_domain_blocks(config, params.local_ips, params.dns_port)
    text, upstream_servers = _substitute_upstreams(template, config.upstream_nameservers, warnings)

    ip_tokens: dict[str, Sequence[IPAddress]] = {LOCAL_DNS: params.local_ips}
    if CLUSTER_DNS in text:
        ip_tokens[CLUSTER_DNS] = (_cluster_dns_ip(environ, params.upstream_svc),)
    if DNS_SERVER in text:
        # Only an address this agent listens on may be filled in: kubelet injects $KUBE_DNS_SERVICE_HOST
        # into every pod, and binding the ClusterIP when -localip left it out (IPVS mode, or link-local
        # only) would either fail ("cannot assign requested address") or change node-cache's behaviour.
        kube_dns = _env_ip(environ, KUBE_DNS_SERVICE_HOST_ENV, DNS_SERVER)
        ip_tokens[DNS_SERVER] = (kube_dns,) if kube_dns in params.local_ips else ()

    text = "".join(_substitute_lines(text.splitlines(keepends=True), ip_tokens, params.cluster_domain))
    # Last, and in the template only (not the stub-domain blocks), as node-local-dns does.
    text = text.replace(PROMETHEUS_ENDPOINT, params.prometheus_listen_address)
    leftover = sorted(set(_LEFTOVER.findall(text)))
    if leftover:
        warnings.append(f"unknown placeholders left in the Corefile: {', '.join(leftover)}")
    return RenderResult(
        text=text + stubs,
        stub_domains=len(config.stub_domains),
        upstream_servers=upstream_servers,
        warnings=tuple(warnings),
    )

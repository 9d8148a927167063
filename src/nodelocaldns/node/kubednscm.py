"""The legacy kube-dns ConfigMap (``stubDomains``, ``upstreamNameservers``, ``federations``).

node-cache merges this ConfigMap (not the CoreDNS one) into the rendered Corefile. kubelet mounts it as a
directory with one file per key; the parsing and validation here follow kube-dns
(``pkg/dns/config/sync.go`` ``processUpdate`` and ``config.go`` ``Validate``) so a ConfigMap that kube-dns
would reject is rejected here too. The small Go-compatible address helpers live here because both this
module and :mod:`nodelocaldns.node.render` validate nameservers with them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nodelocaldns.core.hostport import split_host_port
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.watch import DirectoryState, scan_directory

STUB_DOMAINS_KEY = "stubDomains"
UPSTREAM_NAMESERVERS_KEY = "upstreamNameservers"
FEDERATIONS_KEY = "federations"

# kube-dns refuses more upstreams than a resolv.conf may hold (glibc MAXNS).
MAX_UPSTREAM_NAMESERVERS = 3

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_dns1123_label(value: str) -> bool:
    """Kubernetes ``validation.IsDNS1123Label``: lowercase, at most 63 characters."""
    return len(value) <= 63 and _DNS1123_LABEL_RE.match(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Kubernetes ``validation.IsDNS1123Subdomain``: lowercase labels, at most 253 characters in total.

    Like Kubernetes, a trailing dot is invalid and single labels are not length-checked.
    """
    return len(value) <= 253 and _DNS1123_SUBDOMAIN_RE.match(value) is not None


def parse_ip(value: str) -> IPAddress | None:
    """Go's ``net.ParseIP``: a bare IPv4 or IPv6 address, no zone, no brackets, no whitespace."""
    if not value or "%" in value or value.strip() != value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def join_host(ip: IPAddress) -> str:
    """The host part of a ``host:port`` string: IPv6 gets brackets, as Go's ``net.JoinHostPort`` does."""
    return f"[{ip}]" if ip.version == 6 else str(ip)


@dataclass(frozen=True)
class StubDomain:
    """One ``stubDomains`` entry: queries under ``domain`` go to ``nameservers``."""

    domain: str
    """The zone, as written in the ConfigMap (a DNS-1123 subdomain, no trailing dot)."""
    nameservers: tuple[str, ...]
    """Nameservers in ConfigMap order: ``IP``, ``IP:port`` or a resolv.conf-style file name."""


@dataclass(frozen=True)
class KubeDNSConfig:
    """The validated kube-dns ConfigMap; the default value is "no ConfigMap"."""

    stub_domains: tuple[StubDomain, ...] = ()
    """Stub domains sorted by name, so rendering is deterministic (Go's map order is random)."""
    upstream_nameservers: tuple[str, ...] = ()
    """Replaces the node's ``/etc/resolv.conf`` upstreams when not empty; at most three."""
    federations: tuple[tuple[str, str], ...] = ()
    """``(name, domain)`` pairs; validated like kube-dns but not used by node-cache's rendering."""


def _decode(source: str, key: str, raw: str | bytes) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}/{key}: non-utf8 data") from exc


def _load_json(source: str, key: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}/{key}: invalid JSON: {exc}") from exc


def _parse_stub_domains(source: str, text: str) -> tuple[StubDomain, ...]:
    value = _load_json(source, STUB_DOMAINS_KEY, text)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{source}/{STUB_DOMAINS_KEY}: expected a JSON object of domain -> [nameservers]")
    stubs = []
    for domain, servers in value.items():
        if servers is None:
            servers = []
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise ConfigError(
                f"{source}/{STUB_DOMAINS_KEY}: nameservers of {domain!r} must be a JSON list of strings"
            )
        stubs.append(StubDomain(domain, tuple(servers)))
    return tuple(sorted(stubs, key=lambda s: s.domain))


def _parse_upstreams(source: str, text: str) -> tuple[str, ...]:
    value = _load_json(source, UPSTREAM_NAMESERVERS_KEY, text)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ConfigError(f"{source}/{UPSTREAM_NAMESERVERS_KEY}: expected a JSON list of strings")
    return tuple(value)


def _parse_federations(source: str, text: str) -> tuple[tuple[str, str], ...]:
    # kube-dns reads this key with its command-line parser ("name=domain,..."), not as JSON.
    if not text.strip():
        return ()
    result: dict[str, str] = {}
    for item in text.split(","):
        name, sep, domain = item.strip().partition("=")
        if not sep:
            raise ConfigError(f"{source}/{FEDERATIONS_KEY}: invalid format, must be key=value")
        name, domain = name.strip(), domain.strip()
        if not is_dns1123_label(name):
            raise ConfigError(f"{source}/{FEDERATIONS_KEY}: {name!r} not a valid federation name")
        if not is_dns1123_subdomain(domain):
            raise ConfigError(f"{source}/{FEDERATIONS_KEY}: {domain!r} not a valid domain name")
        result[name] = domain
    return tuple(sorted(result.items()))


def _validate_stub_nameserver(ns: str) -> bool:
    # kube-dns validateStubDomains: an unsplittable value is taken as a bare host.
    try:
        host, port = split_host_port(ns)
    except ValueError:
        host, port = ns, ""
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return False
    return parse_ip(host) is not None or is_dns1123_subdomain(ns)


def _validate_upstream_nameserver(ns: str) -> str | None:
    """kube-dns ``util.ValidateNameserverIpAndPort``; returns the reason it is invalid, or None."""
    if parse_ip(ns) is not None:
        return None
    try:
        host, port = split_host_port(ns)
    except ValueError as exc:
        return str(exc)
    if parse_ip(host) is None:
        return f"bad IP address: {host!r}"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"bad port number: {port!r}"
    return None


def validate(config: KubeDNSConfig, source: str = "kube-dns ConfigMap") -> None:
    """kube-dns ``Config.Validate``; raises ConfigError naming the offending key file."""
    for name, domain in config.federations:
        if not is_dns1123_label(name) or not is_dns1123_subdomain(domain):
            raise ConfigError(f"{source}/{FEDERATIONS_KEY}: invalid federation {name}={domain}")
    for stub in config.stub_domains:
        if not is_dns1123_subdomain(stub.domain):
            raise ConfigError(f"{source}/{STUB_DOMAINS_KEY}: invalid domain name: {stub.domain!r}")
        for ns in stub.nameservers:
            if not _validate_stub_nameserver(ns):
                raise ConfigError(f"{source}/{STUB_DOMAINS_KEY}: invalid nameserver: {ns!r}")
    if len(config.upstream_nameservers) > MAX_UPSTREAM_NAMESERVERS:
        raise ConfigError(
            f"{source}/{UPSTREAM_NAMESERVERS_KEY}: upstreamNameserver cannot have more than three entries"
        )
    for ns in config.upstream_nameservers:
        reason = _validate_upstream_nameserver(ns)
        if reason is not None:
            raise ConfigError(f"{source}/{UPSTREAM_NAMESERVERS_KEY}: invalid nameserver {ns!r}: {reason}")


def parse_kubedns_data(data: Mapping[str, str | bytes], source: str = "kube-dns ConfigMap") -> KubeDNSConfig:
    """Build and validate a KubeDNSConfig from ConfigMap data (key -> file content).

    Unknown keys are ignored, as kube-dns does. ``source`` (usually the mount directory) prefixes
    error messages so the operator sees which file is wrong.
    """
    stubs: tuple[StubDomain, ...] = ()
    upstreams: tuple[str, ...] = ()
    federations: tuple[tuple[str, str], ...] = ()
    if STUB_DOMAINS_KEY in data:
        stubs = _parse_stub_domains(source, _decode(source, STUB_DOMAINS_KEY, data[STUB_DOMAINS_KEY]))
    if UPSTREAM_NAMESERVERS_KEY in data:
        raw = _decode(source, UPSTREAM_NAMESERVERS_KEY, data[UPSTREAM_NAMESERVERS_KEY])
        upstreams = _parse_upstreams(source, raw)
    if FEDERATIONS_KEY in data:
        federations = _parse_federations(source, _decode(source, FEDERATIONS_KEY, data[FEDERATIONS_KEY]))
    config = KubeDNSConfig(stub_domains=stubs, upstream_nameservers=upstreams, federations=federations)
    validate(config, source)
    return config


def config_from_state(state: DirectoryState) -> KubeDNSConfig:
    """The config a directory snapshot holds; a missing directory means "no ConfigMap" (defaults)."""
    if not state.exists:
        return KubeDNSConfig()
    return parse_kubedns_data(dict(state.files), source=state.path)


def load_kubedns_dir(path: str) -> KubeDNSConfig:
    """Read and validate the ConfigMap mounted at ``path`` (thin I/O wrapper)."""
    return config_from_state(scan_directory(path))

"""Parse the ``dns64`` directive (CoreDNS plugin/dns64/setup.go).

``dns64 [PREFIX]`` or ``dns64 [PREFIX] { prefix PREFIX  translate_all  allow_ipv4 }``. The prefix is an
IPv6 CIDR of length 32, 40, 48, 56, 64 or 96 (RFC 6052); the default is the well-known 64:ff9b::/96.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodelocaldns.corefile.model import Directive

ONCE = False  # CoreDNS loops over repeated directives; the last one wins
DEFAULT_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class DNS64Config:
    prefix: ipaddress.IPv6Network = DEFAULT_PREFIX
    translate_all: bool = False
    allow_ipv4: bool = False
    warnings: tuple[str, ...] = ()


def _prefix(d: Directive, text: str) -> ipaddress.IPv6Network:
    if "/" not in text:
        raise d.error(f"invalid CIDR address: {text}")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise d.error(f"invalid CIDR address: {text}") from None
    if not isinstance(net, ipaddress.IPv6Network):
        raise d.error(f'invalid netmask 32 IPv6 address: "{net}"')
    n = net.prefixlen
    if n % 8 or not 32 <= n <= 96:
        raise d.error(f'invalid prefix length "{net}"')
    return net


def parse(d: Directive) -> DNS64Config:
    prefix = DEFAULT_PREFIX
    translate_all = allow_ipv4 = False
    if len(d.args) == 1:
        prefix = _prefix(d, d.args[0])
    elif d.args:
        raise d.error("dns64 takes at most one PREFIX")
    warnings: tuple[str, ...] = ()
    if len(d.args) == 1 and d.block:
        # CoreDNS skips the block after a PREFIX argument (its parser `continue`s past it); so do we,
        # but say so instead of dropping the options silently.
        warnings = (f"{d.filename}:{d.line}: dns64 ignores its block when PREFIX is given as an argument",)
    else:
        for sub in d.block:
            if sub.name == "prefix":
                if not sub.args:
                    raise sub.error("prefix needs a PREFIX")
                prefix = _prefix(sub, sub.args[0])
            elif sub.name == "translate_all":
                translate_all = True
            elif sub.name == "allow_ipv4":
                allow_ipv4 = True
            else:
                raise sub.error(f"unknown property '{sub.name}'")
    return DNS64Config(prefix, translate_all, allow_ipv4, warnings)

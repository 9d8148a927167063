"""Parse the ``loadbalance`` directive (CoreDNS plugin/loadbalance/setup.go, v1.14.7).

``loadbalance [round_robin | weighted WEIGHTFILE] { reload DURATION | prefer CIDR... }``. CoreDNS 1.14.7
has three orderings: ``round_robin`` (the default), ``weighted`` (since 1.10.1) and ``prefer`` subnets
(since 1.12.4), which reorders after the policy. A ``weighted`` directive's block takes only ``reload``
(default 30s, 0 disables); every other block takes only ``prefer``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive

ONCE = False  # CoreDNS loops over repeated directives; the last one wins
ROUND_ROBIN = "round_robin"
WEIGHTED = "weighted"
DEFAULT_WEIGHT_RELOAD = 30.0


@dataclass(frozen=True, slots=True)
class LoadBalanceConfig:
    policy: str = ROUND_ROBIN
    weight_file: str = ""  # weighted only; relative paths are relative to the working directory
    reload: float = DEFAULT_WEIGHT_RELOAD  # weighted only: seconds between weight-file checks, 0: never
    prefer: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def _duration(sub: Directive, text: str) -> float:
    neg = text.startswith("-")
    try:
        v = parse_duration(text[1:] if neg or text.startswith("+") else text)
    except ValueError:
        raise sub.error(f"invalid reload duration '{text}'") from None
    if neg and v:
        # Go accepts it and then panics in time.NewTicker; a clear error is kinder.
        raise sub.error(f"invalid reload duration '{text}': must not be negative")
    return v


def parse(d: Directive) -> LoadBalanceConfig:
    args = d.args
    if not args or args[0] == ROUND_ROBIN:
        if len(args) > 1:
            raise d.error(f"unknown property for {args[0]}")
        prefer = []
        for sub in d.block:
            if sub.name != "prefer":
                raise sub.error(f"unknown property '{sub.name}'")
            for cidr in sub.args:
                try:
                    if "/" not in cidr:
                        raise ValueError("no mask")
                    prefer.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError as e:
                    raise sub.error(f'invalid CIDR "{cidr}": invalid CIDR address: {cidr}') from e
        return LoadBalanceConfig(prefer=tuple(prefer))
    if args[0] == WEIGHTED:
        if len(args) < 2:
            raise d.error("missing weight file argument")
        if len(args) > 2:
            raise d.error("unexpected argument(s)")
        reload = DEFAULT_WEIGHT_RELOAD
        for sub in d.block:
            if sub.name != "reload":
                raise sub.error(f"unknown property '{sub.name}'")
            if not sub.args:
                raise sub.error("reload duration value is missing")
            if len(sub.args) > 1:
                raise sub.error("unexpected argument")
            reload = _duration(sub, sub.args[0])
        return LoadBalanceConfig(WEIGHTED, args[1], reload)
    raise d.error(f"unknown policy: {args[0]}")

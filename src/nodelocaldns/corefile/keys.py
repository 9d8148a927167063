"""Server-block keys and zone arguments: ``[scheme://]zone[:port]`` to normalized zones.

Follows CoreDNS ``plugin.SplitHostPort``, ``plugin/pkg/cidr`` and ``dnsserver.InspectServerBlocks``:

* the port is whatever follows the *last* colon, if that is a number; this works for names and for the
  reverse syntax, which always puts ``/mask`` before the port (``10.0.0.0/8:53``);
* a CIDR becomes the reverse zone(s) that cover it. A mask that is not on a label boundary (8 bits for
  IPv4, 4 bits for IPv6) is rounded *up* to the next boundary and the network is split into every
  subnet of that size, one zone each: ``10.0.0.0/15`` -> ``0.10.in-addr.arpa.``, ``1.10.in-addr.arpa.``;
* zones are lowercased and fully qualified.

Deliberately stricter than CoreDNS, which accepts almost any string as a zone (``miekg/dns.IsDomainName``):
characters that can only be a typo in a key (braces, quotes, commas, slashes outside a CIDR, stray colons,
whitespace, non-ASCII) are rejected here instead of producing a zone that never matches a query.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from nodelocaldns.corefile.model import Directive, ServerKey
from nodelocaldns.errors import CorefileError

__all__ = [
    "SUPPORTED_TRANSPORTS",
    "KNOWN_TRANSPORTS",
    "normalize_zone",
    "normalize_zones",
    "origins_from_args_or_block",
    "parse_server_key",
    "reverse_zones",
    "split_transport",
]

SUPPORTED_TRANSPORTS = frozenset({"dns"})
# Every scheme CoreDNS knows (plugin/pkg/transport); only dns:// is served here, the rest get a clear error
# rather than being mistaken for part of a zone name.
KNOWN_TRANSPORTS = ("dns", "tls", "quic", "grpc", "https3", "https", "unix")

_MAX_NAME = 255  # wire length, RFC 1035 2.3.4
_MAX_LABEL = 63
_BAD_CHARS = frozenset('{}"(),/:\\#[]')


class _KeyError(ValueError):
    """A key/zone problem without location; callers attach file:line."""


def split_transport(text: str) -> tuple[str, str]:
    """``"dns://example.org:53"`` -> ``("dns", "example.org:53")``; no scheme means dns."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "dns", text
    scheme = scheme.lower()
    if scheme not in KNOWN_TRANSPORTS:
        raise _KeyError(f"unknown scheme {scheme!r}:// (expected dns://)")
    return scheme, rest


def _split_port(hostport: str) -> tuple[str, int | None]:
    colon = hostport.rfind(":")
    if colon == -1:
        return hostport, None
    host, port_text = hostport[:colon], hostport[colon + 1 :]
    if port_text == "":
        raise _KeyError("expected a port after the last ':'")
    if port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise _KeyError(f"port {port_text} out of range 1-65535")
        return host, port
    if "/" in hostport:
        # An IPv6 CIDR without a port: the colons belong to the address ("fd00::/8").
        return hostport, None
    raise _KeyError(f"invalid port {port_text!r}: must be an integer 1-65535")


def _check_name(name: str) -> str:
    """Validate a (non-CIDR) domain name and return it lowercased and fully qualified."""
    if name == "":
        raise _KeyError("empty zone name")
    if name == ".":
        return "."
    if not name.isascii() or not name.isprintable():
        raise _KeyError("zone must be printable ASCII (write IDNs in punycode)")
    bad = sorted({c for c in name if c in _BAD_CHARS or c.isspace()})
    if bad:
        hint = "; separate keys with spaces" if "," in bad else ""
        raise _KeyError(f"invalid character(s) {''.join(bad)!r} in zone name{hint}")
    fqdn = name if name.endswith(".") else name + "."
    labels = fqdn[:-1].split(".")
    if any(label == "" for label in labels):
        raise _KeyError("empty label ('..' or a leading '.') in zone name")
    for label in labels:
        if len(label) > _MAX_LABEL:
            raise _KeyError(f"label {label[:16]!r}... is {len(label)} octets, more than {_MAX_LABEL}")
    wire = sum(len(label) + 1 for label in labels) + 1
    if wire > _MAX_NAME:
        raise _KeyError(f"zone name is {wire} octets long, more than {_MAX_NAME}")
    return fqdn.lower()


def reverse_zones(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """The reverse zones covering ``network``, split at label boundaries like CoreDNS ``cidr.Split``."""
    step = 8 if network.version == 4 else 4
    suffix = "in-addr.arpa." if network.version == 4 else "ip6.arpa."
    prefix = -(-network.prefixlen // step) * step  # round up to a label boundary
    starts: list[bytes] = [network.network_address.packed]
    if prefix != network.prefixlen:
        starts = [net.network_address.packed for net in network.subnets(new_prefix=prefix)]
    zones = []
    for packed in starts:
        digits = [str(b) for b in packed] if network.version == 4 else list(packed.hex())
        kept = digits[: prefix // step]
        zones.append("".join(d + "." for d in reversed(kept)) + suffix)
    return zones


def _parse_cidr(host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A network if ``host`` is a CIDR, None if it is not one; raises for a malformed CIDR."""
    if "/" not in host:
        return None
    addr, _, mask = host.partition("/")
    try:
        if not (mask.isascii() and mask.isdigit()):
            raise ValueError("mask must be a prefix length")
        network = ipaddress.ip_network(host, strict=False)
    except ValueError as exc:
        raise _KeyError(f"invalid CIDR: {exc}") from None
    # CoreDNS refuses these (plugin.SplitHostPort) because "::/0"-like keys are ambiguous with host:port.
    if addr.startswith(":") or (addr.startswith("0") and ":" in addr):
        raise _KeyError("invalid CIDR: CoreDNS rejects IPv6 CIDRs starting with ':' or '0'")
    return network


def _zones_of_host(host: str) -> list[str]:
    network = _parse_cidr(host)
    if network is not None:
        return reverse_zones(network)
    return [_check_name(host)]


def _split_key(text: str, default_port: int) -> tuple[str, list[str], int]:
    transport, rest = split_transport(text)
    if transport not in SUPPORTED_TRANSPORTS:
        raise _KeyError(f"transport {transport}:// not supported: only dns:// servers are served")
    host, port = _split_port(rest)
    if host == "":
        raise _KeyError("empty zone")
    return transport, _zones_of_host(host), default_port if port is None else port


def parse_server_key(text: str, filename: str, line: int, default_port: int = 53) -> list[ServerKey]:
    """Parse one server-block key; a CIDR key may give several ServerKeys (one per reverse zone)."""
    try:
        transport, zones, port = _split_key(text, default_port)
    except _KeyError as exc:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise CorefileError(f"server key {shown!r}: {exc}", filename, line) from None
    return [ServerKey(zone=z, port=port, transport=transport, original=text) for z in zones]


def _fail(message: str, where: Directive | None) -> CorefileError:
    return where.error(message) if where is not None else CorefileError(message)


def normalize_zone(name: str, where: Directive | None = None) -> str:
    """One zone argument, lowercased and fully qualified; a CIDR must cover exactly one reverse zone.

    Raises CorefileError, located at ``where`` when given (pass the directive being set up).
    """
    zones = normalize_zones([name], where)
    if len(zones) != 1:
        raise _fail(f"{name!r} covers {len(zones)} reverse zones; use normalize_zones", where)
    return zones[0]


def normalize_zones(args: Iterable[str], where: Directive | None = None) -> list[str]:
    """Plugin ZONES arguments -> zones, like CoreDNS ``Host.NormalizeExact``.

    Accepts a scheme and port (``dns://example.org:53``) and strips them, and expands CIDRs. Unlike
    CoreDNS (which silently drops a bad zone argument) an invalid one is an error.
    """
    out: list[str] = []
    for arg in args:
        try:
            _, rest = split_transport(arg)
            host, _ = _split_port(rest)
            out.extend(_zones_of_host(host))
        except _KeyError as exc:
            raise _fail(f"zone {arg!r}: {exc}", where) from None
    return out


def origins_from_args_or_block(
    args: Sequence[str], keys: Sequence[ServerKey], where: Directive | None = None
) -> list[str]:
    """The zones a plugin serves: its ZONES args if any, else its server block's zones (CoreDNS
    ``plugin.OriginsFromArgsOrServerBlock``)."""
    if args:
        return normalize_zones(args, where)
    return [k.zone for k in keys]

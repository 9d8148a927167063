"""Query type names: the full mnemonic for log lines, the monitored set for metric labels."""

from __future__ import annotations

import dns.rdatatype

from nodelocaldns.dns.wire import RCODE_NAMES

# CoreDNS plugin/metrics/vars/monitor.go: every other type is counted as "other".
MONITORED: dict[int, str] = {
    1: "A", 28: "AAAA", 5: "CNAME", 48: "DNSKEY", 43: "DS", 15: "MX", 50: "NSEC3", 47: "NSEC", 2: "NS", 12: "PTR",
    46: "RRSIG", 6: "SOA", 33: "SRV", 16: "TXT", 65: "HTTPS", 64: "SVCB", 251: "IXFR", 252: "AXFR", 255: "ANY",
}  # fmt: skip


def qtype_text(t: int) -> str:
    """``A``, ``HTTPS``, ``TYPE65280``: what CoreDNS's log and errors lines print."""
    try:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(t))
    except Exception:
        return f"TYPE{t}"


def qtype_label(t: int) -> str:
    """The ``type`` label of ``coredns_dns_requests_total``."""
    return MONITORED.get(t, "other")


def rcode_label(rc: int) -> str:
    return RCODE_NAMES.get(rc, str(rc))

"""hosts metrics (CoreDNS plugin/hosts/metrics.go): two gauges, set when the file is (re)parsed.

The README writes ``coredns_hosts_entries{}``, but the gauge carries a ``hostsfile`` label (the path).
The reload timestamp is the file's modification time, not the time of the reload, and is one
process-wide gauge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodelocaldns.metrics.catalog import Family

ENTRIES = Family(
    "coredns_hosts_entries",
    "gauge",
    ("hostsfile",),
    "The combined number of entries in hosts and Corefile.",
)
RELOAD_TIMESTAMP = Family(
    "coredns_hosts_reload_timestamp_seconds",
    "gauge",
    (),
    "The timestamp of the last reload of hosts file.",
)
FAMILIES = (ENTRIES, RELOAD_TIMESTAMP)


@dataclass(slots=True)
class HostsGauges:
    entries: dict[str, int] = field(default_factory=dict)  # hostsfile path -> entries
    reload_timestamp: float | None = None  # unset until a file has been parsed

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        out: list[tuple[str, dict[str, str], float]] = [
            (ENTRIES.name, {"hostsfile": path}, float(n)) for path, n in sorted(self.entries.items())
        ]
        if self.reload_timestamp is not None:
            out.append((RELOAD_TIMESTAMP.name, {}, self.reload_timestamp))
        return out

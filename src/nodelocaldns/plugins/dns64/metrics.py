"""dns64 metrics (CoreDNS plugin/dns64/metrics.go)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodelocaldns.metrics.catalog import Family

TRANSLATED = Family(
    "coredns_dns64_requests_translated_total",
    "counter",
    ("server",),
    "Counter of DNS requests translated by dns64.",
)
FAMILIES = (TRANSLATED,)


@dataclass(slots=True)
class DNS64Counters:
    translated: dict[str, int] = field(default_factory=dict)  # server label -> count

    def count(self, server: str) -> None:
        self.translated[server] = self.translated.get(server, 0) + 1

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [(TRANSLATED.name, {"server": s}, float(n)) for s, n in sorted(self.translated.items())]

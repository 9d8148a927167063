"""``coredns_template_*`` counters (CoreDNS plugin/template/metrics.go): definitions as data, plain
dict counters the collector reads at scrape time."""

from __future__ import annotations

from nodelocaldns.metrics.catalog import Family

MATCHES = Family(
    "coredns_template_matches_total",
    "counter",
    ("server", "zone", "view", "class", "type"),
    "Counter of template regex matches.",
)
TEMPLATE_FAILURES = Family(
    "coredns_template_template_failures_total",
    "counter",
    ("server", "zone", "view", "class", "type", "section", "template"),
    "Counter of go template failures.",
)
RR_FAILURES = Family(
    "coredns_template_rr_failures_total",
    "counter",
    ("server", "zone", "view", "class", "type", "section", "template"),
    "Counter of mis-templated RRs.",
)
FAMILIES = (MATCHES, TEMPLATE_FAILURES, RR_FAILURES)


class TemplateCounters:
    """One dict per family: label values (in the family's label order) -> count."""

    __slots__ = ("matches", "template_failures", "rr_failures")

    def __init__(self) -> None:
        self.matches: dict[tuple[str, ...], int] = {}
        self.template_failures: dict[tuple[str, ...], int] = {}
        self.rr_failures: dict[tuple[str, ...], int] = {}

    @staticmethod
    def inc(counter: dict[tuple[str, ...], int], labels: tuple[str, ...]) -> None:
        counter[labels] = counter.get(labels, 0) + 1

    def families(self) -> tuple[tuple[Family, dict[tuple[str, ...], int]], ...]:
        """Each family with its samples, for the collector."""
        return (
            (MATCHES, self.matches),
            (TEMPLATE_FAILURES, self.template_failures),
            (RR_FAILURES, self.rr_failures),
        )

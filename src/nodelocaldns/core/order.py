"""CoreDNS plugin.cfg order, as data: the position of every directive in a server block's chain.

CoreDNS runs plugins in this order whatever the Corefile says. Directives we do not implement yet
keep their place here so that adding one never reshuffles the others. Setup-only directives (bind,
health, ready, reload...) have a position too; they simply contribute no handler.
"""

from __future__ import annotations

PLUGIN_CFG: tuple[str, ...] = (
    "root", "metadata", "geoip", "cancel", "tls", "quic", "timeouts", "multisocket", "reload", "nsid", "bufsize",
    "bind", "debug", "trace", "ready", "health", "pprof", "prometheus", "errors", "log", "dnstap", "local",
    "dns64", "acl", "any", "chaos", "loadbalance", "tsig", "cache", "rewrite", "header", "dnssec",
    "autopath", "minimal", "template", "transfer", "hosts", "route53", "azure", "clouddns", "k8s_external",
    "kubernetes", "file", "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic", "whoami",
    "on", "sign", "view",
)  # fmt: skip

POSITION: dict[str, int] = {name: i for i, name in enumerate(PLUGIN_CFG)}

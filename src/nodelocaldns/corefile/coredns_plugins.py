"""CoreDNS's in-tree plugins, as data: coredns/coredns ``plugin.cfg`` (master, 2026), in its order.

Used to tell a directive CoreDNS knows but nodelocaldns does not implement (a plugin an existing
Corefile may well use) apart from a typo.
"""

from __future__ import annotations

COREDNS_PLUGINS: tuple[str, ...] = (
    "root", "metadata", "geoip", "cancel", "proxyproto", "quic", "grpc_server", "https", "https3",
    "timeouts", "multisocket", "reload", "nsid", "bufsize", "bind", "debug", "trace", "ready", "health",
    "pprof", "shed", "prometheus", "errors", "log", "dnstap", "local", "dns64", "any", "chaos",
    "loadbalance", "tsig", "rewrite", "autopath", "acl", "cache", "header", "dnssec", "tls", "minimal",
    "template", "transfer", "hosts", "route53", "azure", "clouddns", "k8s_external", "kubernetes", "file",
    "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic", "whoami", "on", "sign", "view",
    "nomad",
)  # fmt: skip

"""nodelocaldns: a CoreDNS-compatible node-local DNS cache and drop-in node-cache agent."""

__version__ = "0.1.0"

"""Capability check before touching the network: fail early, and say which capability is missing.

Without CAP_NET_ADMIN every netlink address change and every iptables/nft write fails with a bare
EPERM, tick after tick. The DaemonSet drops every capability and adds NET_ADMIN, NET_BIND_SERVICE
(for :53) and NET_RAW (iptables-legacy opens a raw socket); only NET_ADMIN is checked here because
the others fail with their own clear error (the bind names the address, iptables says so).
"""

from __future__ import annotations

from pathlib import Path

from nodelocaldns.errors import SetupError

CAP_NET_ADMIN = 12


def effective_capabilities(status_text: str) -> int:
    """The ``CapEff`` bitmask from ``/proc/<pid>/status`` text."""
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            return int(value.strip(), 16)
    raise ValueError("no CapEff line in process status")


def has_capability(bit: int, status_text: str | None = None) -> bool:
    text = Path("/proc/self/status").read_text() if status_text is None else status_text
    return bool(effective_capabilities(text) >> bit & 1)


def require_net_admin(status_text: str | None = None, *, kind: str = "privileges") -> None:
    """Raise ``SetupError`` naming CAP_NET_ADMIN if this process lacks it.

    ``kind`` defaults to ``privileges``, which is not a setup-errors metric label on purpose: this is
    a startup check that stops the agent, not a periodic failure to count.
    """
    text = Path("/proc/self/status").read_text() if status_text is None else status_text
    caps = effective_capabilities(text)
    if not caps >> CAP_NET_ADMIN & 1:
        raise SetupError(
            kind,
            f"missing capability CAP_NET_ADMIN (effective set {caps:#018x}): it is needed to add the"
            " local addresses and the iptables/nftables rules; grant it with"
            " securityContext.capabilities.add: [NET_ADMIN], or run with"
            " -setupinterface=false -setupiptables=false",
        )

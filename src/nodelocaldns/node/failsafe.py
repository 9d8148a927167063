"""Which rule table this host gets: fail-safe (socket-guarded) rules where the kernel has the match.

The socket match (``rules.py``) is what lets kube-proxy's DNAT take the kube-dns ClusterIP back the
moment our listener is gone, SIGKILL included. A host without it (no ``xt_socket`` /
``libxt_socket.so``, no ``nft_socket``) gets node-cache's unconditional rules, a warning and one
``coredns_nodecache_setup_errors_total{errortype="socket_match"}``: the node's DNS then depends on the
agent being alive, as it does with node-cache.

The host-network clients' rule of a Service IP goes to the agent's own nft table (``owned.py``)
when one could be opened; without one (no ``libnftables``, a kernel before 5.12) it stays
node-cache's unconditional backend rule, with the same warning and counter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import RulesBackend
from nodelocaldns.node.iptables import IptablesBackend
from nodelocaldns.node.nft import NftBackend
from nodelocaldns.node.rules import Rule, desired_rules
from nodelocaldns.node.setup_metrics import SetupMetrics

log = logging.getLogger("nodelocaldns.node")

SOCKET_MATCH_ERROR = "socket_match"


async def socket_match_supported(backend: RulesBackend) -> bool:
    """Ask the host (never assume): each backend runs its own real check."""
    if isinstance(backend, IptablesBackend | NftBackend):
        try:
            return await backend.socket_match_supported()
        except SetupError:
            return False
    return False


async def rules_for(
    backend: RulesBackend,
    local_ips: Sequence[str],
    dns_port: int,
    health_port: int,
    metrics: SetupMetrics,
    logger: logging.Logger | None = None,
    *,
    owned_unavailable: str | None = None,
) -> tuple[Rule, ...]:
    """The rule table for ``backend``: guarded when the match works, node-cache's otherwise; the
    host-network rules ``owner`` unless ``owned_unavailable`` says why the agent has no own table."""
    rules = desired_rules(local_ips, dns_port, health_port)
    if not any(r.socket for r in rules):
        return tuple(rules)  # link-local addresses only: nothing to guard, nothing to probe
    lg = logger or log
    socket_ok = await socket_match_supported(backend)
    if not socket_ok:
        lg.warning(
            "The %s backend cannot match on sockets (no xt_socket / nft socket on this host): using "
            "unconditional NOTRACK rules, so the kube-dns ClusterIP has no DNS while this agent is down",
            backend.name,
        )
        metrics.inc(SOCKET_MATCH_ERROR)
    if owned_unavailable is not None:
        lg.warning(
            "No nft table of this agent's own (%s): host-network clients of the kube-dns ClusterIP "
            "get node-cache's unconditional NOTRACK rule and no DNS there while this agent is down",
            owned_unavailable,
        )
        metrics.inc(SOCKET_MATCH_ERROR)
    return tuple(
        desired_rules(
            local_ips, dns_port, health_port, socket_guard=socket_ok, owner_table=owned_unavailable is None
        )
    )

"""From a ``-rules-backend`` choice to a backend, probing the node for ``auto``.

``auto`` picks nftables when kube-proxy runs in nftables mode (its ``ip kube-proxy`` /
``ip6 kube-proxy`` tables exist): there is then no iptables ruleset worth joining, and nft avoids
the xtables lock entirely. Otherwise it picks iptables with the variant chosen the way
kubernetes-sigs/iptables-wrappers does (see ``iptables.choose_variant``), so our rules land in the
same kernel subsystem as kube-proxy's and ``-I ... 1`` ordering means what it says.
``iptables`` alone means "iptables, variant detected".
"""

from __future__ import annotations

from collections.abc import Mapping

from nodelocaldns.errors import ConfigError, SetupError
from nodelocaldns.node.backend import RULES_BACKENDS, IptablesVariant, RulesBackend
from nodelocaldns.node.command import run_command
from nodelocaldns.node.iptables import IptablesBackend, detect_variant
from nodelocaldns.node.nft import NftBackend
from nodelocaldns.node.rules import NFT_TABLE


def kube_proxy_uses_nftables(nft_list_tables: str) -> bool:
    """True if ``nft list tables`` shows kube-proxy's nftables-mode tables."""
    tables = {line.strip() for line in nft_list_tables.splitlines()}
    return bool(tables & {"table ip kube-proxy", "table ip6 kube-proxy"})


async def detect_kube_proxy_nftables(env: Mapping[str, str] | None = None) -> bool:
    try:
        res = await run_command(["nft", "list", "tables"], timeout=10, env=env)
    except SetupError:
        return False  # no nft binary: kube-proxy cannot be in nftables mode from our point of view
    return res.ok and kube_proxy_uses_nftables(res.stdout)


async def select_backend(
    choice: str = "auto",
    *,
    variant: IptablesVariant | None = None,
    nft_table: str = NFT_TABLE,
    wait_seconds: int = 5,
    env: Mapping[str, str] | None = None,
) -> RulesBackend:
    """Build the backend for ``choice`` (one of ``RULES_BACKENDS``), probing the host for ``auto``.

    ``variant`` pins the iptables variant instead of detecting it.
    """
    if choice not in RULES_BACKENDS:
        raise ConfigError(f"unknown rules backend {choice!r}; expected one of {', '.join(RULES_BACKENDS)}")
    if choice == "nftables" or (choice == "auto" and await detect_kube_proxy_nftables(env)):
        return NftBackend(table=nft_table, env=env)
    return IptablesBackend(variant or await detect_variant(env), wait_seconds=wait_seconds, env=env)

"""Native nftables backend: our rules in our own ``inet nodelocaldns`` table.

The table belongs to us alone, so the whole desired state is written as one ``nft -f -``
transaction that replaces the table (``rules.nft_script``): atomic, never a duplicate, no xtables
lock. A tick first reads the table back with ``nft -j list table`` and writes nothing when it
already holds exactly the desired rules, so the steady state is one read per tick.

Failures use ``SetupError(kind="iptables")``: the metric's label set is node-cache's and has no
nft value; "iptables" is the label dashboards already read as "rules could not be programmed".
See ``rules.py`` for what ``accept`` can and cannot do in a table of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import EnsureReport, run_command
from nodelocaldns.node.rules import NFT_TABLE, Rule, nft_delete_script, nft_script, parse_nft_json, unique


class NftBackend:
    def __init__(
        self,
        *,
        table: str = NFT_TABLE,
        nft: str = "nft",
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.table = table
        self.nft = nft
        self.env = env
        self.timeout = timeout

    @property
    def name(self) -> str:
        return "nft"

    async def _apply(self, script: str) -> None:
        res = await run_command([self.nft, "-f", "-"], stdin=script, timeout=self.timeout, env=self.env)
        if not res.ok:
            raise SetupError("iptables", res.describe())

    async def _read(self) -> tuple[list[Rule], int]:
        """Our rules and the count of entries we could not parse (both empty if no table)."""
        argv = [self.nft, "-j", "list", "table", "inet", self.table]
        res = await run_command(argv, timeout=self.timeout, env=self.env)
        if not res.ok:
            if "No such file or directory" in res.stderr:
                return [], 0
            raise SetupError("iptables", res.describe())
        try:
            scan = parse_nft_json(res.stdout)
        except ValueError as e:
            raise SetupError("iptables", f"cannot parse nft JSON output: {e}") from e
        return list(scan.owned), len(scan.foreign)

    async def ensure(self, rules: Sequence[Rule]) -> EnsureReport:
        wanted = unique(rules)
        current, unreadable = await self._read()
        have, want = Counter(current), Counter(wanted)
        if have == want and not unreadable:
            return EnsureReport(self.name, (), (), len(wanted))
        await self._apply(nft_script(wanted, self.table))
        added = tuple(r for r in wanted if have[r] == 0)
        removed = tuple((have - want).elements())
        return EnsureReport(self.name, added, removed, len(wanted) - len(added), unreadable)

    async def delete(self, rules: Sequence[Rule]) -> int:
        """Drop the table. It is ours, so everything in it goes, not only ``rules``."""
        current, _ = await self._read()
        await self._apply(nft_delete_script(self.table))
        return len(current)

    async def list_owned(self) -> list[Rule]:
        return (await self._read())[0]

"""Native nftables backend: our rules in our own ``inet nodelocaldns`` table.

The table belongs to us alone, so the whole desired state is written as one ``nft -f -``
transaction that replaces the table (``nftrules.nft_script``): atomic, never a duplicate, no xtables
lock. A tick first reads the table back with ``nft -j list table`` and writes nothing when it
already holds exactly the desired rules, so the steady state is one read per tick.

Failures use ``SetupError(kind="iptables")``: the metric's label set is node-cache's and has no
nft value; "iptables" is the label dashboards already read as "rules could not be programmed".
See ``rules.py`` for what ``accept`` can and cannot do in a table of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import EnsureReport, ensure_rules
from nodelocaldns.node.command import run_command
from nodelocaldns.node.nftrules import nft_delete_script, nft_script, parse_nft_json
from nodelocaldns.node.plan import FixRules, RuleState
from nodelocaldns.node.rules import NFT_TABLE, Rule

# One rule with both socket keys the table uses, in a chain on the hook they are used in.
_SOCKET_PROBE = (
    "table inet {table} {{\n\tchain probe {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
    "\t\tudp dport 53 socket wildcard 0 socket transparent 0 accept\n\t}}\n}}\n"
)


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

    @property
    def exclusive(self) -> bool:
        return True

    async def observe(self, rules: Sequence[Rule]) -> RuleState:
        current, unreadable = await self._read()
        return RuleState(tuple(current), unreadable)

    async def apply(self, fix: FixRules) -> EnsureReport:
        await self._apply(nft_script(list(fix.wanted), self.table))
        return EnsureReport(self.name, fix.add, fix.remove, len(fix.wanted) - len(fix.add), fix.unreadable)

    async def ensure(self, rules: Sequence[Rule]) -> EnsureReport:
        return await ensure_rules(self, rules)

    async def delete(self, rules: Sequence[Rule]) -> int:
        """Drop the table. It is ours, so everything in it goes, not only ``rules``."""
        current, _ = await self._read()
        await self._apply(nft_delete_script(self.table))
        return len(current)

    async def list_owned(self) -> list[Rule]:
        return (await self._read())[0]

    async def socket_match_supported(self) -> bool:
        """Whether the kernel takes our ``socket`` expressions: ``nft -c`` sends a throwaway table
        to the kernel for validation and commits nothing."""
        script = _SOCKET_PROBE.format(table=f"{self.table}-probe")
        res = await run_command([self.nft, "-c", "-f", "-"], stdin=script, timeout=self.timeout, env=self.env)
        return res.ok

    async def remove(self, rules: Sequence[Rule]) -> int:
        """Remove ``rules`` (every copy) from our table and keep the rest; drop the table when
        nothing is left. An entry we cannot read back keeps the table as it is (it is not ours to judge)."""
        current, unreadable = await self._read()
        gone = set(rules)
        keep = [r for r in current if r not in gone]
        removed = len(current) - len(keep)
        if not removed:
            return 0
        if unreadable:
            raise SetupError("iptables", f"table inet {self.table} holds entries we cannot read; left alone")
        await self._apply(nft_script(keep, self.table) if keep else nft_delete_script(self.table))
        return removed

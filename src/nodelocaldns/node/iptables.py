"""iptables backend: node-cache's rules in the shared ``raw``/``filter`` tables, applied in batches.

node-cache runs ``iptables -C`` then ``-I`` per rule per tick. With iptables < 1.8.8 the check was
unreliable and every tick inserted another copy (kubernetes/dns #568: thousands of duplicates).
Here a rule is identified by its full spec as ``iptables-save`` prints it; each tick reads
``iptables-save -t raw`` / ``-t filter`` once, computes what is missing and what is duplicated,
and applies all of it in ONE ``iptables-restore --noflush -w`` run: N copies of a rule become one,
zero become one, and nothing else in the tables is touched. Rules that carry our comment but not
exactly our spec (another instance's address, an operator's edit) are left alone.

The xtables lock is only taken by ``iptables-restore`` (``-w`` waits for it, like node-cache's
``-w 5``); a timeout there is ``SetupError(kind="iptables_lock")``, any other failure
``kind="iptables"``, matching node-cache's ``errortype`` labels.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import EnsureReport, IptablesVariant, ensure_rules
from nodelocaldns.node.command import CommandResult, run_command
from nodelocaldns.node.plan import FixRules, RuleState
from nodelocaldns.node.rules import Op, Rule, SaveScan, parse_iptables_save, restore_text

Variant = IptablesVariant

# kubelet (>= 1.17) creates one of these in the mangle table of the variant the node uses.
_KUBELET_CHAINS = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b", re.MULTILINE)
_LOCK_MARKERS = ("holding the xtables lock", "Another app is currently holding")


def choose_variant(nft_save: str, legacy_save: str) -> Variant:
    """Which iptables variant the node uses, from the two variants' ``iptables-save`` outputs.

    kubernetes-sigs/iptables-wrappers: kubelet's hint chains decide (nft checked first); older
    wrapper versions then compared rule counts. We keep that fallback, comparing kube-proxy's
    ``KUBE-*`` rules first and all rules second; a tie (e.g. an empty node) means nft, the default
    of every current distribution.
    """
    if _KUBELET_CHAINS.search(nft_save):
        return "nft"
    if _KUBELET_CHAINS.search(legacy_save):
        return "legacy"

    def rules(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("-")]

    nft_rules, legacy_rules = rules(nft_save), rules(legacy_save)
    nft_kube = sum("KUBE-" in r for r in nft_rules)
    legacy_kube = sum("KUBE-" in r for r in legacy_rules)
    if nft_kube != legacy_kube:
        return "legacy" if legacy_kube > nft_kube else "nft"
    return "legacy" if len(legacy_rules) > len(nft_rules) else "nft"


async def detect_variant(env: Mapping[str, str] | None = None) -> Variant:
    """Run both variants' save commands (v4 and v6) and apply ``choose_variant``.

    Failures count as empty output: a missing legacy binary simply means nft. Full saves (no
    ``-t``) for legacy, because naming a table makes the legacy kernel code create it.
    """

    async def save(binary: str) -> str:
        try:
            res = await run_command([binary], timeout=10, env=env)
        except SetupError:
            return ""
        return res.stdout if res.ok else ""

    outs = await asyncio.gather(
        save("iptables-nft-save"),
        save("ip6tables-nft-save"),
        save("iptables-legacy-save"),
        save("ip6tables-legacy-save"),
    )
    return choose_variant(outs[0] + outs[1], outs[2] + outs[3])


def classify_failure(res: CommandResult) -> SetupError:
    """node-cache's ``isLockedErr``: lock contention is its own metric label."""
    text = res.stderr + res.stdout
    kind = "iptables_lock" if any(m in text for m in _LOCK_MARKERS) else "iptables"
    return SetupError(kind, res.describe())


class IptablesBackend:
    """Our rules through ``{ip,ip6}tables-{variant}-{save,restore}``."""

    def __init__(
        self,
        variant: Variant,
        *,
        wait_seconds: int = 5,
        families: Sequence[int] = (4, 6),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.variant = variant
        self.wait_seconds = wait_seconds
        self.families = tuple(families)
        self.env = env
        # the restore may legitimately wait wait_seconds for the lock before doing its work
        self.timeout = max(timeout, wait_seconds + 10.0)

    @property
    def name(self) -> str:
        return f"iptables-{self.variant}"

    def _binary(self, family: int, tool: str) -> str:
        return f"{'iptables' if family == 4 else 'ip6tables'}-{self.variant}-{tool}"

    async def _scan(self, family: int) -> SaveScan:
        binary = self._binary(family, "save")
        results = await asyncio.gather(
            *(run_command([binary, "-t", t], timeout=self.timeout, env=self.env) for t in ("raw", "filter"))
        )
        for res in results:
            if not res.ok:
                raise SetupError("iptables", res.describe())
        return parse_iptables_save("".join(r.stdout for r in results), family)

    async def _restore(self, family: int, ops: Sequence[tuple[Op, Rule]]) -> None:
        argv = [self._binary(family, "restore"), "--noflush", "-w", str(self.wait_seconds)]
        res = await run_command(argv, stdin=restore_text(ops, family), timeout=self.timeout, env=self.env)
        if not res.ok:
            raise classify_failure(res)

    @property
    def exclusive(self) -> bool:
        return False  # raw/filter are shared with kube-proxy and everyone else

    async def observe(self, rules: Sequence[Rule]) -> RuleState:
        families = sorted({r.family for r in rules})
        scans = await asyncio.gather(*(self._scan(f) for f in families))
        return RuleState(tuple(r for scan in scans for r in scan.owned))

    async def apply(self, fix: FixRules) -> EnsureReport:
        families = sorted({r.family for r in (*fix.add, *fix.remove)})
        results = await asyncio.gather(
            *(
                self._restore(
                    f,
                    [("-D", r) for r in fix.remove if r.family == f]
                    + [("-I", r) for r in fix.add if r.family == f],
                )
                for f in families
            ),
            return_exceptions=True,
        )
        for res in results:
            if isinstance(res, BaseException):
                raise res
        return EnsureReport(self.name, fix.add, fix.remove, len(fix.wanted) - len(fix.add))

    async def ensure(self, rules: Sequence[Rule]) -> EnsureReport:
        return await ensure_rules(self, rules)

    async def delete(self, rules: Sequence[Rule]) -> int:
        deleted = 0
        for family in sorted({r.family for r in rules}):
            wanted = set(rules)
            last: SetupError | None = None
            # A concurrent writer can make a -D name a rule that just vanished, which fails the
            # whole restore; rescan and retry a couple of times before giving up.
            for _attempt in range(3):
                have = Counter(r for r in (await self._scan(family)).owned if r in wanted)
                ops: list[tuple[Op, Rule]] = [("-D", r) for r, n in have.items() for _ in range(n)]
                if not ops:
                    last = None
                    break
                try:
                    await self._restore(family, ops)
                except SetupError as e:
                    last = e
                    continue
                deleted += len(ops)
                last = None
                break
            if last is not None:
                raise last
        return deleted

    async def list_owned(self) -> list[Rule]:
        out: list[Rule] = []
        for family in self.families:
            out += (await self._scan(family)).owned
        return out

    async def socket_match_supported(self) -> bool:
        """Whether this host can run ``-m socket --nowildcard``: a ``--test`` restore of one such rule
        per family (parsed and checked, never committed). A missing extension or kernel match fails."""
        for family in self.families:
            addr = "192.0.2.1" if family == 4 else "2001:db8::1"
            text = (
                f"*raw\n-A PREROUTING -d {addr} -p udp --dport 53 -m socket --nowildcard -j NOTRACK\nCOMMIT\n"
            )
            argv = [self._binary(family, "restore"), "--test", "--noflush", "-w", str(self.wait_seconds)]
            res = await run_command(argv, stdin=text, timeout=self.timeout, env=self.env)
            if not res.ok:
                return False
        return True

    async def scan_without_creating(self) -> SaveScan:
        """Our rules in this variant, read with full saves: unlike ``-t raw``, a full legacy save does
        not make the kernel create tables, so looking at a variant the node does not use is harmless."""
        owned: list[Rule] = []
        foreign: list[str] = []
        for family in self.families:
            res = await run_command([self._binary(family, "save")], timeout=self.timeout, env=self.env)
            if not res.ok:
                raise SetupError("iptables", res.describe())
            scan = parse_iptables_save(res.stdout, family)
            owned += scan.owned
            foreign += scan.foreign
        return SaveScan(tuple(owned), tuple(foreign))

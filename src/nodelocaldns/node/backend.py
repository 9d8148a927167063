"""One interface over the packet-filter backends, the subprocess helper they share, and ``auto``.

Backends:

* ``iptables-nft`` / ``iptables-legacy`` (``iptables.py``): the node-cache rule set in the shared
  ``raw``/``filter`` tables, through the iptables variant the host (kube-proxy) uses.
* ``nft`` (``nft.py``): the same rules in our own ``inet nodelocaldns`` table.

``auto`` picks ``nft`` when kube-proxy runs in nftables mode (its ``ip kube-proxy`` /
``ip6 kube-proxy`` tables exist): there is then no iptables ruleset worth joining, and nft avoids
the xtables lock entirely. Otherwise it picks iptables with the variant chosen the way
kubernetes-sigs/iptables-wrappers does (see ``iptables.choose_variant``), so our rules land in the
same kernel subsystem as kube-proxy's and ``-I ... 1`` ordering means what it says.
``iptables`` alone means "iptables, variant detected".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nodelocaldns.errors import ConfigError, SetupError
from nodelocaldns.node.rules import Rule

BackendMode = Literal["auto", "iptables", "iptables-nft", "iptables-legacy", "nft"]
BACKEND_MODES: tuple[str, ...] = ("auto", "iptables", "iptables-nft", "iptables-legacy", "nft")


@dataclass(frozen=True, slots=True)
class EnsureReport:
    """What one ``ensure`` did. ``removed`` lists every extra copy (or stale rule) it deleted;
    ``dropped_foreign`` counts entries it could not read as one of our rules and replaced (only
    the nft backend does that, since it owns its whole table)."""

    backend: str
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()
    present: int = 0
    dropped_foreign: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.dropped_foreign)


class RulesBackend(Protocol):
    """A place our rules live. Every method is idempotent and safe to call on every tick."""

    @property
    def name(self) -> str: ...

    async def ensure(self, rules: Sequence[Rule]) -> EnsureReport:
        """Make every rule present exactly once; raise ``SetupError`` on failure."""
        ...

    async def delete(self, rules: Sequence[Rule]) -> int:
        """Remove every copy of ``rules``; return how many rule copies were deleted."""
        ...

    async def list_owned(self) -> list[Rule]:
        """Our rules as the kernel has them now, one entry per copy."""
        ...


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        msg = (self.stderr or self.stdout).strip().replace("\n", "; ")
        return f"{' '.join(self.argv)} exited {self.returncode}: {msg}"


def missing_tool(binary: str, path: str) -> str:
    """The error for a rules tool that is not there, named by the package an operator installs."""
    name = os.path.basename(binary)
    package = (
        "iptables" if name.startswith(("iptables", "ip6tables")) else "nftables" if name == "nft" else name
    )
    return (
        f"{package} is not installed: {binary} is not on PATH ({path or 'empty'}); the nodelocaldns"
        f" image has it, a custom image needs the {package} package"
    )


async def run_command(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    error_kind: str = "iptables",
) -> CommandResult:
    """Run a program without blocking the loop. A missing binary or a timeout is a SetupError;
    a non-zero exit is returned for the caller to classify."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
    except FileNotFoundError as e:
        raise SetupError(error_kind, missing_tool(argv[0], (full_env or os.environ).get("PATH", ""))) from e
    except OSError as e:
        raise SetupError(error_kind, f"cannot run {argv[0]}: {e}") from e
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SetupError(error_kind, f"{' '.join(argv)} did not finish within {timeout:g}s") from None
    return CommandResult(
        tuple(argv), proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )


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
    mode: str = "auto",
    *,
    nft_table: str = "nodelocaldns",
    wait_seconds: int = 5,
    env: Mapping[str, str] | None = None,
) -> RulesBackend:
    """Build the backend for ``mode`` (one of ``BACKEND_MODES``), probing the host for ``auto``."""
    # Imported here: both modules import this one for the protocol types.
    from nodelocaldns.node.iptables import IptablesBackend, detect_variant
    from nodelocaldns.node.nft import NftBackend

    if mode not in BACKEND_MODES:
        raise ConfigError(f"unknown rules backend {mode!r}; expected one of {', '.join(BACKEND_MODES)}")
    if mode == "nft" or (mode == "auto" and await detect_kube_proxy_nftables(env)):
        return NftBackend(table=nft_table, env=env)
    if mode == "iptables-nft":
        return IptablesBackend("nft", wait_seconds=wait_seconds, env=env)
    if mode == "iptables-legacy":
        return IptablesBackend("legacy", wait_seconds=wait_seconds, env=env)
    return IptablesBackend(await detect_variant(env), wait_seconds=wait_seconds, env=env)

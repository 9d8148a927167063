"""Running the packet-filter programs (iptables-save/-restore, nft) without blocking the loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodelocaldns.errors import SetupError


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

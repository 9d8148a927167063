"""Run a Corefile from a CoreDNS README here: every key on a test port, bound to loopback, and the
README's public resolver replaced by a local upstream (tests never send traffic off the machine)."""

from __future__ import annotations

import re

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.server.config import plan

_PUBLIC = re.compile(r"\b8\.8\.8\.8\b")


def plans(corefile: str) -> int:
    """Parse and plan (every directive's own parse) without sockets; returns the block count."""
    return len(plan(parse_corefile(corefile, "README.md")).blocks)


def localize(corefile: str, upstream: str = "", files: dict[str, str] | None = None) -> str:
    """The README's Corefile on ``{PORT}``, ``bind 127.0.0.1``, ``8.8.8.8`` -> ``upstream``,
    and relative file names in ``files`` replaced by their paths."""
    out: list[str] = []
    for line in corefile.splitlines():
        stripped = line.strip()
        if stripped.endswith("{") and not line.startswith((" ", "\t")):
            keys = stripped[:-1].split()
            out.append(" ".join(f"{k}:{{PORT}}" for k in keys) + " {")
            out.append("    bind 127.0.0.1")
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    if upstream:
        text = _PUBLIC.sub(upstream, text)
    for name, path in (files or {}).items():
        text = re.sub(rf"(?<=\s){re.escape(name)}(?=\s)", path, text)
    return text

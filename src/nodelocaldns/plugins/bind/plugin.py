"""``bind ADDRESS|IFACE... [{ except ADDRESS|IFACE... }]``: which addresses a block listens on.

An interface name expands to all of its addresses when the config is loaded (CoreDNS does the
same at startup and reload).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass

from nodelocaldns.corefile.model import Directive


@dataclass(frozen=True, slots=True)
class BindConfig:
    hosts: tuple[str, ...]
    excluded: tuple[str, ...] = ()


def interface_addresses(name: str) -> list[str] | None:
    """All addresses of interface ``name`` (None if there is no such interface)."""
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show", "dev", name], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    addrs: list[str] = []
    for link in json.loads(out.stdout or "[]"):
        for a in link.get("addr_info", []):
            local = a.get("local")
            if not local:
                continue
            if a.get("family") == "inet6" and local.lower().startswith("fe80"):
                local = f"{local}%{name}"
            addrs.append(local)
    return addrs


def _expand(d: Directive, items: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_address(item)))
            continue
        except ValueError:
            pass
        addrs = interface_addresses(item)
        if addrs is None:
            raise d.error(f"not a valid IP address or interface name: {item!r}")
        out.extend(addrs)
    return out


def parse(d: Directive) -> BindConfig:
    if not d.args:
        raise d.error("bind takes at least one address or interface")
    hosts = _expand(d, d.args)
    excluded: list[str] = []
    for sub in d.block:
        if sub.name != "except" or not sub.args:
            raise sub.error("bind block takes only 'except ADDRESS|IFACE...'")
        excluded.extend(_expand(sub, sub.args))
    return BindConfig(tuple(h for h in hosts if h not in excluded), tuple(excluded))

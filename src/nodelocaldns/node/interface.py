"""The link that holds the local DNS addresses (node-cache's ``nodelocaldns`` dummy interface).

Thin adapter over pyroute2 ``AsyncIPRoute`` (the sync ``IPRoute`` cannot run inside an event loop
in pyroute2 0.9). Behaviour, compared with node-cache's ``pkg/netif``:

* A link with the name, of any kind, is reused; otherwise a ``dummy`` is created. Kernels without
  the dummy driver answer EOPNOTSUPP, reported as ``SetupError(kind="interface_add")`` with a hint.
* Each address is added as /32 or /128 when missing (EEXIST counts as success). IPv6 addresses get
  ``IFA_F_NODAD``: on a link that is down, an address without it stays *tentative* forever and
  cannot be bound (verified); with it, it is usable at once. An IPv6 copy that is tentative or
  failed DAD (added by someone else) is replaced by a NODAD one.
* The link is left DOWN by default, like node-cache: the kernel installs the ``local`` routes for the
  addresses either way, so local delivery works for both families (the tests check it). Bringing it
  up buys nothing and costs something: with ``net.ipv6.conf.*.keep_addr_on_down=0`` (the default)
  any later down event flushes the IPv6 addresses. ``set_up=True`` is there for operators who want
  ``operstate UP`` anyway.
* Removal deletes the link only if allowed *and* it is a dummy (what node-cache would have made);
  any other kind (a bridge an operator made, ``lo``) only loses our addresses. node-cache deletes
  whatever link has the name.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nodelocaldns.errors import SetupError
from nodelocaldns.node.plan import (
    IFA_F_NODAD,
    Action,
    AddAddress,
    CreateLink,
    InterfaceSpec,
    LinkState,
    SetLinkUp,
    canonical_ips,
    plan_interface,
    unusable,
)

RT_TABLE_LOCAL = 255
# The kernel installs an IPv6 address's local route from a workqueue after the netlink ack, so a
# socket bound at once can still get ENETUNREACH for a few ms on a busy node. Bounded wait.
LOCAL_ROUTE_WAIT = (0.005, 200)  # (poll interval s, polls): at most 1 s


@dataclass(frozen=True, slots=True)
class InterfaceReport:
    name: str
    index: int
    kind: str | None
    created: bool
    added: tuple[str, ...]  # addresses (re)added by this call; empty in the steady state


@dataclass(frozen=True, slots=True)
class RemovalReport:
    name: str
    link_deleted: bool
    removed: tuple[str, ...]


def _prefixlen(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


async def _lookup(ipr: Any, name: str) -> int | None:
    found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


async def _kind(ipr: Any, index: int) -> str | None:
    msgs = await ipr.link("get", index=index)
    kind = msgs[0].get(("linkinfo", "kind")) if msgs else None
    return str(kind) if kind else None


async def _addresses(ipr: Any, index: int) -> dict[str, int]:
    """Host addresses (/32, /128) on the link -> their IFA flags."""
    out: dict[str, int] = {}
    async for msg in await ipr.addr("dump", index=index):
        if msg.get("index") != index:
            continue
        raw = msg.get("local") or msg.get("address")
        if raw is None:
            continue
        ip = ipaddress.ip_address(raw).compressed
        if msg["prefixlen"] != _prefixlen(ip):
            continue
        out[ip] = int(msg.get("IFA_FLAGS") or msg["flags"])
    return out


async def _add_address(ipr: Any, index: int, ip: str) -> None:
    kwargs: dict[str, Any] = {"index": index, "address": ip, "prefixlen": _prefixlen(ip)}
    if ipaddress.ip_address(ip).version == 6:
        kwargs["flags"] = IFA_F_NODAD
    try:
        await ipr.addr("add", **kwargs)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


async def observe_link(name: str) -> LinkState:
    """The link ``name`` as it is: index (None if absent), kind, host addresses and their flags."""
    try:
        async with AsyncIPRoute() as ipr:
            index = await _lookup(ipr, name)
            if index is None:
                return LinkState(None)
            return LinkState(index, await _kind(ipr, index), await _addresses(ipr, index))
    except NetlinkError as e:
        raise SetupError("interface_check", f"error checking interface {name}: {e.args[-1]}") from e


async def apply_link_actions(name: str, actions: Iterable[Action]) -> InterfaceReport:
    """Carry out ``plan_interface``'s actions on link ``name``; report what was done."""
    try:
        async with AsyncIPRoute() as ipr:
            created = False
            added: list[str] = []
            index = await _lookup(ipr, name)
            for action in actions:
                if isinstance(action, CreateLink):
                    index = await _create(ipr, name)
                    created = True
                    continue
                if index is None:
                    raise SetupError("interface_check", f"interface {name} does not exist")
                if isinstance(action, AddAddress):
                    ip = action.ip
                    try:
                        if action.replace:
                            await ipr.addr("del", index=index, address=ip, prefixlen=_prefixlen(ip))
                        await _add_address(ipr, index, ip)
                    except NetlinkError as e:
                        raise SetupError(
                            "interface_add", f"cannot add {ip}/{_prefixlen(ip)} to {name}: {e.args[-1]}"
                        ) from e
                    added.append(ip)
                elif isinstance(action, SetLinkUp):
                    await ipr.link("set", index=index, state="up")
            if index is None:
                raise SetupError("interface_check", f"interface {name} does not exist")
            await _wait_local_routes(ipr, [ip for ip in added if ":" in ip])
            return InterfaceReport(name, index, await _kind(ipr, index), created, tuple(added))
    except NetlinkError as e:
        raise SetupError("interface_check", f"error checking interface {name}: {e.args[-1]}") from e


async def _wait_local_routes(ipr: Any, ips: list[str]) -> None:
    """Return once every IPv6 address in ``ips`` has its local route (or the bounded wait ends)."""
    pending = set(ips)
    interval, polls = LOCAL_ROUTE_WAIT
    for _ in range(polls):
        if not pending:
            return
        async for msg in await ipr.route("dump", family=socket.AF_INET6, table=RT_TABLE_LOCAL):
            dst = msg.get("dst")
            if dst is not None:
                pending.discard(ipaddress.ip_address(dst).compressed)
        if pending:
            await asyncio.sleep(interval)


async def _create(ipr: Any, name: str) -> int:
    try:
        await ipr.link("add", ifname=name, kind="dummy")
    except NetlinkError as e:
        hint = (
            " (this kernel has no dummy link driver: pre-create the interface, e.g."
            f" `ip link add {name} type bridge`, or run with -setupinterface=false)"
            if e.code == errno.EOPNOTSUPP
            else ""
        )
        raise SetupError("interface_add", f"cannot create dummy interface {name}: {e.args[-1]}{hint}") from e
    index = await _lookup(ipr, name)
    if index is None:
        raise SetupError("interface_add", f"interface {name} vanished right after creation")
    return index


async def ensure_interface(name: str, ips: Iterable[str], *, set_up: bool = False) -> InterfaceReport:
    """Make link ``name`` exist and hold every address in ``ips``; report what had to be done."""
    spec = InterfaceSpec(name, tuple(ips), set_up)
    return await apply_link_actions(name, plan_interface(spec, await observe_link(name)))


async def check_interface(name: str, ips: Iterable[str]) -> InterfaceReport:
    """Verify without changing anything; ``SetupError(kind="interface_check")`` on any gap."""
    wanted = canonical_ips(ips)
    try:
        async with AsyncIPRoute() as ipr:
            index = await _lookup(ipr, name)
            if index is None:
                raise SetupError("interface_check", f"interface {name} does not exist")
            present = await _addresses(ipr, index)
            kind = await _kind(ipr, index)
    except NetlinkError as e:
        raise SetupError("interface_check", f"error checking interface {name}: {e.args[-1]}") from e
    missing = [ip for ip in wanted if ip not in present]
    broken = [ip for ip in wanted if ip in present and unusable(ip, present[ip])]
    if missing or broken:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"tentative/DAD-failed {', '.join(broken)}"] if broken else []
        )
        raise SetupError("interface_check", f"interface {name}: {'; '.join(parts)}")
    return InterfaceReport(name, index, kind, False, ())


async def remove_interface(name: str, ips: Iterable[str], delete_link: bool) -> RemovalReport:
    """Undo ``ensure_interface``: delete the link if allowed and it is a dummy, else our addresses."""
    wanted = canonical_ips(ips)
    try:
        async with AsyncIPRoute() as ipr:
            index = await _lookup(ipr, name)
            if index is None:
                return RemovalReport(name, False, ())
            if delete_link and await _kind(ipr, index) == "dummy":
                try:
                    await ipr.link("del", index=index)
                except NetlinkError as e:
                    if e.code != errno.ENODEV:
                        raise
                return RemovalReport(name, True, tuple(wanted))
            present = await _addresses(ipr, index)
            removed: list[str] = []
            for ip in wanted:
                if ip not in present:
                    continue
                try:
                    await ipr.addr("del", index=index, address=ip, prefixlen=_prefixlen(ip))
                except NetlinkError as e:
                    if e.code != errno.EADDRNOTAVAIL:
                        raise
                    continue
                removed.append(ip)
            return RemovalReport(name, False, tuple(removed))
    except NetlinkError as e:
        raise SetupError("interface_check", f"error removing interface {name}: {e.args[-1]}") from e

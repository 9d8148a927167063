"""The agent's own nft table: rules that exist exactly as long as this process does.

The host-network clients' NOTRACK rule (raw OUTPUT to a Service IP's DNS port) cannot be made
fail-safe with a socket match: the kernel refuses ``xt_socket`` in OUTPUT and nft's ``socket`` there
looks at the sending socket. So it lives in a table with ``flags owner`` (kernel 5.12+): the kernel
ties such a table to the netlink socket that created it and deletes it the instant that socket
closes, which a SIGKILL or an OOM kill does as surely as a clean exit. No other socket may change
or delete it (EPERM), so no other program, peer or leftover clean-up can fight over it.

The socket is this process's own: a libnftables context (``libnftables.so.1``, which ships with
the ``nft`` binary) opened through ctypes keeps one netlink socket for its whole life. Each agent
has its own table (``OWNED_TABLE_PREFIX`` + a random tag): during a handover both peers hold one
with the same rules, and host-network DNS stays local while either is alive.

The calls block for a few milliseconds; they run on the NetWorker thread like the other rule work.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import replace

from nodelocaldns.errors import SetupError
from nodelocaldns.node.nftrules import OWNED_TABLE_PREFIX, nft_chain_name, nft_owned_script, parse_nft_json
from nodelocaldns.node.rules import Rule

log = logging.getLogger("nodelocaldns.node")

_LIBRARY = "libnftables.so.1"
_NFT_CTX_OUTPUT_JSON = 1 << 4
# Every owned rule is a raw OUTPUT one. The chain is read, not the table: nft 1.0.6 prints an owner
# table's flags in JSON as nothing at all, which cuts the document short.
_CHAIN = nft_chain_name("raw", "OUTPUT")


def _load(name: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(name)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.restype = None
    for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_int
    for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_char_p
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


class OwnedTable:
    """One ``inet`` table owned by this process's libnftables context. ``close`` (or the process's
    death) deletes it in the kernel."""

    def __init__(self, lib: ctypes.CDLL, ctx: int, name: str) -> None:
        self._lib = lib
        self._ctx: int | None = ctx
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def open(cls, name: str | None = None, *, library: str = _LIBRARY) -> OwnedTable:
        """A context and an empty owned table, or SetupError naming why there cannot be one."""
        try:
            lib = _load(library)
        except (OSError, AttributeError) as exc:
            raise SetupError("iptables", f"cannot load {library} (the nftables package): {exc}") from exc
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise SetupError("iptables", "nft_ctx_new failed")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(ctx, _NFT_CTX_OUTPUT_JSON)
        table = cls(lib, ctx, name or OWNED_TABLE_PREFIX + secrets.token_hex(4))
        try:
            table.write(())  # the probe: an older kernel refuses the owner flag
        except SetupError:
            table.close()
            raise
        return table

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def _run(self, script: str) -> str:
        with self._lock:
            if self._ctx is None:
                raise SetupError("iptables", f"the table inet {self.name} was closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            first = script.splitlines()[0] if script else ""
            msg = err.decode(errors="replace").strip().replace("\n", "; ")
            raise SetupError("iptables", f"nft ({first} ...) failed: {msg}")
        return out.decode(errors="replace")

    def write(self, rules: Sequence[Rule]) -> None:
        """Replace the table's content with ``rules`` in one transaction."""
        self._run(nft_owned_script(rules, self.name))

    def read(self) -> tuple[Rule, ...] | None:
        """The rules the kernel holds in the table (``owner`` set), or None when it is gone (or
        has no chain: an empty table is rewritten the same way)."""
        try:
            text = self._run(f"list chain inet {self.name} {_CHAIN}")
        except SetupError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        try:
            scan = parse_nft_json(text)
        except ValueError as exc:
            raise SetupError("iptables", f"cannot parse the nft JSON of inet {self.name}: {exc}") from exc
        if scan.foreign:
            return ()  # something we did not write: rewrite it whole
        return tuple(replace(r, owner=True) for r in scan.owned)

    def delete(self) -> int:
        """Remove the table now (the teardown); the context stays open. Returns the rules it held."""
        held = self.read()
        if held is None:
            return 0
        self._run(f"delete table inet {self.name}")
        return len(held)

    def close(self) -> None:
        """Free the context: its socket closes and the kernel deletes the table."""
        with self._lock:
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._lib.nft_ctx_free(ctx)


def open_owned_table(name: str | None = None) -> tuple[OwnedTable | None, str]:
    """The table, or None and the reason (logged by the caller with its consequence)."""
    try:
        return OwnedTable.open(name), ""
    except SetupError as exc:
        return None, str(exc)

"""``rewrite edns0 local|nsid|subnet set|append|replace|unset`` (CoreDNS plugin/rewrite/edns0.go).

Every edns0 rule first gives the query an OPT record if it has none (4096, DO off), even when the
rule then does nothing, as CoreDNS does. ``append`` adds an option even if one with the code exists
(CoreDNS's code; its README says otherwise), except for a ``{variable}`` local option.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodelocaldns.plugins.rewrite.rules import (
    IGNORED,
    OPT_NSID,
    OPT_SUBNET,
    Edns0RemoveResponse,
    Edns0RestoreResponse,
    ResponseRule,
    Result,
    State,
    ensure_opt,
    get_options,
    is_typed,
    set_options,
    subnet_data,
)

APPEND, REPLACE, SET, UNSET = "append", "replace", "set", "unset"
VARIABLES = (
    "{qname}",
    "{qtype}",
    "{client_ip}",
    "{client_port}",
    "{protocol}",
    "{server_ip}",
    "{server_port}",
)


def _unset(state: State, code: int) -> Result:
    opt = ensure_opt(state)
    options = get_options(opt)
    kept = [o for o in options if o[0] != code]
    if len(kept) != len(options):
        set_options(opt, kept)
        state.dirty = True
    return [], True


def _put(
    state: State, action: str, code: int, data: bytes, revert: bool, match: bool, typed_ok: bool
) -> Result:
    """Replace the first matching option (replace/set) or add one (append/set).

    ``match`` False: a matching option makes the rule a no-op for append (the variable rule).
    """
    opt = ensure_opt(state)
    options = get_options(opt)
    resp: list[ResponseRule] = []
    for i, (c, old) in enumerate(options):
        if c != code or (is_typed(c) and not typed_ok):
            continue
        if action in (REPLACE, SET):
            if revert:
                resp.append(Edns0RestoreResponse(code, old))
            options[i] = (code, data)
            set_options(opt, options)
            state.dirty = True
            return resp, True
        if not match:
            return IGNORED
    if action in (APPEND, SET):
        options.append((code, data))
        set_options(opt, options)
        state.dirty = True
        if revert:
            resp.append(Edns0RemoveResponse(code))
        return resp, True
    return IGNORED


@dataclass(frozen=True, slots=True)
class Edns0LocalRule:
    mode: str
    action: str
    code: int
    data: bytes
    revert: bool = False

    def apply(self, state: State) -> Result:
        if self.action == UNSET:
            return _unset(state, self.code)
        return _put(state, self.action, self.code, self.data, self.revert, match=True, typed_ok=False)


@dataclass(frozen=True, slots=True)
class Edns0VariableRule:
    mode: str
    action: str
    code: int
    variable: str
    revert: bool = False

    def data(self, state: State) -> bytes | None:
        peer, q = state.peer, state.question
        v = self.variable
        if v == "{qname}":
            return q.name.to_text().encode()
        if v == "{qtype}":
            return q.qtype.to_bytes(2, "big")
        if v in ("{client_ip}", "{server_ip}"):
            ip = ipaddress.ip_address(peer.client_ip if v == "{client_ip}" else peer.server_ip)
            if peer.family == 1:
                return ip.packed if ip.version == 4 else None
            return ip.packed if ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{ip}").packed
        if v in ("{client_port}", "{server_port}"):
            return (peer.client_port if v == "{client_port}" else peer.server_port).to_bytes(2, "big")
        if v == "{protocol}":
            return peer.protocol.encode()
        return None  # a metadata label: node-cache has no metadata plugin, so there is no value

    def apply(self, state: State) -> Result:
        data = self.data(state)
        if not data:
            return IGNORED
        return _put(state, self.action, self.code, data, self.revert, match=False, typed_ok=False)


@dataclass(frozen=True, slots=True)
class Edns0NsidRule:
    mode: str
    action: str
    revert: bool = False

    def apply(self, state: State) -> Result:
        if self.action == UNSET:
            return _unset(state, OPT_NSID)
        return _put(state, self.action, OPT_NSID, b"", self.revert, match=True, typed_ok=True)


@dataclass(frozen=True, slots=True)
class Edns0SubnetRule:
    mode: str
    action: str
    v4: int = 0
    v6: int = 0
    revert: bool = False

    def apply(self, state: State) -> Result:
        if self.action == UNSET:
            return _unset(state, OPT_SUBNET)
        data = subnet_data(state.peer, self.v4, self.v6)
        opt = ensure_opt(state)
        options = get_options(opt)
        for i, (code, old) in enumerate(options):
            if code != OPT_SUBNET:
                continue
            # The first ECS option decides: replace/set fill it in, append leaves the query alone.
            if self.action not in (REPLACE, SET):
                return IGNORED
            resp: list[ResponseRule] = [Edns0RestoreResponse(code, old)] if self.revert else []
            options[i] = (code, data)
            set_options(opt, options)
            state.dirty = True
            return resp, True
        if self.action in (APPEND, SET):
            options.append((OPT_SUBNET, data))
            set_options(opt, options)
            state.dirty = True
            return ([Edns0RemoveResponse(OPT_SUBNET)] if self.revert else []), True
        return IGNORED


Edns0Rule = Edns0LocalRule | Edns0VariableRule | Edns0NsidRule | Edns0SubnetRule

"""Rewrite rules and the response rules they leave behind (CoreDNS plugin/rewrite, v1.14.7).

A request rule looks at the query (:class:`State`), may change it, and returns ``(response_rules,
done)``. ``done`` is CoreDNS's ``RewriteDone``: it stops the rule list for a ``stop`` rule and turns the
reverter on. Response rules are applied to every record of the reply (authority, answer, additional),
the last one collected first; rcode rules also run once on a reply with no records.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import dns.edns
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.OPT

from nodelocaldns.dns.msg import TYPE_OPT, Msg, Question, Record
from nodelocaldns.plugins.rewrite.rewriters import (
    RemapRewriter,
    StringRewriter,
    _groups,
    substitute,
)

STOP, CONTINUE = "stop", "continue"
EXACT, PREFIX, SUFFIX, SUBSTRING, REGEX = "exact", "prefix", "suffix", "substring", "regex"
OPT_NSID, OPT_SUBNET = 3, 8
DEFAULT_EDNS_SIZE = 4096  # CoreDNS setupEdns0Opt: SetEdns0(4096, false) when the query has no OPT
# Option codes miekg/dns decodes into their own types; any other code is an EDNS0_LOCAL to it, so a
# `local` rule only ever matches an option whose code is not one of these.
_TYPED_OPTIONS = frozenset({1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 15})
# Record types whose "value" (a domain name) `answer value` and `answer auto` rewrite, and the
# dnspython field holding it (CoreDNS getRecordValueForRewrite).
VALUE_FIELDS = {
    33: "target",  # SRV
    15: "exchange",  # MX
    5: "target",  # CNAME
    2: "target",  # NS
    39: "target",  # DNAME
    35: "replacement",  # NAPTR
    6: "mname",  # SOA
    12: "target",  # PTR
}


@dataclass(slots=True)
class Peer:
    """The connection a query came in on: what ``edns0`` variables and ``subnet`` read."""

    client_ip: str = "127.0.0.1"
    client_port: int = 0
    server_ip: str = "127.0.0.1"
    server_port: int = 53
    protocol: str = "udp"

    @property
    def family(self) -> int:
        return 2 if ":" in self.client_ip else 1


@dataclass(slots=True)
class State:
    msg: Msg  # the query, edited in place
    peer: Peer
    dirty: bool = False  # the query bytes must be re-rendered

    @property
    def question(self) -> Question:
        return self.msg.question[0]

    def name(self) -> str:
        """CoreDNS ``state.Name()``: the current question name, lowercased text."""
        return self.question.name.to_text().lower()


# -- response rules ---------------------------------------------------------------------------------

Lookup = Callable[[str, int], Msg | None]


@dataclass(slots=True)
class Reply:
    """What a response rule edits: the reply and how to resolve a rewritten CNAME target."""

    msg: Msg
    lookup: Lookup


def _name(text: str) -> dns.name.Name | None:
    try:
        return dns.name.from_text(text)
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.BadEscape, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class NameResponse:
    rewriter: StringRewriter

    def apply(self, reply: Reply, rr: Record | None) -> None:
        if rr is None:
            return
        text = rr.name.to_text()
        new = self.rewriter.rewrite(text)
        if new != text and (name := _name(new)) is not None:
            rr.name = name


@dataclass(frozen=True, slots=True)
class ValueResponse:
    rewriter: StringRewriter

    def apply(self, reply: Reply, rr: Record | None) -> None:
        attr = VALUE_FIELDS.get(rr.rtype) if rr is not None else None
        if rr is None or attr is None:
            return
        value = getattr(rr.rdata, attr).to_text()
        new = self.rewriter.rewrite(value)
        if new != value and (name := _name(new)) is not None:
            rr.rdata = rr.rdata.replace(**{attr: name})


@dataclass(frozen=True, slots=True)
class TTLResponse:
    low: int
    high: int

    def apply(self, reply: Reply, rr: Record | None) -> None:
        # CoreDNS also clamps the OPT record's "TTL" (its EDNS flags, the DO bit among them); we
        # leave OPT alone (docs/compatibility.md).
        if rr is None or rr.rtype == TYPE_OPT:
            return
        if rr.ttl < self.low:
            rr.ttl = self.low
        elif rr.ttl > self.high:
            rr.ttl = self.high


@dataclass(frozen=True, slots=True)
class RcodeResponse:
    old: int
    new: int
    message_level = True  # also applied once to a reply without records

    def apply(self, reply: Reply, rr: Record | None) -> None:
        if reply.msg.rcode == self.old:
            reply.msg.rcode = self.new


def get_options(opt: Record) -> list[tuple[int, bytes]]:
    return [(int(o.otype), o.to_wire()) for o in opt.rdata.options]  # type: ignore[attr-defined]


def set_options(opt: Record, options: list[tuple[int, bytes]]) -> None:
    generic = [dns.edns.GenericOption(dns.edns.OptionType.make(code), data) for code, data in options]
    opt.rdata = dns.rdtypes.ANY.OPT.OPT(  # type: ignore[no-untyped-call]
        dns.rdataclass.RdataClass.make(opt.rclass), dns.rdatatype.OPT, generic
    )


@dataclass(frozen=True, slots=True)
class Edns0RemoveResponse:
    """``revert`` of an added option: drop the first option with this code from the reply."""

    code: int

    def apply(self, reply: Reply, rr: Record | None) -> None:
        opt = reply.msg.opt
        if opt is None:
            return
        options = get_options(opt)
        for i, (code, _) in enumerate(options):
            if code == self.code:
                del options[i]
                set_options(opt, options)
                return


@dataclass(frozen=True, slots=True)
class Edns0RestoreResponse:
    """``revert`` of a replaced option: put the query's original option back into the reply."""

    code: int
    data: bytes

    def apply(self, reply: Reply, rr: Record | None) -> None:
        opt = reply.msg.opt
        if opt is None:
            return
        options = get_options(opt)
        for i, (code, _) in enumerate(options):
            if code == self.code:
                options[i] = (self.code, self.data)
                set_options(opt, options)
                return


@dataclass(frozen=True, slots=True)
class CnameResponse:
    """A rewritten CNAME target: keep the CNAMEs up to it, re-resolve the new target."""

    rule: CnameRule
    qtype: int

    def apply(self, reply: Reply, rr: Record | None) -> None:
        if rr is None or rr.rtype != 5:
            return
        target = rr.rdata.target.to_text()  # type: ignore[attr-defined]
        frm, to = self.rule.from_and_to(target)
        if target != frm:
            return
        new_target = _name(to)
        up = reply.lookup(to, self.qtype) if new_target is not None else None
        if up is None or new_target is None:
            return  # CoreDNS logs the failed lookup and leaves the reply as it is
        answer: list[Record] = []
        for rec in reply.msg.answer:
            if rec.rtype == 5:
                answer.append(rec)
                if rec.rdata.target.to_text() == frm:  # type: ignore[attr-defined]
                    rec.rdata = rec.rdata.replace(target=new_target)
                    break
        answer.extend(r.copy() for r in up.answer)
        reply.msg.answer = answer
        tc = up.flags & 0x0200
        reply.msg.flags = (reply.msg.flags & ~0x0200) | tc


ResponseRule = (
    NameResponse
    | ValueResponse
    | TTLResponse
    | RcodeResponse
    | Edns0RemoveResponse
    | Edns0RestoreResponse
    | CnameResponse
)
Result = tuple[list[ResponseRule], bool]
IGNORED: Result = ([], False)


# -- request rules ----------------------------------------------------------------------------------


def matches(kind: str, value: str | re.Pattern[str], name: str) -> bool:
    """The match types ``ttl`` and ``rcode`` rules select names with."""
    if kind == EXACT:
        return name == value
    if kind == PREFIX:
        return name.startswith(value)  # type: ignore[arg-type]
    if kind == SUFFIX:
        return name.endswith(value)  # type: ignore[arg-type]
    if kind == SUBSTRING:
        return value in name  # type: ignore[operator]
    return value.search(name) is not None  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class NameRule:
    mode: str
    kind: str
    frm: str | re.Pattern[str]
    to: str
    auto: bool = False
    static: tuple[ResponseRule, ...] = ()

    def apply(self, state: State) -> tuple[list[ResponseRule], bool, str | None]:
        """Like the others, plus the new question name text (None: not matched)."""
        name = state.name()
        new: str | None = None
        if self.kind == EXACT:
            new = self.to if name == self.frm else None
        elif self.kind == PREFIX:
            new = self.to + name[len(self.frm) :] if name.startswith(self.frm) else None  # type: ignore[arg-type]
        elif self.kind == SUFFIX:
            new = name[: len(name) - len(self.frm)] + self.to if name.endswith(self.frm) else None  # type: ignore[arg-type]
        elif self.kind == SUBSTRING:
            new = name.replace(self.frm, self.to) if self.frm in name else None  # type: ignore[arg-type, operator]
        else:
            m = self.frm.search(name)  # type: ignore[union-attr]
            new = substitute(self.to, _groups(m)) if m is not None else None
        if new is None:
            return [], False, None
        rules = list(self.static)
        if self.auto:
            remap = RemapRewriter(new, name)
            rules = [NameResponse(remap), ValueResponse(remap), *rules]
        return rules, True, new


@dataclass(frozen=True, slots=True)
class _QuestionFieldRule:
    """``rewrite type`` / ``rewrite class``: one question field, from one value to another."""

    FIELD: ClassVar[str]
    mode: str
    frm: int
    to: int

    def apply(self, state: State) -> Result:
        if getattr(state.question, self.FIELD) != self.frm:
            return IGNORED
        setattr(state.question, self.FIELD, self.to)
        state.dirty = True
        return [], True


class TypeRule(_QuestionFieldRule):
    __slots__ = ()
    FIELD = "qtype"


class ClassRule(_QuestionFieldRule):
    __slots__ = ()
    FIELD = "qclass"


@dataclass(frozen=True, slots=True)
class TTLRule:
    mode: str
    kind: str
    frm: str | re.Pattern[str]
    low: int
    high: int

    def apply(self, state: State) -> Result:
        if not matches(self.kind, self.frm, state.name()):
            return IGNORED
        return [TTLResponse(self.low, self.high)], True


@dataclass(frozen=True, slots=True)
class RcodeRule:
    mode: str
    kind: str
    frm: str | re.Pattern[str]
    old: int
    new: int

    def apply(self, state: State) -> Result:
        if not matches(self.kind, self.frm, state.name()):
            return IGNORED
        return [RcodeResponse(self.old, self.new)], True


@dataclass(frozen=True, slots=True)
class CnameRule:
    mode: str
    kind: str
    frm: str
    to: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    def from_and_to(self, target: str) -> tuple[str, str]:
        """CoreDNS ``getFromAndToTarget``: ("", "") when the target does not match."""
        if self.kind == EXACT:
            return self.frm, self.to
        if self.kind == PREFIX and target.startswith(self.frm):
            return target, self.to + target[len(self.frm) :]
        if self.kind == SUFFIX and target.endswith(self.frm):
            return target, target[: len(target) - len(self.frm)] + self.to
        if self.kind == SUBSTRING and self.frm in target:
            return target, target.replace(self.frm, self.to)
        if self.kind == REGEX and self.pattern is not None:
            m = self.pattern.search(target)
            if m is not None:
                return target, substitute(self.to, _groups(m))
        return "", ""

    def apply(self, state: State) -> Result:
        # Always "done": the work happens on the reply.
        return [CnameResponse(self, state.question.qtype)], True


def ensure_opt(state: State) -> Record:
    """CoreDNS ``setupEdns0Opt``: the query's OPT, added (4096, DO off) if it has none."""
    opt = state.msg.opt
    if opt is None:
        opt = Record(
            dns.name.root,
            TYPE_OPT,
            DEFAULT_EDNS_SIZE,
            0,
            dns.rdtypes.ANY.OPT.OPT(DEFAULT_EDNS_SIZE, TYPE_OPT, []),  # type: ignore[no-untyped-call]
        )
        state.msg.additional.append(opt)
        state.dirty = True
    return opt


def is_typed(code: int) -> bool:
    return code in _TYPED_OPTIONS


def subnet_data(peer: Peer, v4: int, v6: int) -> bytes:
    """An ECS option body for the client's address (RFC 7871), source scope 0."""
    if peer.family == 1:
        bits, net = v4, ipaddress.ip_network(f"{peer.client_ip}/{v4}", strict=False)
        addr = net.network_address.packed
    else:
        bits, net6 = v6, ipaddress.ip_network(f"{peer.client_ip}/{v6}", strict=False)
        addr = net6.network_address.packed
    return peer.family.to_bytes(2, "big") + bytes([bits, 0]) + addr[: (bits + 7) // 8]

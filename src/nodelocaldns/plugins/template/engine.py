"""The template plugin's decision, sans I/O (CoreDNS plugin/template/template.go ``ServeDNS``).

:func:`resolve` says what the plugin does with a query: ``None`` to pass it to the next plugin, or a
:class:`TemplateResult`. A result with ``written=False`` is CoreDNS returning an rcode without writing a
reply (no template matched and no fallthrough, ``rcode SERVFAIL``, a template that failed): the server
answers it with its own error reply, as it does for any plugin. :func:`reply_wire` turns a written
result into the reply bytes; CNAME answers to A/AAAA queries name targets in ``cname_targets`` whose
lookups (through the server's own chain, as CoreDNS's ``upstream`` does) the caller passes back in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.OPT
import dns.tokenizer
import dns.ttl

from nodelocaldns.core.zones import zone_match
from nodelocaldns.dns.msg import TYPE_OPT, Msg, Question, Record, from_wire
from nodelocaldns.dns.names import CLASSES, class_to_text, type_to_text
from nodelocaldns.plugins.template.gofuncs import GoMap, GoStruct, TemplateExecError
from nodelocaldns.plugins.template.gotemplate import Template
from nodelocaldns.plugins.template.metrics import TemplateCounters
from nodelocaldns.plugins.template.setup import (
    CLASS_ANY,
    RCODE_SERVFAIL,
    TYPE_ANY,
    TemplateConfig,
    TemplateRule,
)

TYPE_A, TYPE_AAAA, TYPE_CNAME = 1, 28, 5
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0010
DEFAULT_TTL = 3600  # miekg/dns zone parser default when an RR has no TTL
EDNS_DO = 0x8000
EDE_UDP_SIZE = 4096  # CoreDNS: msg.SetEdns0(4096, true) before adding the EDE option


class RRError(ValueError):
    """Templated text is not a resource record (CoreDNS ``dns.NewRR`` failed)."""


@dataclass(frozen=True, slots=True)
class TemplateResult:
    rcode: int
    written: bool  # False: CoreDNS returns rcode without a reply; the server writes its error reply
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    ederror: tuple[int, str] | None = None
    cname_targets: tuple[str, ...] = ()  # CNAME targets to look up, qtype A/AAAA only
    error: str = ""  # why a template failed (CoreDNS returns it to the server, which logs it)
    template: TemplateRule | None = None


def parse_rr(text: str) -> Record:
    """One RR in zone-file syntax, like miekg's ``dns.NewRR`` (origin ".", default TTL 3600, class IN)."""
    try:
        tok = dns.tokenizer.Tokenizer(text)
        owner = tok.get()
        if owner.is_eol_or_eof():
            raise RRError("empty resource record")
        name = dns.name.from_text(owner.value, dns.name.root)
        ttl: int | None = None
        rclass: int | None = None
        while True:
            t = tok.get()
            if t.is_eol_or_eof():
                raise RRError(f"not a TTL or type after {owner.value!r}")
            word = t.value.upper()
            if ttl is None and word[:1].isdigit():
                ttl = dns.ttl.from_text(word)
            elif rclass is None and word in CLASSES:
                rclass = CLASSES[word]
            else:
                rtype = dns.rdatatype.from_text(word)
                break
        rdclass = dns.rdataclass.RdataClass.make(1 if rclass is None else rclass)
        rdata = dns.rdata.from_text(rdclass, rtype, tok, dns.name.root, False)
    except RRError:
        raise
    except (dns.exception.DNSException, ValueError) as exc:
        raise RRError(f"{exc}: {text!r}") from None
    return Record(name, int(rtype), int(rdclass), DEFAULT_TTL if ttl is None else ttl, rdata)


def _question_struct(q: Question) -> GoStruct:
    name = q.name.to_text()
    text = f";{name}\t{class_to_text(q.qclass)}\t {type_to_text(q.qtype)}"  # miekg Question.String()
    return GoStruct("*dns.Question", {"Name": name, "Qtype": q.qtype, "Qclass": q.qclass}, {}, text)


def _message_struct(msg: Msg) -> GoStruct:
    fields = {
        "Id": msg.id,
        "Opcode": (msg.flags >> 11) & 0xF,
        "RecursionDesired": bool(msg.flags & FLAG_RD),
        "CheckingDisabled": bool(msg.flags & FLAG_CD),
        "Question": [_question_struct(q) for q in msg.question],
    }
    return GoStruct("*dns.Msg", fields, {}, f";; opcode: QUERY, id: {msg.id}")


def _meta(_name: str) -> str:
    # node-cache has no metadata plugin, so every .Meta lookup is empty, as in CoreDNS without it.
    return ""


def _match(
    t: TemplateRule, name: str, q: Question, msg: Msg, remote_ip: str
) -> tuple[GoStruct | None, str, bool]:
    """CoreDNS ``template.match``: (data or None, zone, fall through?)."""
    zone = zone_match(t.zones, name)
    if not zone:
        return None, "", True
    if t.qclass != CLASS_ANY and q.qclass != CLASS_ANY and q.qclass != t.qclass:
        return None, "", True
    if t.qtype != TYPE_ANY and q.qtype != TYPE_ANY and q.qtype != t.qtype:
        return None, "", True
    for regex in t.regexes:
        m = regex.compiled.search(name)
        if m is None:
            continue
        groups = [m.group(0)] + [g or "" for g in m.groups()]
        group_map = GoMap({str(i): g for i, g in enumerate(groups)})
        for gname, g in m.groupdict().items():
            group_map[gname] = g or ""
        fields = {
            "Zone": zone,
            "Name": name,
            "Regex": regex.source,
            "Match": groups,
            "Group": group_map,
            "Class": class_to_text(q.qclass if q.qclass != CLASS_ANY else t.qclass),
            "Type": type_to_text(q.qtype if q.qtype != TYPE_ANY else t.qtype),
            "Message": _message_struct(msg),
            "Question": _question_struct(q),
            "Remote": remote_ip,
        }
        return GoStruct("*template.templateData", fields, {"Meta": _meta}), zone, False
    return None, "", t.falls_through(name)


def resolve(
    cfg: TemplateConfig,
    query: bytes | Msg,
    remote_ip: str,
    *,
    server: str = "",
    view: str = "",
    counters: TemplateCounters | None = None,
) -> TemplateResult | None:
    """What the template handler does with ``query`` from ``remote_ip`` (no port).

    ``server`` and ``view`` are the metrics' labels (CoreDNS ``metrics.WithServer``: "dns://:53").
    """
    msg = query if isinstance(query, Msg) else from_wire(query)
    if not msg.question:
        return None
    q = msg.question[0]
    name = q.name.to_text().lower()
    if not zone_match(cfg.zones, name):
        return None
    for t in cfg.templates:
        data, zone, fall = _match(t, name, q, msg, remote_ip)
        if data is None:
            if not fall:
                return TemplateResult(RCODE_SERVFAIL, written=False, template=t)
            continue
        labels = (server, zone, view, data.fields["Class"], data.fields["Type"])
        if counters is not None:
            counters.inc(counters.matches, labels)
        if t.rcode == RCODE_SERVFAIL:
            return TemplateResult(RCODE_SERVFAIL, written=False, template=t)
        sections: dict[str, list[Record]] = {"answer": [], "additional": [], "authority": []}
        for section, templates in (
            ("answer", t.answer),
            ("additional", t.additional),
            ("authority", t.authority),
        ):
            for tpl in templates:
                try:
                    sections[section].append(_execute(tpl, data))
                except (TemplateExecError, RRError) as exc:
                    if counters is not None:
                        which = (
                            counters.template_failures
                            if isinstance(exc, TemplateExecError)
                            else counters.rr_failures
                        )
                        counters.inc(which, (*labels, section, tpl.source))
                    return TemplateResult(RCODE_SERVFAIL, written=False, error=str(exc), template=t)
        targets: tuple[str, ...] = ()
        if q.qtype in (TYPE_A, TYPE_AAAA):
            targets = tuple(_target(rr) for rr in sections["answer"] if rr.rtype == TYPE_CNAME)
        return TemplateResult(
            t.rcode,
            written=True,
            answer=tuple(sections["answer"]),
            authority=tuple(sections["authority"]),
            additional=tuple(sections["additional"]),
            ederror=t.ederror,
            cname_targets=targets,
            template=t,
        )
    return None


def _target(rr: Record) -> str:
    target: dns.name.Name = getattr(rr.rdata, "target")  # noqa: B009 - CNAME rdata, untyped in dnspython
    return target.to_text()


def _execute(tpl: Template, data: GoStruct) -> Record:
    return parse_rr(tpl.execute(data))


def reply_wire(
    query: bytes | Msg, result: TemplateResult, upstream: Mapping[str, bytes] | None = None
) -> bytes:
    """The reply CoreDNS writes for a written result (``SetReply``, AA, the sections, EDE).

    ``upstream`` maps a name of ``result.cname_targets`` to the reply of its lookup; its answers are
    appended after the CNAME and its TC bit copied, as CoreDNS does. No OPT is added except for EDE:
    the server's usual EDNS handling (size and DO echo) applies afterwards, as CoreDNS's does.
    """
    req = query if isinstance(query, Msg) else from_wire(query)
    opcode_bits = req.flags & 0x7800
    flags = FLAG_QR | FLAG_AA | opcode_bits
    if opcode_bits == 0:
        flags |= req.flags & (FLAG_RD | FLAG_CD)
    msg = Msg(id=req.id, flags=flags, rcode=result.rcode, question=req.question[:1])
    for rr in result.answer:
        msg.answer.append(rr.copy())
        target = _target(rr) if rr.rtype == TYPE_CNAME else ""
        if upstream is not None and target in result.cname_targets:
            up_wire = upstream.get(target)
            if up_wire is not None:
                up = from_wire(up_wire)
                msg.flags = (msg.flags & ~FLAG_TC) | (up.flags & FLAG_TC)
                msg.answer.extend(r.copy() for r in up.answer)
    msg.authority = [rr.copy() for rr in result.authority]
    msg.additional = [rr.copy() for rr in result.additional]
    if result.ederror is not None:
        code, text = result.ederror
        options = [dns.edns.EDEOption(dns.edns.EDECode.make(code), text or None)]
        opt_rdata = dns.rdtypes.ANY.OPT.OPT(  # type: ignore[no-untyped-call]
            dns.rdataclass.RdataClass.make(EDE_UDP_SIZE), dns.rdatatype.OPT, options
        )
        msg.additional.append(Record(dns.name.root, TYPE_OPT, EDE_UDP_SIZE, EDNS_DO, opt_rdata))
    return msg.to_wire()

"""The template engine on real dnspython queries: CoreDNS's template_test.go tables and byte checks."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.plugins.template.engine import TemplateResult, reply_wire, resolve
from nodelocaldns.plugins.template.metrics import TemplateCounters
from nodelocaldns.plugins.template.setup import TemplateConfig, parse_all

IP_RE = "(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$"


def cfg(body: str, keys: str = ".") -> TemplateConfig:
    block = parse_corefile(f"{keys} {{\n{body}\n}}\n")[0]
    return parse_all(block.directives_named("template"), [k.zone for k in block.keys])


def query(name: str, rdtype: str = "A", rdclass: str = "IN", **kw: object) -> bytes:
    q = dns.message.make_query(name, rdtype, rdclass, **kw)  # type: ignore[arg-type]
    return q.to_wire()


def run(
    c: TemplateConfig, name: str, rdtype: str = "A", rdclass: str = "IN"
) -> tuple[TemplateResult | None, dns.message.Message | None]:
    wire = query(name, rdtype, rdclass)
    res = resolve(c, wire, "10.240.0.1")
    if res is None or not res.written:
        return res, None
    return res, dns.message.from_wire(reply_wire(wire, res))


def one(answer: str, *extra: str, match: str = IP_RE, rcode: str = "", fall: bool = True) -> TemplateConfig:
    lines = [f"  match {match}", f'  answer "{answer}"'] + [f"  {e}" for e in extra]
    if rcode:
        lines.append(f"  rcode {rcode}")
    if fall:
        lines.append("  fallthrough")
    return cfg("template ANY ANY {\n" + "\n".join(lines) + "\n}")


def test_rcode_servfail_is_not_written() -> None:
    res, _ = run(cfg("template ANY ANY {\n rcode SERVFAIL\n fallthrough\n}"), "test.invalid.")
    assert res is not None and (res.rcode, res.written) == (2, False)


def test_name_mismatch_falls_through() -> None:
    assert (
        run(one("{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"), "test.invalid.")[0]
        is None
    )


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ('{{ .Name }} 60 IN TXT \\"{{ index .Match 2 }}\\"', "index out of range: 2"),
        ('{{ .Name }} 60 IN TXT \\"{{ parseInt \\"gg\\" 16 8 }}\\"', 'parsing "gg": invalid syntax'),
        ("{{ .Name }}", "not a TTL"),
    ],
)
def test_broken_templates_servfail_and_count(answer: str, error: str) -> None:
    c = one(answer, match="[.]example[.]$")
    counters = TemplateCounters()
    res = resolve(c, query("test.example.", "ANY"), "10.0.0.1", server="dns://:53", counters=counters)
    assert res is not None and (res.rcode, res.written) == (2, False) and error in res.error
    failures = counters.rr_failures if "TTL" in error else counters.template_failures
    ((labels, n),) = failures.items()
    assert n == 1 and labels[:6] == ("dns://:53", ".", "", "IN", "ANY", "answer")
    assert labels[6].startswith("{{.Name}}")


@pytest.mark.parametrize("section", ["additional", "authority"])
def test_non_rr_in_other_sections(section: str) -> None:
    c = cfg(f'template ANY ANY {{\n match [.]example[.]$\n {section} "{{{{ .Name }}}}"\n fallthrough\n}}')
    res, _ = run(c, "test.example.", "ANY")
    assert res is not None and res.rcode == 2 and not res.written


def test_remote_ip() -> None:
    c = cfg('template IN A {\n answer "{{ .Name }} 60 IN A {{ .Remote }}"\n fallthrough\n}')
    _, reply = run(c, "test.example.")
    assert reply is not None and [str(r) for r in reply.answer[0]] == ["10.240.0.1"]


def test_domain_match_and_parseint() -> None:
    _, reply = run(
        one("{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"), "ip-10-95-12-8.example."
    )
    assert reply is not None and reply.answer[0].to_text() == "ip-10-95-12-8.example. 60 IN A 10.95.12.8"
    hexa = one(
        "{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}",
        match="^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$",
    )
    _, reply = run(hexa, "ip0a5f0c09.example.")
    assert reply is not None and [str(r) for r in reply.answer[0]] == ["10.95.12.9"]


def test_mx_with_additional_and_ns_authority() -> None:
    c = one(
        "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}",
        'additional "ns0.example. IN A 203.0.113.8"',
        'authority "example. IN NS ns0.example.com."',
    )
    _, reply = run(c, "ip-10-95-12-8.example.")
    assert reply is not None
    assert [r.rdtype for r in reply.answer] == [1] and [r.rdtype for r in reply.additional] == [1]
    assert reply.authority[0].to_text() == "example. 3600 IN NS ns0.example.com."  # default TTL 3600


def test_invalid_nxdomain_with_soa_answer_and_class_text() -> None:
    c = one(
        "invalid. 60 {{ .Class }} SOA a.invalid. b.invalid. (1 60 60 60 60)",
        match="[.]invalid[.]$",
        rcode="NXDOMAIN",
    )
    _, reply = run(c, "test.invalid.", "MX")
    assert (
        reply is not None
        and reply.rcode() == dns.rcode.NXDOMAIN
        and reply.answer[0].rdtype == dns.rdatatype.SOA
    )
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.QR and not reply.flags & dns.flags.RA


def test_ede_option_bytes() -> None:
    c = cfg(
        'template ANY ANY {\n rcode NXDOMAIN\n authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"\n'
        ' ederror 21 "Blocked due to RFC2606"\n}'
    )
    wire = query("test.invalid.")
    res = resolve(c, wire, "127.0.0.1")
    assert res is not None
    out = reply_wire(wire, res)
    reply = dns.message.from_wire(out)
    assert reply.edns == 0 and reply.payload == 4096 and reply.ednsflags & dns.flags.DO
    (ede,) = reply.options
    assert isinstance(ede, dns.edns.EDEOption) and (int(ede.code), ede.text) == (21, "Blocked due to RFC2606")
    # OPT RR at the end: root name, type 41, class 4096, TTL 0x00008000, one option 15.
    opt = (
        b"\x00\x00\x29\x10\x00\x00\x00\x80\x00"
        + (4 + 2 + 22).to_bytes(2, "big")
        + b"\x00\x0f\x00\x18\x00\x15"
    )
    assert out.endswith(opt + b"Blocked due to RFC2606")


def test_reply_header_mirrors_query() -> None:
    c = cfg("template IN AAAA {\n rcode NOERROR\n}")
    q = dns.message.make_query("Host.Example.", "AAAA", want_dnssec=False)
    q.flags |= dns.flags.CD
    wire = q.to_wire()
    res = resolve(c, wire, "127.0.0.1")
    assert res is not None
    out = reply_wire(wire, res)
    assert out[:2] == wire[:2]  # ID
    assert out[2:4] == (0x8000 | 0x0400 | 0x0100 | 0x0010).to_bytes(2, "big")  # QR AA RD CD, NOERROR
    assert out[4:12] == b"\x00\x01\x00\x00\x00\x00\x00\x00"
    assert out[12:] == wire[12 : 12 + len(out) - 12]  # the question as the client sent it (case kept)


def test_cname_targets_and_upstream_answers() -> None:
    c = cfg(
        'template IN ANY foogle.com {\n match "^foogle\\.com\\.$"\n answer "foogle.com 60 IN CNAME google.com"\n}'
    )
    wire = query("foogle.com.")
    res = resolve(c, wire, "127.0.0.1")
    assert res is not None and res.cname_targets == ("google.com.",)
    up = dns.message.make_response(dns.message.make_query("google.com.", "A"))
    up.answer.append(dns.rrset.from_text("google.com.", 300, "IN", "A", "142.250.1.1"))
    up.flags |= dns.flags.TC
    reply = dns.message.from_wire(reply_wire(wire, res, {"google.com.": up.to_wire()}))
    assert [r.to_text() for r in reply.answer] == [
        "foogle.com. 60 IN CNAME google.com.",
        "google.com. 300 IN A 142.250.1.1",
    ]
    assert reply.flags & dns.flags.TC
    assert resolve(c, query("foogle.com.", "MX"), "127.0.0.1").cname_targets == ()  # type: ignore[union-attr]


def test_multi_section_from_coredns() -> None:
    c = cfg(
        "template IN A {\n rcode REFUSED\n}\n"
        'template IN TXT {\n match "$^"\n rcode SERVFAIL\n fallthrough\n}\n'
        'template CH TXT coredns.invalid {\n answer "{{ .Name }} 60 CH TXT \\"test\\""\n}\n'
        "template IN A example {\n match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n"
        ' answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n fallthrough\n}\n'
        "template IN MX example {\n match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n"
        ' answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"\n additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n}',
        keys="test.:8053",
    )
    res, reply = run(c, "some.test.")
    assert res is not None and res.rcode == dns.rcode.REFUSED and reply is not None and not reply.answer
    assert run(c, "some.test.", "TXT")[0] is None  # falls through every template
    _, reply = run(c, "coredns.invalid.", "TXT", "CH")
    assert reply is not None and reply.answer[0].to_text() == 'coredns.invalid. 60 CH TXT "test"'
    _, reply = run(c, "ip-10-11-12-13.example.")
    assert reply is not None and reply.answer[0].rdtype == dns.rdatatype.A
    _, reply = run(c, "ip-10-11-12-13.example.", "MX")
    assert reply is not None and reply.answer[0].rdtype == dns.rdatatype.MX and len(reply.additional) == 1
    assert run(c, "something.example.")[0] is None
    res, _ = run(c, "something.example.", "MX")
    assert res is not None and (res.rcode, res.written) == (2, False)


def test_matches_counted_with_coredns_labels() -> None:
    counters = TemplateCounters()
    c = cfg("template ANY ANY invalid {\n rcode NXDOMAIN\n}")
    resolve(c, query("x.invalid.", "ANY", "ANY"), "127.0.0.1", server="dns://:53", counters=counters)
    assert counters.matches == {("dns://:53", "invalid.", "", "ANY", "ANY"): 1}


def test_question_and_meta_data() -> None:
    c = cfg(
        'template IN TXT {\n answer "{{ .Name }} 60 IN TXT \\"{{ .Question.Name }}\\" \\"{{ .Meta \\"x\\" }}\\" \\"{{ .Zone }}\\""\n}'
    )
    _, reply = run(c, "Mixed.Case.", "TXT")
    assert reply is not None and reply.answer[0].to_text() == 'mixed.case. 60 IN TXT "Mixed.Case." "" "."'

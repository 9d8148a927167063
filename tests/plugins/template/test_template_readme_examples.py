"""Every Corefile in CoreDNS's plugin/template/README.md parses, and runs as documented.

The README followed is the one after v1.14.7 (it already shows ``var``/``expr``, which that release
lacks): that example is refused with file:line, as docs/compatibility.md says. To run them here
8.8.8.8 is a local unbound.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.rcode
import pytest

from nodelocaldns.errors import CorefileError
from support.readme import localize, plans
from support.server import serve
from support.upstreams import UpstreamServer

NXDOMAIN_ALL = """\
. {
    template ANY ANY {
      rcode NXDOMAIN
    }
}
"""
INVALID = """\
. {
    forward . 8.8.8.8

    template ANY ANY invalid {
      rcode NXDOMAIN
      authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
      ederror 21 "Blocked according to RFC2606"
    }
}
"""
SEARCH_ZONE = """\
. {
    forward . 8.8.8.8

    template IN ANY example.com.dc1.example.com {
      rcode NXDOMAIN
      authority "{{ .Zone }} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"
    }
}
"""
SEARCH_REGEX = """\
. {
    forward . 8.8.8.8

    template IN ANY example.com {
      match "example\\.com\\.(dc1\\.example\\.com\\.)$"
      rcode NXDOMAIN
      authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.{{ index .Match 1 }} (1 60 60 60 60)"
      fallthrough
    }
}
"""
A_PTR = """\
. {
    forward . 8.8.8.8

    # ip-a-b-c-d.example A a.b.c.d

    template IN A example {
      match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }

    # d.c.b.a.in-addr.arpa PTR ip-a-b-c-d.example

    template IN PTR in-addr.arpa {
      match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
      answer "{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."
    }
}
"""
VAR_EXPR = """\
. {
    forward . 8.8.8.8

    template IN A example.com {
      match ^(?P<ip>[0-9]{1,3}(-[0-9]{1,3}){3})[.](?P<id>[a-z2-7]{26})[.]example[.]com[.]$
      var ip replace(group('ip'), '-', '.')
      expr "any(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16'], incidr(ip, #))"
      answer "{{ .Name }} 60 IN A {{ .Var.ip }}"
      fallthrough
    }
}
"""
PARSE_INT = """\
. {
    forward . 8.8.8.8

    template IN A example {
      match "^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$"
      answer "{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}"
      fallthrough
    }
}
"""
MULTI = """\
. {
    forward . 8.8.8.8

    template IN A example {
      match "^ip-(?P<a>10)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]dc[.]example[.]$"
      match "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.](?P<c>[0-9]*)[.](?P<d>[0-9]*)[.]ext[.]example[.]$"
      answer "{{ .Name }} 60 IN A {{ .Group.a}}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }
}
"""
A_MX = """\
. {
    forward . 8.8.8.8

    template IN A example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }
    template IN MX example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
      additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }
}
"""
AUTHORITY = """\
. {
    forward . 8.8.8.8

    template IN A example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      authority  "example. 60 IN NS ns0.example."
      authority  "example. 60 IN NS ns1.example."
      additional "ns0.example. 60 IN A 203.0.113.8"
      additional "ns1.example. 60 IN A 198.51.100.8"
      fallthrough
    }
    template IN MX example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
      additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      authority  "example. 60 IN NS ns0.example."
      authority  "example. 60 IN NS ns1.example."
      additional "ns0.example. 60 IN A 203.0.113.8"
      additional "ns1.example. 60 IN A 198.51.100.8"
      fallthrough
    }
}
"""
FOOGLE = """\
. {
  template IN ANY foogle.com {
    match "^foogle\\.com\\.$"
    answer "foogle.com 60 IN CNAME google.com"
  }
  forward . 8.8.8.8
}
"""
RUNNABLE = (
    NXDOMAIN_ALL,
    INVALID,
    SEARCH_ZONE,
    SEARCH_REGEX,
    A_PTR,
    PARSE_INT,
    MULTI,
    A_MX,
    AUTHORITY,
    FOOGLE,
)

ZONES = {
    "example.com.": ["www.example.com. 30 IN A 198.18.7.1"],
    "google.com.": ["google.com. 30 IN A 198.18.8.8"],
    "example.": ["plain.example. 30 IN A 198.18.7.2"],
}


@pytest.mark.parametrize("corefile", RUNNABLE)
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def test_the_var_expr_example_is_refused_with_its_line() -> None:
    with pytest.raises(CorefileError) as e:
        plans(VAR_EXPR)
    assert e.value.line == 6 and "var is not supported" in str(e.value)


def rr(r: object, section: str = "answer") -> list[str]:
    return [rs.to_text() for rs in getattr(r, section)]


@pytest.fixture
def up(make_unbound: Callable[..., UpstreamServer]) -> UpstreamServer:
    return make_unbound(ZONES)


def test_nxdomain_for_everything() -> None:
    with serve(localize(NXDOMAIN_ALL)) as s:
        for qtype in ("A", "AAAA", "TXT"):
            r = s.query("anything.test.", qtype)
            assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer


def test_invalid_is_nxdomain_with_soa_and_ede(up: UpstreamServer) -> None:
    with serve(localize(INVALID, up.address)) as s:
        r = s.query("host.invalid.", "A", use_edns=0)
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert rr(r, "authority") == ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
        assert [(o.code, o.text) for o in r.options] == [(21, "Blocked according to RFC2606")]
        assert rr(s.query("www.example.com.", "A")) == ["www.example.com. 30 IN A 198.18.7.1"]


@pytest.mark.parametrize(
    ("corefile", "soa"),
    [(SEARCH_ZONE, "example.com.dc1.example.com. 60 IN SOA ns.example.com. hostmaster.example.com."),
     (SEARCH_REGEX, "dc1.example.com. 60 IN SOA ns.dc1.example.com. hostmaster.dc1.example.com.")],
)  # fmt: skip
def test_search_domain_completions_are_blocked(corefile: str, soa: str, up: UpstreamServer) -> None:
    with serve(localize(corefile, up.address)) as s:
        r = s.query("www.example.com.dc1.example.com.", "A")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert rr(r, "authority") == [soa + " 1 60 60 60 60"]
        assert rr(s.query("www.example.com.", "A")) == ["www.example.com. 30 IN A 198.18.7.1"]


def test_a_and_ptr_for_ip_names(up: UpstreamServer) -> None:
    with serve(localize(A_PTR, up.address)) as s:
        assert rr(s.query("ip-10-1-2-3.example.", "A")) == ["ip-10-1-2-3.example. 60 IN A 10.1.2.3"]
        assert rr(s.query("sub.ip-10-1-2-3.example.", "A")) == ["sub.ip-10-1-2-3.example. 60 IN A 10.1.2.3"]
        assert rr(s.query("3.2.1.10.in-addr.arpa.", "PTR")) == [
            "3.2.1.10.in-addr.arpa. 60 IN PTR ip-10-1-2-3.example."
        ]
        assert rr(s.query("plain.example.", "A")) == ["plain.example. 30 IN A 198.18.7.2"]  # fallthrough


def test_parse_int_and_multiple_patterns(up: UpstreamServer) -> None:
    with serve(localize(PARSE_INT, up.address)) as s:
        assert rr(s.query("ip0a7b7b7b.example.", "A")) == ["ip0a7b7b7b.example. 60 IN A 10.123.123.123"]
    with serve(localize(MULTI, up.address)) as s:
        assert rr(s.query("ip-10-1-2-3.dc.example.", "A")) == ["ip-10-1-2-3.dc.example. 60 IN A 10.1.2.3"]
        assert rr(s.query("1.2.3.4.ext.example.", "A")) == ["1.2.3.4.ext.example. 60 IN A 1.2.3.4"]


@pytest.mark.parametrize("corefile", [A_MX, AUTHORITY])
def test_a_and_mx_with_additional_and_authority(corefile: str, up: UpstreamServer) -> None:
    with serve(localize(corefile, up.address)) as s:
        mx = s.query("ip-10-1-2-3.example.", "MX")
        assert rr(mx) == ["ip-10-1-2-3.example. 60 IN MX 10 ip-10-1-2-3.example."]
        assert "ip-10-1-2-3.example. 60 IN A 10.1.2.3" in rr(mx, "additional")
        a = s.query("ip-10-1-2-3.example.", "A")
        if corefile is AUTHORITY:
            assert rr(a, "authority") == ["example. 60 IN NS ns0.example.\nexample. 60 IN NS ns1.example."]
            assert "ns0.example. 60 IN A 203.0.113.8" in rr(a, "additional")
        else:
            assert not a.authority


def test_fabricated_cname_carries_the_upstream_record(up: UpstreamServer) -> None:
    with serve(localize(FOOGLE, up.address)) as s:
        assert rr(s.query("foogle.com.", "A")) == [
            "foogle.com. 60 IN CNAME google.com.",
            "google.com. 30 IN A 198.18.8.8",
        ]
        # No record of that type upstream: the CNAME alone.
        assert rr(s.query("foogle.com.", "AAAA")) == ["foogle.com. 60 IN CNAME google.com."]

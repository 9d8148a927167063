"""template through a real ``nodelocaldns serve``: dnspython clients, a real unbound for CNAME targets
and fallthrough, EDE on the wire, the coredns_template_* counters on /metrics."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

from support.ports import free_port
from support.server import serve
from support.upstreams import UpstreamServer


def texts(r: dns.message.Message, section: str = "answer") -> list[str]:
    return [rrset.to_text() for rrset in getattr(r, section)]


def samples(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    return [
        (dict(smp.labels), smp.value)
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
        if smp.name == name
    ]


def test_no_aaaa_answers_nodata_and_leaves_a_to_the_upstream(unbound_upstream: UpstreamServer) -> None:
    """The node-local-dns chart's ``noIPv6Lookups``: AAAA never leaves the node."""
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    cache 30
    template IN AAAA . {{
        rcode NOERROR
    }}
    forward . {unbound_upstream.address}
}}
"""
    with serve(corefile) as s:
        unbound_upstream.reset_queries()
        for _ in range(2):  # the second one is a cache hit
            r = s.query("web.default.svc.cluster.local.", "AAAA")
            assert r.rcode() == dns.rcode.NOERROR and not r.answer and not r.authority
            assert r.flags & dns.flags.AA
        assert texts(s.query("web.default.svc.cluster.local.", "A"))
        unbound_upstream.wait_for_queries(1)
        assert unbound_upstream.query_count(qtype="AAAA") == 0
        assert unbound_upstream.query_count("web.default.svc.cluster.local.", "A") == 1


def test_cname_target_is_looked_up_through_the_chain(unbound_upstream: UpstreamServer) -> None:
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    template IN ANY alias.test {{
        match "^www\\.alias\\.test\\.$"
        answer "www.alias.test 60 IN CNAME web.default.svc.cluster.local"
    }}
    forward . {unbound_upstream.address}
}}
"""
    with serve(corefile) as s:
        r = s.query("www.alias.test.", "A", use_edns=0, want_dnssec=True)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        rrsets = {(rs.name.to_text(), rs.rdtype): rs for rs in r.answer}
        assert rrsets[("www.alias.test.", 5)][0].target.to_text() == "web.default.svc.cluster.local."
        assert sorted(rd.to_text() for rd in rrsets[("web.default.svc.cluster.local.", 1)]) == [
            "198.18.1.1",
            "198.18.1.2",
        ]
        assert r.ednsflags & dns.flags.DO  # the client's DO echoed
        # The target was asked with the client's EDNS (CoreDNS's state.NewWithQuestion keeps it).
        (q,) = [q for q in unbound_upstream.queries() if q.name == "web.default.svc.cluster.local."]
        assert q.qtype == "A"
        # TXT is not A/AAAA: the CNAME alone.
        txt = s.query("www.alias.test.", "TXT")
        assert [rs.rdtype for rs in txt.answer] == [5]
        assert unbound_upstream.query_count(qtype="TXT") == 0


def test_fallthrough_rcode_servfail_and_regex_groups(unbound_upstream: UpstreamServer) -> None:
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    template IN A cluster.local {{
        match "^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)\\.cluster\\.local\\.$"
        answer "{{{{ .Name }}}} 30 IN A 10.0.{{{{ .Group.a }}}}.{{{{ .Group.b }}}}"
        fallthrough
    }}
    template IN A nofall.test {{
        match "^x\\."
        answer "{{{{ .Name }}}} 30 IN A 192.0.2.1"
    }}
    template IN TXT failing.test {{
        rcode SERVFAIL
    }}
    forward . {unbound_upstream.address}
}}
"""
    with serve(corefile) as s:
        assert texts(s.query("ip-7-9.cluster.local.", "A")) == ["ip-7-9.cluster.local. 30 IN A 10.0.7.9"]
        # In the zone, no regex match, fallthrough: the upstream answers.
        assert [rd.to_text() for rd in s.query("kubernetes.default.svc.cluster.local.", "A").answer[0]] == [
            "198.18.0.1"
        ]
        # No fallthrough: a name that matches no regex is SERVFAIL, never forwarded.
        assert texts(s.query("x.nofall.test.", "A")) == ["x.nofall.test. 30 IN A 192.0.2.1"]
        assert s.query("y.nofall.test.", "A").rcode() == dns.rcode.SERVFAIL
        assert unbound_upstream.query_count("y.nofall.test.") == 0
        assert s.query("failing.test.", "TXT").rcode() == dns.rcode.SERVFAIL
        # Another type in a template's zone: the template does not match that query; on to forward.
        unbound_upstream.reset_queries()
        assert s.query("other.failing.test.", "A").rcode() != dns.rcode.SERVFAIL
        unbound_upstream.wait_for_queries(1)
        assert unbound_upstream.query_count("other.failing.test.", "A") == 1


def test_ederror_reaches_the_client_with_and_without_edns() -> None:
    corefile = """.:{PORT} {
    bind 127.0.0.1
    template ANY ANY invalid {
        rcode NXDOMAIN
        authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
        ederror 21 "Blocked according to RFC2606"
    }
}
"""
    with serve(corefile) as s:
        r = s.query("foo.invalid.", "A", use_edns=0, payload=1400)
        assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
        assert texts(r, "authority") == ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
        (ede,) = r.options
        assert isinstance(ede, dns.edns.EDEOption)
        assert ede.code == 21 and ede.text == "Blocked according to RFC2606"
        assert r.payload == 1400 and not r.ednsflags & dns.flags.DO  # the client's size and DO
        # No EDNS in the query: CoreDNS's own OPT (4096, DO) carries the EDE.
        bare = s.query("foo.invalid.", "A", use_edns=False)
        assert bare.edns == 0 and bare.payload == 4096 and bare.ednsflags & dns.flags.DO
        assert [o.code for o in bare.options] == [21]
        tcp = s.query("foo.invalid.", "MX", tcp=True, use_edns=0)
        assert tcp.rcode() == dns.rcode.NXDOMAIN and [o.code for o in tcp.options] == [21]


def test_metrics_count_matches_and_failures() -> None:
    mport = free_port()
    corefile = f""".:{{PORT}} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{mport}
    template IN A example {{
        match "^(?P<n>[a-z]+)\\.example\\.$"
        answer "{{{{ .Name }}}} 60 IN A {{{{ .Group.n }}}}"
    }}
    template IN TXT example {{
        answer "{{{{ index .Match 5 }}}} 60 IN TXT x"
    }}
    template IN AAAA example {{
        answer "{{{{ .Name }}}} 60 IN AAAA fd00::1"
    }}
}}
"""
    with serve(corefile) as s:
        server = f"dns://127.0.0.1:{s.port}"
        assert s.query("good.example.", "AAAA").rcode() == dns.rcode.NOERROR
        assert s.query("good.example.", "AAAA").rcode() == dns.rcode.NOERROR
        assert s.query("bad.example.", "A").rcode() == dns.rcode.SERVFAIL  # "bad" is not an address
        assert s.query("t.example.", "TXT").rcode() == dns.rcode.SERVFAIL  # index out of range
        matches = {(ls["type"], v) for ls, v in samples(mport, "coredns_template_matches_total")}
        assert matches == {("AAAA", 2.0), ("A", 1.0), ("TXT", 1.0)}
        (m,) = [ls for ls, _v in samples(mport, "coredns_template_matches_total") if ls["type"] == "AAAA"]
        assert m == {"server": server, "zone": "example.", "view": "", "class": "IN", "type": "AAAA"}
        (rr,) = samples(mport, "coredns_template_rr_failures_total")
        assert rr[1] == 1.0 and rr[0]["section"] == "answer" and rr[0]["type"] == "A"
        assert rr[0]["template"] == "{{.Name}} 60 IN A {{.Group.n}}"  # Go's parse tree, as CoreDNS labels it
        (tf,) = samples(mport, "coredns_template_template_failures_total")
        assert tf[1] == 1.0 and tf[0]["type"] == "TXT" and tf[0]["section"] == "answer"


def test_a_failing_template_is_logged_by_errors() -> None:
    corefile = """.:{PORT} {
    bind 127.0.0.1
    errors
    template IN TXT example {
        answer "{{ index .Match 5 }} 60 IN TXT x"
    }
}
"""
    with serve(corefile) as s:
        assert s.query("t.example.", "TXT").rcode() == dns.rcode.SERVFAIL
        log = s.stderr()
    assert "[ERROR] plugin/errors: 2 t.example. TXT: " in log


def test_bad_template_arguments_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "Corefile"
    f.write_text(
        '.:53 {\n    template IN A {\n        match "("\n    }\n}\n'
        ".:54 {\n    template IN BOGUS\n}\n"
        '.:55 {\n    template IN A {\n        answer "{{ .Name "\n    }\n}\n'
    )
    out = subprocess.run([sys.executable, "-m", "nodelocaldns", "check", "--corefile", str(f)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 1
    assert f"{f}:3 (directive 'match'): could not parse regex: (" in out.stderr
    assert f"{f}:7 (directive 'template'): invalid RR type BOGUS" in out.stderr
    assert f"{f}:11 (directive 'answer'): could not compile template" in out.stderr

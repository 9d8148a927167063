"""``template`` setup: CoreDNS's setup_test.go table, file:line errors, and every README Corefile."""

from __future__ import annotations

import pytest

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.template.setup import TemplateConfig, parse, parse_all

SERVER_ZONES = ("domain.com.", "dynamic.domain.com.")


def config(text: str) -> TemplateConfig:
    block = parse_corefile("domain.com.:8053 dynamic.domain.com.:8053 {\n" + text + "\n}\n", "Corefile")[0]
    return parse_all(block.directives_named("template"), [k.zone for k in block.keys])


# (directive text, should fail) - CoreDNS TestSetupParse, in its order.
SETUP_TABLE = [
    ("template", True),
    ("template X", True),
    ("template ANY", True),
    ("template ANY X", True),
    ("template ANY ANY .* {\n notavailable\n}", True),
    ("template ANY ANY {\n answer\n}", True),
    ("template ANY ANY {\n additional\n}", True),
    ("template ANY ANY {\n rcode\n}", True),
    ("template ANY ANY {\n rcode UNDEFINED\n}", True),
    ('template ANY ANY {\n answer "{{"\n}', True),
    ('template ANY ANY {\n additional "{{"\n}', True),
    ('template ANY ANY {\n authority "{{"\n}', True),
    ('template ANY ANY {\n answer "{{ notAFunction }}"\n}', True),
    (
        'template ANY ANY {\n answer "{{ parseInt }}"\n additional "{{ parseInt }}"\n authority "{{ parseInt }}"\n}',
        False,
    ),
    # CoreDNS accepts `template ANY ANY (?P<x>` (it silently drops a zone it cannot normalize); we
    # refuse an invalid zone argument everywhere (docs/compatibility.md).
    ("template ANY ANY (?P<x>", True),
    ("template ANY ANY {\n\n}", False),
    (
        "template ANY A example.com {\n match ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]com\n"
        ' answer "{{ .Name }} A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Grup.d }}."\n fallthrough\n}',
        False,
    ),
    (
        "template ANY AAAA example.com {\n match ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]com\n"
        ' authority "example.com 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"\n fallthrough\n}',
        False,
    ),
    (
        'template IN ANY example.com {\n match "[.](example[.]com[.]dc1[.]example[.]com[.])$"\n rcode NXDOMAIN\n'
        ' authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.example.com (1 60 60 60 60)"\n'
        " fallthrough example.com\n}",
        False,
    ),
    (
        "template ANY ANY invalid {\n rcode NXDOMAIN\n"
        ' authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"\n'
        ' ederror 21 "Blocked according to RFC2606"\n}',
        False,
    ),
    ('template ANY ANY invalid {\n rcode NXDOMAIN\n ederror invalid "Blocked according to RFC2606"\n}', True),
    ("template ANY ANY invalid {\n rcode NXDOMAIN\n ederror too many arguments\n}", True),
]


@pytest.mark.parametrize(("text", "should_fail"), SETUP_TABLE)
def test_coredns_setup_table(text: str, should_fail: bool) -> None:
    if should_fail:
        with pytest.raises(CorefileError) as e:
            config(text)
        assert e.value.filename == "Corefile" and e.value.line >= 2
    else:
        assert config(text).templates


def test_large_regex_is_refused() -> None:
    with pytest.raises(CorefileError, match="too long"):
        config("template ANY A example.com {\n match " + "a" * 10001 + "\n}")


@pytest.mark.parametrize(
    ("body", "line", "why"),
    [
        ("template IN A {\n match (a)\\1\n}", 3, "backreferences"),
        ("template IN A {\n match (?=x)\n}", 3, "lookahead"),
        ("template IN A {\n match \\pL\n}", 3, "Unicode class"),
        ("template IN A {\n match [[:^alpha:]]\n}", 3, "negated POSIX"),
        ("template IN A {\n match a{,3}\n}", 3, "literal in RE2"),
        ("template IN A {\n match a(?i)b\n}", 3, "inline flags"),
        ("template IN A {\n\n rcode NXDOMAIN extra\n}", 4, "exactly one"),
        ("template IN A {\n var ip 1\n}", 3, "only in CoreDNS after v1.14.7"),
        ('template IN A {\n expr "true"\n}', 3, "only in CoreDNS after v1.14.7"),
        ("template in A", 2, "invalid query class in"),
        ("template IN a", 2, "invalid RR type a"),
        ("template IN TYPE65 {\n}", 2, "invalid RR type"),
        ('template IN A {\n answer "{{ if .Name }}x{{ end }}"\n}', 3, "not supported"),
        ("template IN A {\n ederror 70000\n}", 3, "0-65535"),
    ],
)
def test_errors_name_file_and_line(body: str, line: int, why: str) -> None:
    with pytest.raises(CorefileError, match=why) as e:
        config(body)
    assert (e.value.filename, e.value.line) == ("Corefile", line)


def test_defaults_and_zones() -> None:
    (t,) = config("template IN A {\n}").templates
    assert t.zones == SERVER_ZONES and [r.source for r in t.regexes] == [".*"] and t.fallthrough is None
    (t,) = config("template ANY ANY Example.ORG in-addr.arpa {\n fallthrough a.example.org\n}").templates
    assert t.zones == ("example.org.", "in-addr.arpa.") and t.fallthrough == ("a.example.org.",)
    (t,) = config("template CH TXT {\n fallthrough\n upstream 1.2.3.4\n}").templates
    assert (t.qclass, t.qtype, t.fallthrough) == (3, 16, (".",))


def test_re2_named_group_spelling_is_translated() -> None:
    (t,) = config("template IN A {\n match ^(?<host>[a-z]+)[.][[:digit:]]+[.]$\n}").templates
    m = t.regexes[0].compiled.search("web.42.")
    assert m is not None and m.group("host") == "web"
    assert t.regexes[0].compiled.search("web.٤٢.") is None  # RE2 classes are ASCII-only


def test_multiple_directives_keep_file_order() -> None:
    cfg = config("template IN A a.example {\n}\ntemplate IN MX b.example {\n}")
    assert [t.zones for t in cfg.templates] == [("a.example.",), ("b.example.",)]
    assert cfg.zones == ("a.example.", "b.example.")
    assert [t.line for t in cfg.templates] == [2, 4]


def test_parse_single_directive() -> None:
    d = parse_corefile(".:53 {\n template IN AAAA {\n rcode NOERROR\n }\n}\n")[0].directives[0]
    t = parse(d)
    assert (t.qtype, t.rcode, t.zones) == (28, 0, (".",))


# Every Corefile in CoreDNS's plugin/template/README.md (v1.14.7), in order.
README_EXAMPLES = [
    ". {\n    template ANY ANY {\n      rcode NXDOMAIN\n    }\n}",
    '. {\n    forward . 8.8.8.8\n\n    template ANY ANY invalid {\n      rcode NXDOMAIN\n      authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"\n      ederror 21 "Blocked according to RFC2606"\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN ANY example.com.dc1.example.com {\n      rcode NXDOMAIN\n      authority "{{ .Zone }} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN ANY example.com {\n      match "example\\.com\\.(dc1\\.example\\.com\\.)$"\n      rcode NXDOMAIN\n      authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.{{ index .Match 1 }} (1 60 60 60 60)"\n      fallthrough\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    # ip-a-b-c-d.example A a.b.c.d\n\n    template IN A example {\n      match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n      answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      fallthrough\n    }\n\n    # d.c.b.a.in-addr.arpa PTR ip-a-b-c-d.example\n\n    template IN PTR in-addr.arpa {\n      match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$\n      answer "{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN A example {\n      match "^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$"\n      answer "{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}"\n      fallthrough\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN A example {\n      match "^ip-(?P<a>10)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]dc[.]example[.]$"\n      match "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.](?P<c>[0-9]*)[.](?P<d>[0-9]*)[.]ext[.]example[.]$"\n      answer "{{ .Name }} 60 IN A {{ .Group.a}}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      fallthrough\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN A example {\n      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n      answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      fallthrough\n    }\n    template IN MX example {\n      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"\n      additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      fallthrough\n    }\n}',
    '. {\n    forward . 8.8.8.8\n\n    template IN A example {\n      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n      answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      authority  "example. 60 IN NS ns0.example."\n      authority  "example. 60 IN NS ns1.example."\n      additional "ns0.example. 60 IN A 203.0.113.8"\n      additional "ns1.example. 60 IN A 198.51.100.8"\n      fallthrough\n    }\n    template IN MX example {\n      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$\n      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"\n      additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"\n      authority  "example. 60 IN NS ns0.example."\n      authority  "example. 60 IN NS ns1.example."\n      additional "ns0.example. 60 IN A 203.0.113.8"\n      additional "ns1.example. 60 IN A 198.51.100.8"\n      fallthrough\n    }\n}',
    '. {\n  template IN ANY foogle.com {\n    match "^foogle\\.com\\.$"\n    answer "foogle.com 60 IN CNAME google.com"\n  }\n  forward . 8.8.8.8\n}',
]

# The README's "HTTPS on LAN" example uses var/expr, which no released CoreDNS has (added after v1.14.7).
README_UNRELEASED = ". {\n    forward . 8.8.8.8\n\n    template IN A example.com {\n      match ^(?P<ip>[0-9]{1,3}(-[0-9]{1,3}){3})[.](?P<id>[a-z2-7]{26})[.]example[.]com[.]$\n      var ip replace(group('ip'), '-', '.')\n      expr \"any(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16'], incidr(ip, #))\"\n      answer \"{{ .Name }} 60 IN A {{ .Var.ip }}\"\n      fallthrough\n    }\n}"


def readme_config(text: str) -> TemplateConfig:
    block = parse_corefile(text + "\n", "README.md")[0]
    return parse_all(block.directives_named("template"), [k.zone for k in block.keys])


@pytest.mark.parametrize("text", README_EXAMPLES)
def test_readme_examples_parse(text: str) -> None:
    assert readme_config(text).templates


def test_readme_unreleased_var_expr_example_is_refused_clearly() -> None:
    with pytest.raises(CorefileError, match="var is not supported") as e:
        readme_config(README_UNRELEASED)
    assert e.value.line == 6

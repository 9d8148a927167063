"""``rewrite`` setup: CoreDNS's TestNewRule/TTL/rcode tables, file:line errors, every README snippet."""

from __future__ import annotations

import pytest

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.rewrite import edns0 as e
from nodelocaldns.plugins.rewrite import rewriters as rw
from nodelocaldns.plugins.rewrite import rules as r
from nodelocaldns.plugins.rewrite.setup import RewriteConfig, RuleError, new_rule, parse_all

N, T, C, TTL, RC = r.NameRule, r.TypeRule, r.ClassRule, r.TTLRule, r.RcodeRule
L, V, NS, SN = e.Edns0LocalRule, e.Edns0VariableRule, e.Edns0NsidRule, e.Edns0SubnetRule

# CoreDNS TestNewRule: (words, expected rule class or None for an error).
NEW_RULE = [
    ([], None), (["foo"], None), (["name"], None), (["name", "a.com"], None),
    (["name", "a.com", "b.com", "c.com"], None),
    (["name", "a.com", "b.com"], N), (["name", "exact", "a.com", "b.com"], N),
    (["name", "prefix", "a.com", "b.com"], N), (["name", "suffix", "a.com", "b.com"], N),
    (["name", "substring", "a.com", "b.com"], N), (["name", "regex", "([a])\\.com", "new-{1}.com"], N),
    (["name", "regex", "([a]\\.com", "new-{1}.com"], None),
    (["name", "regex", "(dns)\\.(core)\\.(rocks)", "{2}.{1}.{3}", "answer", "name", "(core)\\.(dns)\\.(rocks)", "{2}.{1}.{3}"], N),
    (["name", "regex", "(adns)\\.(core)\\.(rocks)", "{2}.{1}.{3}", "answer", "name", "(core)\\.(adns)\\.(rocks)", "{2}.{1}.{3}", "too.long", "way.too.long"], None),
    (["name", "regex", "(bdns)\\.(core)\\.(rocks)", "{2}.{1}.{3}", "NoAnswer", "name", "(core)\\.(bdns)\\.(rocks)", "{2}.{1}.{3}"], None),
    (["name", "regex", "(cdns)\\.(core)\\.(rocks)", "{2}.{1}.{3}", "answer", "ttl", "(core)\\.(cdns)\\.(rocks)", "{2}.{1}.{3}"], None),
    (["name", "regex", "(ddns)\\.(core)\\.(rocks)", "{2}.{1}.{3}", "answer", "name", "\\xecore\\.(ddns)\\.(rocks)", "{2}.{1}.{3}"], None),  # Go: invalid UTF-8; here: 3 groups used, 2 defined
    (["name", "substring", "fcore.dns.rocks", "dns.fcore.rocks", "answer", "name", "(fcore)\\.(dns)\\.(rocks)", "{2}.{1}.{3}"], N),
    (["name", "substring", "a.com", "b.com", "c.com"], None),
    (["type"], None), (["type", "a"], None), (["type", "any", "a", "a"], None), (["type", "any", "a"], T),
    (["type", "XY", "WV"], None), (["type", "ANY", "WV"], None),
    (["class"], None), (["class", "IN"], None), (["class", "ch", "in", "in"], None), (["class", "ch", "in"], C),
    (["class", "XY", "WV"], None), (["class", "IN", "WV"], None),
    (["edns0"], None), (["edns0", "unknown-rule-type", "set"], None), (["edns0", "unknown-rule-type", "unset"], None),
    (["edns0", "local"], None), (["edns0", "local", "set"], None), (["edns0", "local", "set", "0xffee"], None),
    (["edns0", "local", "set", "invalid-uint", "abcdefg"], None),
    (["edns0", "local", "set", "65518", "abcdefg"], L), (["edns0", "local", "set", "0xffee", "abcdefg"], L),
    (["edns0", "local", "set", "0xffee", "abcdefg", "revert"], L), (["edns0", "local", "append", "0xffee", "abcdefg"], L),
    (["edns0", "local", "append", "0xffee", "abcdefg", "revert"], L), (["edns0", "local", "replace", "0xffee", "abcdefg"], L),
    (["edns0", "local", "replace", "0xffee", "abcdefg", "revert"], L), (["edns0", "local", "unset", "0xffee"], L),
    (["edns0", "local", "unset", "0xffee", "abcdefg"], None), (["edns0", "local", "unset", "0xffee", "revert"], None),
    (["edns0", "local", "foo", "0xffee", "abcdefg"], None), (["edns0", "local", "set", "0xffee", "0xabcdefg"], None),
    (["edns0", "nsid", "set", "junk"], None), (["edns0", "nsid", "set"], NS), (["edns0", "nsid", "set", "revert"], NS),
    (["edns0", "nsid", "append"], NS), (["edns0", "nsid", "append", "revert"], NS), (["edns0", "nsid", "replace"], NS),
    (["edns0", "nsid", "replace", "revert"], NS), (["edns0", "nsid", "unset"], NS), (["edns0", "nsid", "unset", "revert"], None),
    (["edns0", "nsid", "foo"], None),
    (["edns0", "local", "set", "invalid-uint", "{qname}"], None), (["edns0", "local", "set", "0xffee", "{dummy}"], None),
    *[(["edns0", "local", act, "0xffee", var], V) for act in ("set", "append", "replace") for var in e.VARIABLES],
    (["edns0", "local", "set", "0xffee", "{server_port}", "revert"], V),
    (["edns0", "local", "append", "0xffee", "{dummy}"], None), (["edns0", "local", "replace", "0xffee", "{dummy}"], None),
    (["edns0", "subnet", "set", "-1", "56"], None), (["edns0", "subnet", "set", "24", "-56"], None),
    (["edns0", "subnet", "set", "33", "56"], None), (["edns0", "subnet", "set", "24", "129"], None),
    (["edns0", "subnet", "set", "24", "56"], SN), (["edns0", "subnet", "set", "24", "56", "revert"], SN),
    (["edns0", "subnet", "append", "24", "56"], SN), (["edns0", "subnet", "append", "24", "56", "72"], None),
    (["edns0", "subnet", "append", "24", "56", "revert"], SN), (["edns0", "subnet", "replace", "24", "56"], SN),
    (["edns0", "subnet", "replace", "24", "56", "revert"], SN), (["edns0", "subnet", "unset"], SN),
    (["edns0", "subnet", "unset", "24", "56"], None), (["edns0", "subnet", "unset", "revert"], None),
    (["unknown-action", "name", "a.com", "b.com"], None), (["stop", "name", "a.com", "b.com"], N),
    (["continue", "name", "a.com", "b.com"], N), (["unknown-action", "type", "any", "a"], None),
    (["stop", "type", "any", "a"], T), (["continue", "type", "any", "a"], T),
    (["unknown-action", "class", "ch", "in"], None), (["stop", "class", "ch", "in"], C), (["continue", "class", "ch", "in"], C),
    (["stop", "edns0", "local", "set", "0xffee", "{some-plugin/some-label}"], V),
    (["continue", "edns0", "subnet", "unset"], SN),
]  # fmt: skip


@pytest.mark.parametrize(("words", "kind"), NEW_RULE)
def test_coredns_new_rule_table(words: list[str], kind: type | None) -> None:
    if kind is None:
        with pytest.raises(RuleError):
            new_rule(words)
    else:
        rule = new_rule(words)
        assert isinstance(rule, kind)
        assert rule.mode == ("continue" if words[0] == "continue" else "stop")


# CoreDNS TestNewTTLRule (args after "ttl"), and the README's ranges.
TTL_TABLE = [
    (["srv1.coredns.rocks", "10"], (10, 10)), (["exact", "srv1.coredns.rocks", "15"], (15, 15)),
    (["prefix", "coredns.rocks", "20"], (20, 20)), (["suffix", "srv1", "25"], (25, 25)),
    (["substring", "coredns", "30"], (30, 30)), (["regex", "(srv1)\\.(coredns)\\.(rocks)", "35"], (35, 35)),
    (["srv1.coredns.rocks", "12345678901234567890"], None), (["srv1.coredns.rocks", "coredns.rocks"], None),
    (["srv1.coredns.rocks", "#1"], None), (["range.coredns.rocks", "1-2"], (1, 2)),
    (["ceil.coredns.rocks", "-2"], (0, 2)), (["floor.coredns.rocks", "1-"], (1, 2147483647)),
    (["range.coredns.rocks", "2-2"], (2, 2)), (["invalid.coredns.rocks", "-"], None),
    (["invalid.coredns.rocks", "2-1"], None), (["invalid.coredns.rocks", "5-10-20"], None),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["stop", "continue"])
@pytest.mark.parametrize(("args", "want"), TTL_TABLE)
def test_coredns_ttl_rule_table(mode: str, args: list[str], want: tuple[int, int] | None) -> None:
    if want is None:
        with pytest.raises(RuleError):
            new_rule([mode, "ttl", *args])
    else:
        rule = new_rule([mode, "ttl", *args])
        assert isinstance(rule, TTL) and (rule.low, rule.high) == want and rule.mode == mode


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["srv1.coredns.rocks", "2", "0"], (2, 0)), (["exact", "a.rocks", "SERVFAIL", "NOERROR"], (2, 0)),
        (["regex", "(.*)\\.coredns\\.rocks", "servfail", "nxdomain"], (2, 3)), (["a.rocks", "24", "0"], None),
        (["a.rocks", "BOGUS", "0"], None), (["a.rocks", "2"], None), (["bad", "a.rocks", "2", "0"], None),
        (["exact", "a.rocks", "2", "0", "x"], None), (["a.rocks", "NOTIMPL", "BADCOOKIE"], (4, 23)),
    ],
)  # fmt: skip
def test_rcode_rule_table(args: list[str], want: tuple[int, int] | None) -> None:
    if want is None:
        with pytest.raises(RuleError):
            new_rule(["rcode", *args])
    else:
        rule = new_rule(["rcode", *args])
        assert isinstance(rule, RC) and (rule.old, rule.new) == want


def config(body: str) -> RewriteConfig:
    block = parse_corefile(".:53 {\n" + body + "\n}\n", "Corefile")[0]
    return parse_all(block.directives_named("rewrite"))


@pytest.mark.parametrize(
    ("body", "line", "why"),
    [
        ("rewrite", 2, "no rule type"),
        ("rewrite stop", 2, "stop rule must begin with a rule type"),
        ("log\nrewrite name regex ([a]\\.com new-{1}.com", 3, "invalid regex"),
        ("rewrite stop {\n name regex (a)\\.b {1}.{2}.c\n}", 2, "more subexpressions"),
        ("rewrite name a b {\n x\n}", 2, "does not take a block"),
        ("rewrite ttl a.rocks 2-1", 2, "invalid TTL"),
        ("rewrite name regex (?<=x)a b", 2, "lookbehind"),
    ],
)
def test_errors_name_file_and_line(body: str, line: int, why: str) -> None:
    with pytest.raises(CorefileError, match=why) as exc:
        config(body)
    assert (exc.value.filename, exc.value.line, exc.value.directive) == ("Corefile", line, "rewrite")


def test_block_form_joins_lines_and_directives_keep_order() -> None:
    cfg = config(
        "rewrite stop {\n name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul\n"
        " answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks\n}\n"
        "rewrite continue type A AAAA"
    )
    first, second = cfg.rules
    assert (
        isinstance(first, N)
        and first.kind == "regex"
        and first.to == "{1}.service.{2}.consul."
        and len(first.static) == 1
    )
    assert isinstance(second, T) and second.mode == "continue" and (second.frm, second.to) == (1, 28)


# Every Corefile and rewrite line in CoreDNS's plugin/rewrite/README.md (v1.14.7), in order.
README_LINES = [
    "rewrite name substring service.us-west-1.example.org service.us-west-1.consul",
    "rewrite name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul",
    "rewrite name suffix .schmoogle.com. .google.com.",
    "rewrite name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul",
    "rewrite stop {\n    name suffix .coredns.rocks .service.consul answer auto\n}",
    "rewrite stop {\n    name regex (.*)-(us-west-1)\\.coredns\\.rocks {1}.service.{2}.consul\n    answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.coredns.rocks\n}",
    "rewrite stop {\n    name suffix .arpa .arpa\n    answer name auto\n    answer value (.*)\\.service\\.consul\\. {1}.coredns.rocks.\n}",
    "rewrite stop name exact RED BLUE",
    "rewrite continue {\n    ttl regex (.*)\\.coredns\\.rocks 15\n}",
    "rewrite ttl example.com. 30-300",
    "rewrite ttl example.com. -30 # equivalent to rewrite ttl example.com. 0-30",
    "rewrite ttl example.com. 30-",
    "rewrite ttl example.com. 30 # equivalent to rewrite ttl example.com. 30-30",
    "rewrite continue {\n    rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR\n}",
    "rewrite continue {\n    rcode regex (.*)\\.coredns\\.rocks 2 0\n}",
    "rewrite edns0 local set 0xffee 0x61626364\nwhoami",
    "rewrite edns0 local set 0xffee abcd",
    "rewrite edns0 local set 0xffee {client_ip}",
    "metadata\nsome-plugin\nrewrite edns0 local set 0xffee {some-plugin/some-label}",
    "rewrite edns0 local unset 0xffee",
    "rewrite edns0 subnet set 24 56",
    "rewrite edns0 subnet unset",
    "rewrite edns0 local set 0xffee abcd revert",
    "rewrite continue {\n    edns0 local set 0xffee abcd\n}\n\nrewrite edns0 local replace 0xffee bcde revert",
    "rewrite cname regex (.*).cdn.example.net. {1}.other.cdn.com.",
]


@pytest.mark.parametrize("body", README_LINES)
def test_readme_examples_parse(body: str) -> None:
    assert config(body).rules


def test_readme_answer_auto_suffix_reverses() -> None:
    (rule,) = config(README_LINES[4]).rules
    assert isinstance(rule, N) and not rule.auto
    assert [type(s).__name__ for s in rule.static] == ["NameResponse", "ValueResponse"]
    assert rule.static[0].rewriter == rw.SuffixRewriter(".service.consul.", ".coredns.rocks.")  # type: ignore[union-attr]

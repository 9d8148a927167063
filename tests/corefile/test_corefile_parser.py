"""Corefile parsing: structure, lexing, env, imports/snippets, and every error path's file:line."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodelocaldns.corefile import Directive, ServerBlock, parse_corefile, tokenize
from nodelocaldns.corefile.model import corefile_hash
from nodelocaldns.errors import CorefileError

# A directive as plain data: (name, args, line) or (name, args, line, [sub-directives...]).
Shape = tuple[Any, ...]


def shape_of(d: Directive) -> Shape:
    if d.block:
        return (d.name, d.args, d.line, [shape_of(s) for s in d.block])
    return (d.name, d.args, d.line)


def shapes(blocks: tuple[ServerBlock, ...]) -> list[tuple[list[tuple[str, int]], list[Shape]]]:
    return [([(k.zone, k.port) for k in b.keys], [shape_of(d) for d in b.directives]) for b in blocks]


def parse(text: str, **env: str) -> tuple[ServerBlock, ...]:
    return parse_corefile(text, "Corefile", env)


# The ConfigMap Corefile of cluster/addons/dns/nodelocaldns/nodelocaldns.yaml, after the admin's sed
# (iptables mode: cluster.local, 169.254.20.10, kube-dns 10.96.0.10) and node-cache's own substitution of
# __PILLAR__CLUSTER__DNS__ (kube-dns-upstream 10.96.0.11) and __PILLAR__UPSTREAM__SERVERS__.
ADDON_COREFILE = """\
cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    health 169.254.20.10:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . /etc/resolv.conf
    prometheus :9253
    }
"""


def _reverse_block(first: int) -> list[Shape]:
    return [
        ("errors", (), first),
        ("cache", ("30",), first + 1),
        ("reload", (), first + 2),
        ("loop", (), first + 3),
        ("bind", ("169.254.20.10", "10.96.0.10"), first + 4),
        ("forward", (".", "10.96.0.11"), first + 5, [("force_tcp", (), first + 6)]),
        ("prometheus", (":9253",), first + 8),
    ]


def test_addon_corefile() -> None:
    blocks = parse(ADDON_COREFILE)
    assert shapes(blocks) == [
        (
            [("cluster.local.", 53)],
            [
                ("errors", (), 2),
                ("cache", (), 3, [("success", ("9984", "30"), 4), ("denial", ("9984", "5"), 5)]),
                ("reload", (), 7),
                ("loop", (), 8),
                ("bind", ("169.254.20.10", "10.96.0.10"), 9),
                ("forward", (".", "10.96.0.11"), 10, [("force_tcp", (), 11)]),
                ("prometheus", (":9253",), 13),
                ("health", ("169.254.20.10:8080",), 14),
            ],
        ),
        ([("in-addr.arpa.", 53)], _reverse_block(17)),
        ([("ip6.arpa.", 53)], _reverse_block(28)),
        (
            [(".", 53)],
            [
                ("errors", (), 39),
                ("cache", ("30",), 40),
                ("reload", (), 41),
                ("loop", (), 42),
                ("bind", ("169.254.20.10", "10.96.0.10"), 43),
                ("forward", (".", "/etc/resolv.conf"), 44),
                ("prometheus", (":9253",), 45),
            ],
        ),
    ]
    assert [(b.filename, b.line) for b in blocks] == [
        ("Corefile", 1),
        ("Corefile", 16),
        ("Corefile", 27),
        ("Corefile", 38),
    ]
    assert blocks[0].keys[0].original == "cluster.local:53"
    assert [d.name for d in blocks[0].directives_named("cache")] == ["cache"]


def test_addon_template_with_placeholders_parses() -> None:
    # The unrendered template is a valid Corefile too (placeholders are just names); render/doctor rely on it.
    template = (
        ADDON_COREFILE.replace("cluster.local", "__PILLAR__DNS__DOMAIN__")
        .replace("169.254.20.10", "__PILLAR__LOCAL__DNS__")
        .replace("10.96.0.10", "__PILLAR__DNS__SERVER__")
        .replace("10.96.0.11", "__PILLAR__CLUSTER__DNS__")
        .replace("/etc/resolv.conf", "__PILLAR__UPSTREAM__SERVERS__")
    )
    blocks = parse(template)
    assert blocks[0].keys[0].zone == "__pillar__dns__domain__."
    assert blocks[0].directives_named("bind")[0].args == ("__PILLAR__LOCAL__DNS__", "__PILLAR__DNS__SERVER__")
    assert blocks[3].directives_named("forward")[0].args == (".", "__PILLAR__UPSTREAM__SERVERS__")


STRUCTURE_CASES = [
    ("empty file", "", []),
    ("only comments", "# nothing\n   # here\n", []),
    ("empty block", ". { }", [([(".", 53)], [])]),
    ("empty block two lines", ".:1053 {\n}\n", [([(".", 1053)], [])]),
    ("one-line block", ". { errors }", [([(".", 53)], [("errors", (), 1)])]),
    ("brace on next line", "example.org\n{\n  log\n}", [([("example.org.", 53)], [("log", (), 3)])]),
    ("keys only, no block", "example.org", [([("example.org.", 53)], [])]),
    (
        "block-less single server",
        ".:53\nerrors\nforward . 127.0.0.1 {\n  force_tcp\n}\n",
        [([(".", 53)], [("errors", (), 2), ("forward", (".", "127.0.0.1"), 3, [("force_tcp", (), 4)])])],
    ),
    (
        "several keys and ports",
        "a.org b.org:1053 dns://c.org {\n}",
        [([("a.org.", 53), ("b.org.", 1053), ("c.org.", 53)], [])],
    ),
    (
        "commas",
        "a.org, b.org,\n   c.org:5353,\n\n d.org {\n}",
        [([("a.org.", 53), ("b.org.", 53), ("c.org.", 5353), ("d.org.", 53)], [])],
    ),
    ("comma glued to next key", "a.org,b.org {\n}", None),  # one key "a.org,b.org": rejected by key check
    (
        "reverse CIDR key expands in place",
        "10.0.0.0/15 example.org {\n}",
        [([("0.10.in-addr.arpa.", 53), ("1.10.in-addr.arpa.", 53), ("example.org.", 53)], [])],
    ),
    (
        "nested blocks on one line and deeper",
        "x {\n a { b c { d } }\n e\n}\n",
        [([("x.", 53)], [("a", (), 2, [("b", ("c",), 2, [("d", (), 2)])]), ("e", (), 3)])],
    ),
    (
        "sub-directive on the brace line",
        ". {\n cache 30 { success 10\n  denial 5 }\n}",
        [([(".", 53)], [("cache", ("30",), 2, [("success", ("10",), 2), ("denial", ("5",), 3)])])],
    ),
    (
        "empty nested block",
        ". {\n forward . 1.1.1.1 {\n }\n}",
        [([(".", 53)], [("forward", (".", "1.1.1.1"), 2)])],
    ),
    (
        "next block after } on the same line",
        "a { x\n} b { y }",
        [([("a.", 53)], [("x", (), 1)]), ([("b.", 53)], [("y", (), 2)])],
    ),
    (
        "CRLF line endings",
        ". {\r\n  errors\r\n  log\r\n}\r\n",
        [([(".", 53)], [("errors", (), 2), ("log", (), 3)])],
    ),
    ("byte order mark", "\ufeff. {\n  errors\n}", [([(".", 53)], [("errors", (), 2)])]),
    ("tabs and odd spacing", "\t.\t{\n\terrors\t \n\t}", [([(".", 53)], [("errors", (), 2)])]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in STRUCTURE_CASES], ids=[c[0] for c in STRUCTURE_CASES]
)
def test_structure(text: str, expected: list[Any] | None) -> None:
    if expected is None:
        with pytest.raises(CorefileError) as e:
            parse(text)
        assert e.value.line == 1 and str(e.value) == (
            "Corefile:1: server key 'a.org,b.org': invalid character(s) ',' in zone name; "
            "separate keys with spaces"
        )
        return
    assert shapes(parse(text)) == expected


LEX_CASES = [
    # (text, [(token text, line, first on its line)])
    ("a b\nc", [("a", 1, True), ("b", 1, False), ("c", 2, True)]),
    ("a # b c\nd", [("a", 1, True), ("d", 2, True)]),
    ("# {\n}", [("}", 2, True)]),
    ("foo#bar baz\nx", [("foo", 1, True), ("x", 2, True)]),  # caddy: '#' starts a comment mid-word too
    ('"a # b" c', [("a # b", 1, True), ("c", 1, False)]),
    ('"say \\"hi\\"" x', [('say "hi"', 1, True), ("x", 1, False)]),
    ('"a\\b\\\\c"', [("a\\b\\\\c", 1, True)]),  # only \" is an escape
    ('"line1\nline2" same\nnext', [("line1\nline2", 1, True), ("same", 2, False), ("next", 3, True)]),
    ('a "" b', [("a", 1, True), ("", 1, False), ("b", 1, False)]),
    ('"a"b', [("a", 1, True), ("b", 1, False)]),
    ("a\rb", [("ab", 1, True)]),
    ("\n\n  z", [("z", 3, True)]),
]


@pytest.mark.parametrize(("text", "expected"), LEX_CASES)
def test_tokenize(text: str, expected: list[tuple[str, int, bool]]) -> None:
    assert [(t.text, t.line, t.newline) for t in tokenize(text)] == expected


def test_quotes_in_directives() -> None:
    text = (
        '. {\n  log . "{remote} - {>id} \\"{type}\\""\n  template IN A "{" "}" import\n'
        '  x "multi\nline" y\n  z\n}'
    )
    (block,) = parse(text)
    assert shapes((block,))[0][1] == [
        ("log", (".", '{remote} - {>id} "{type}"'), 2),
        ("template", ("IN", "A", "{", "}", "import"), 3),  # quoted braces are plain arguments
        ("x", ("multi\nline", "y"), 4),
        ("z", (), 6),
    ]


ENV_CASES = [
    ("{$ZONE} {\n}", {"ZONE": "Example.org"}, [([("example.org.", 53)], [])]),
    ("{%ZONE%}:{$PORT} {\n}", {"ZONE": "a.org", "PORT": "1053"}, [([("a.org.", 1053)], [])]),
    (
        ". {\n forward . {$UP} {$UNSET}\n}",
        {"UP": "1.2.3.4"},
        [([(".", 53)], [("forward", (".", "1.2.3.4", ""), 2)])],
    ),
    (". {\n {$D} x{$A}y{%A%}z\n}", {"D": "log", "A": "-"}, [([(".", 53)], [("log", ("x-y-z",), 2)])]),
    # substituted values are not expanded again, and a variable cannot open a block
    (". {\n x {$A}\n}", {"A": "{$B}", "B": "no"}, [([(".", 53)], [("x", ("{$B}",), 2)])]),
    (". {\n x {$BRACE}\n}", {"BRACE": "{"}, [([(".", 53)], [("x", ("{",), 2)])]),
    (". {\n x {$} {%%} {$A\n}", {"A": "a"}, [([(".", 53)], [("x", ("{$}", "{%%}", "{$A"), 2)])]),
    ("{$NOPE} a.org {\n}", {}, [([("a.org.", 53)], [])]),  # an unset key is no key, like caddy
    ("{$KEYS} {\n}", {"KEYS": "a.org,"}, None),  # a trailing comma needs another key
]


@pytest.mark.parametrize(("text", "env", "expected"), ENV_CASES)
def test_env_substitution(text: str, env: dict[str, str], expected: list[Any] | None) -> None:
    if expected is None:
        with pytest.raises(CorefileError, match=r"Corefile:1: expected another server key after ','"):
            parse_corefile(text, env=env)
        return
    assert shapes(parse_corefile(text, env=env)) == expected


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLD_TEST_UPSTREAM", "127.0.0.53")
    monkeypatch.delenv("NLD_TEST_UNSET", raising=False)
    (block,) = parse_corefile(". {\n forward . {$NLD_TEST_UPSTREAM}{$NLD_TEST_UNSET}\n}")
    assert block.directives[0].args == (".", "127.0.0.53")


def test_default_port() -> None:
    (block,) = parse_corefile("a.org b.org:53 {\n}", env={}, default_port=1053)
    assert [(k.zone, k.port) for k in block.keys] == [("a.org.", 1053), ("b.org.", 53)]


# Every error path: (name, corefile text, env, "file:line" expected, message fragment, directive name).
ERROR_CASES = [
    (
        "unclosed server block",
        ". {\n  errors\n",
        "Corefile:1",
        "the '{' opened here is never closed",
        "",
    ),
    (
        "unclosed nested block",
        ". {\n  forward . 1.1.1.1 {\n    force_tcp\n",
        "Corefile:2",
        "the '{' opened here is never closed",
        "forward",
    ),
    ("unclosed after nested closed", ". {\n cache {\n }\n", "Corefile:1", "never closed", ""),
    ("stray closing brace", ". {\n}\n}\n", "Corefile:3", "unexpected '}': no block is open", ""),
    ("stray brace in keys", "a } {\n}", "Corefile:1", "unexpected '}'", ""),
    (
        "directive outside a block",
        ". {\n  errors\n}\nlog\n",
        "Corefile:4",
        "expected '{' after server key 'log': directive outside a server block?",
        "",
    ),
    ("brace in block-less server", ".\nerrors\n}\n", "Corefile:3", "unexpected '}': no block is open", ""),
    ("no keys", "\n{\n  errors\n}", "Corefile:2", "server block has no keys", ""),
    ("keys expand to nothing", "{$NOPE} {\n}", "Corefile:1", "server block has no keys", ""),
    ("keys expand to nothing, no brace", "a {\n}\n{$NOPE}\nerrors", "Corefile:3", "no keys", ""),
    ("comma then brace", "a.org, {\n}", "Corefile:1", "expected another server key after ','", ""),
    ("comma at end of file", "\na.org,", "Corefile:2", "unexpected end of file after ','", ""),
    ("lone comma", "a.org , b.org {\n}", "Corefile:1", "empty server key", ""),
    ("bad key before unclosed body", "\n\ntls://. {\n errors\n", "Corefile:3", "tls:// not supported", ""),
    ("bad key line", ". {\n}\n\n\nexample.org:99999 {\n}", "Corefile:5", "port 99999 out of range", ""),
    ("second key bad", "a.org,\n  tls://b.org {\n}", "Corefile:2", "transport tls:// not supported", ""),
    (
        "brace as directive",
        ". {\n  errors\n  {\n  }\n}",
        "Corefile:3",
        "unexpected '{': expected a directive name",
        "",
    ),
    (
        "brace as sub-directive",
        ". {\n cache {\n  {\n  }\n }\n}",
        "Corefile:3",
        "expected a directive name",
        "cache",
    ),
    (
        "token after nested block",
        ". {\n  forward . 1.1.1.1 { force_tcp } extra\n}",
        "Corefile:2",
        "unexpected 'extra' after '}'",
        "forward",
    ),
    ("unterminated quote", '. {\n  log "abc\n}\n', "Corefile:2", "unterminated quoted string", ""),
    ("empty directive name", '. {\n  "" arg\n}', "Corefile:2", "empty directive name", ""),
    ("directive name from unset env", ". {\n  {$NOPE} arg\n}", "Corefile:2", "empty directive name", ""),
    ("nesting too deep", ". {\n x " + "{ y " * 40 + "}" * 41, "Corefile:2", "nested more than 32 deep", "y"),
    ("snippet without body", "(s)\n", "Corefile:1", "snippet (s) needs a body", ""),
    ("snippet unclosed", "(s) {\n  a {\n}\n", "Corefile:1", "snippet (s) has no closing '}'", ""),
    ("empty snippet name", "() {\n}", "Corefile:1", "empty snippet name", ""),
    ("snippet redefined", "(s) {\n}\n(s) {\n}", "Corefile:3", "snippet (s) is already defined", ""),
    (
        "snippet imports itself",
        "(s) {\n  import s\n}\n. {\n  import s\n}",
        "Corefile:2",
        "cycle: (s) -> (s)",
        "",
    ),
    (
        "import without argument",
        ". {\n  import\n  errors\n}",
        "Corefile:2",
        "import needs exactly one argument",
        "",
    ),
    ("import before brace", ". {\n  import }", "Corefile:2", "import needs exactly one argument", ""),
    ("import two arguments", ". {\n  import a b\n}", "Corefile:2", "import takes only one argument", ""),
    ("import empty argument", '. {\n  import ""\n}', "Corefile:2", "non-empty", ""),
    ("import missing file", "\n\nimport nope.conf", "Corefile:3", "file to import not found: nope.conf", ""),
    ("import blank name", 'import " "', "Corefile:1", 'file to import not found: " "', ""),
    (
        "import undefined snippet",
        ". {\n  import later\n}\n(later) {\n}",
        "Corefile:2",
        "not found: later",
        "",
    ),
    ("import two wildcards", ". {\n  import */*.conf\n}", "Corefile:2", "only one wildcard", ""),
    ("import brackets", ". {\n  import [ab].conf\n}", "Corefile:2", "only one wildcard", ""),
]


@pytest.mark.parametrize(
    ("text", "where", "message", "directive"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors(text: str, where: str, message: str, directive: str, tmp_path: Path) -> None:
    # The Corefile lives in an empty directory so relative imports can only fail the intended way.
    with pytest.raises(CorefileError) as exc:
        parse_corefile(text, str(tmp_path / "Corefile"), {})
    err = exc.value
    assert str(err).startswith(f"{tmp_path}/{where}")
    assert message in err.reason
    assert err.directive == directive
    if directive:
        assert f"(directive '{directive}')" in str(err)
    assert f"{err.filename}:{err.line}" == f"{tmp_path}/{where}"


def test_error_without_path_uses_given_filename() -> None:
    with pytest.raises(CorefileError, match=r"^/etc/coredns/Corefile.base:2: unterminated quoted string$"):
        parse_corefile('. {\n "x\n}', "/etc/coredns/Corefile.base", {})


# --- imports and snippets ----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def parse_file(path: Path, **env: str) -> tuple[ServerBlock, ...]:
    return parse_corefile(path.read_text(), str(path), env)


def test_import_file_relative_to_corefile_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "common.conf", "errors\ncache {\n  success 100\n}\n")
    corefile = write(tmp_path / "conf" / "Corefile", ". {\n  import common.conf\n  log\n}\n")
    monkeypatch.chdir("/")  # relative to the Corefile, not to the working directory
    (block,) = parse_file(corefile)
    common = str(tmp_path / "conf" / "common.conf")
    assert [(d.name, d.filename, d.line) for d in block.directives] == [
        ("errors", common, 1),
        ("cache", common, 2),
        ("log", str(corefile), 3),
    ]
    assert block.directives[1].block[0].filename == common


def test_import_glob_in_order_and_server_blocks_at_top_level(tmp_path: Path) -> None:
    write(tmp_path / "zones" / "b.conf", "b.org {\n  log\n}\n")
    write(tmp_path / "zones" / "a.conf", "a.org {\n  errors\n}\n")
    write(tmp_path / "zones" / ".hidden.conf", "h.org {\n}\n")  # Go's filepath.Glob matches dotfiles
    write(tmp_path / "zones" / "skip.txt", "nope {\n}\n")
    corefile = write(tmp_path / "Corefile", ". {\n}\nimport zones/*.conf\nlast.org {\n}\n")
    assert [[k.zone for k in b.keys] for b in parse_file(corefile)] == [
        ["."],
        ["h.org."],
        ["a.org."],
        ["b.org."],
        ["last.org."],
    ]


def test_import_glob_without_match_is_empty_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corefile = write(tmp_path / "Corefile", ". {\n  import extra/*.conf\n  errors\n}\nimport more/*.conf\n")
    with caplog.at_level(logging.WARNING, logger="nodelocaldns.corefile.parser"):
        (block,) = parse_file(corefile)
    assert [d.name for d in block.directives] == ["errors"]
    assert f"{corefile}:2: no files match import glob extra/*.conf" in caplog.text


def test_import_absolute_path_and_env_pattern(tmp_path: Path) -> None:
    inc = write(tmp_path / "abs" / "inc.conf", "loop")
    corefile = write(tmp_path / "Corefile", f". {{\n  import {inc}\n  import {{$INC}}\n}}\n")
    (block,) = parse_file(corefile, INC=str(inc))
    assert [d.name for d in block.directives] == ["loop", "loop"]


def test_import_inside_nested_block_and_nested_imports(tmp_path: Path) -> None:
    write(tmp_path / "d" / "opts.conf", "force_tcp\nimport more/max.conf\n")
    write(tmp_path / "d" / "more" / "max.conf", "max_fails 3")  # relative to opts.conf's directory
    corefile = write(tmp_path / "Corefile", ". {\n  forward . 127.0.0.1 {\n    import d/opts.conf\n  }\n}\n")
    (block,) = parse_file(corefile)
    fwd = block.directives[0]
    assert [(s.name, s.args) for s in fwd.block] == [("force_tcp", ()), ("max_fails", ("3",))]
    assert fwd.block[1].filename == str(tmp_path / "d" / "more" / "max.conf")


def test_error_in_imported_file_names_that_file(tmp_path: Path) -> None:
    inc = write(tmp_path / "bad.conf", "errors\n\nforward . 1.1.1.1 {\n")
    corefile = write(tmp_path / "Corefile", ". {\n  import bad.conf\n}\n")
    with pytest.raises(CorefileError) as exc:
        parse_file(corefile)
    # The '{' in bad.conf:3 is closed by the Corefile's '}', leaving the server block open.
    assert str(exc.value) == f"{corefile}:1: unexpected end of file: the '{{' opened here is never closed"
    write(inc, "errors\n}\n}\n")  # the first '}' closes the server block, the second is stray
    with pytest.raises(CorefileError) as exc:
        parse_file(corefile)
    assert str(exc.value).startswith(f"{inc}:3: unexpected '}}': no block is open")


def test_import_cycles_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.conf", "errors\nimport b.conf\n")
    write(tmp_path / "b.conf", "\nimport a.conf\n")
    corefile = write(tmp_path / "Corefile", ". {\n  import a.conf\n}\n")
    with pytest.raises(CorefileError) as exc:
        parse_file(corefile)
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    assert str(exc.value) == f"{b}:2: import cycle: {a} -> {b} -> {a}"
    self_import = write(tmp_path / "Self", ". {\n}\nimport Self\n")
    with pytest.raises(CorefileError, match=r"Self:3: import cycle"):
        parse_file(self_import)


def test_import_directory_and_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.conf").mkdir()
    write(tmp_path / "bin.conf", "").write_bytes(b"\xff\xfe\x00bad")
    corefile = write(tmp_path / "Corefile", ". {\n  import dir.conf\n}\n")
    with pytest.raises(CorefileError, match=r"Corefile:2: could not import .*dir.conf: is a directory"):
        parse_file(corefile)
    write(corefile, ". {\n\n  import bin.conf\n}\n")
    with pytest.raises(CorefileError, match=r"Corefile:3: could not import .*bin.conf"):
        parse_file(corefile)


SNIPPETS = """\
(common) {
    errors
    cache 30 {
        denial 100
    }
}
(tcp) {
    force_tcp
}
a.org {
    import common
    forward . 127.0.0.1 {
        import tcp
    }
}
"""


def test_snippets() -> None:
    blocks = parse(SNIPPETS + "b.org {\n    import common\n}\n")
    assert len(blocks) == 2
    a, b = shapes(blocks)
    assert a == (
        [("a.org.", 53)],
        [
            ("errors", (), 2),
            ("cache", ("30",), 3, [("denial", ("100",), 4)]),
            ("forward", (".", "127.0.0.1"), 12, [("force_tcp", (), 8)]),
        ],
    )
    assert b == ([("b.org.", 53)], a[1][:2])  # the same snippet, lines pointing at the definition


def test_snippet_imported_on_a_key_line() -> None:
    # At the start of a key line a snippet's tokens become keys ("errors"), as in caddy; after braced
    # blocks that is a block-less server, i.e. directives outside any block.
    with pytest.raises(CorefileError, match=r"Corefile:2: expected '\{' after server key 'errors'"):
        parse(SNIPPETS + "import common\n")


def test_snippet_keys_and_env_expanded_late() -> None:
    text = "(keys) {\n  a.org b.org\n}\nimport keys\n{\n  x {$V}\n}\n"
    (block,) = parse_corefile(text, env={"V": "value"})
    assert [k.zone for k in block.keys] == ["a.org.", "b.org."]
    assert block.directives[0].args == ("value",)


def test_snippet_expansion_is_bounded() -> None:
    # 2**14 expansions of a doubling chain: hits the cap instead of hanging.
    lines = ["(s0) {\n  x\n}"]
    for i in range(1, 15):
        lines.append(f"(s{i}) {{\n  import s{i - 1}\n  import s{i - 1}\n}}")
    lines.append(". {\n  import s14\n}")
    with pytest.raises(CorefileError, match="more than 10000 snippet imports"):
        parse("\n".join(lines))


# --- properties ----------------------------------------------------------------------------------

WORDS = [
    "{", "}", "{ }", ".", ".:53", "a.org", "a.org,", ",", "import", "s", "(s)", "x", "cache", "30",
    '"q r"', '"{"', '"', "\\", "#c", "{$X}", "{%Y%}", "{$", "10.0.0.0/15", "fd00::/8:53", "tls://.",
    ":99999", "a..b", "*", "*.conf", "dns://", "()", "\t", "\r",
]  # fmt: skip


def _check_outcome(text: str, path: str, env: dict[str, str]) -> None:
    """Either blocks whose every line is in ``text``, or a CorefileError naming this file and a line of it.

    The error's text is ``file:line[ (directive 'x')]: reason``, what an operator reads in the log.
    """
    last = text.count("\n") + 1
    try:
        blocks = parse_corefile(text, path, env)
    except CorefileError as exc:
        assert exc.filename == path
        assert 1 <= exc.line <= last, (exc.line, last, str(exc))
        assert exc.reason and exc.reason.strip() == exc.reason
        what = f" (directive '{exc.directive}')" if exc.directive else ""
        assert str(exc) == f"{path}:{exc.line}{what}: {exc.reason}"
        return
    for block in blocks:
        assert block.keys and 1 <= block.line <= last
        for d in _walk(block.directives):
            assert d.name and 1 <= d.line <= last, (d, last)
    # Parsing is a function of the text: the same text gives the same blocks.
    assert parse_corefile(text, path, env) == blocks


def _walk(ds: Any) -> Iterator[Directive]:
    for d in ds:
        yield d
        yield from _walk(d.block)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from([" ", "\n", "  ", "\n\n"])), max_size=40))
def test_token_soup_only_raises_corefile_error(tmp_path: Path, soup: list[tuple[str, str]]) -> None:
    text = "".join(w + sep for w, sep in soup)
    _check_outcome(text, str(tmp_path / "Corefile"), {"X": "{", "Y": "b.org,"})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_corefile_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        _check_outcome(text, os.path.join(d, "Corefile"), {})


NAME = st.text("abcdefgh_-0123456789", min_size=1, max_size=6)
# Backslashes are left out: caddy has no escape for a backslash before a closing quote (see LEX_CASES).
ARG = st.one_of(NAME, st.text('abc {}#";x', min_size=0, max_size=6))


@st.composite
def directive_trees(draw: st.DrawFn, depth: int = 0) -> tuple[str, tuple[str, ...], list[Any]]:
    subs = [] if depth >= 3 else draw(st.lists(directive_trees(depth + 1), max_size=3))
    return draw(NAME), tuple(draw(st.lists(ARG, max_size=3))), subs


def quote(arg: str) -> str:
    # Quote anything the lexer would split or treat as structure.
    if arg and all(c not in ' {}#";' for c in arg):
        return arg
    return '"' + arg.replace('"', '\\"') + '"'


def render(tree: tuple[str, tuple[str, ...], list[Any]], indent: str) -> str:
    name, args, subs = tree
    line = indent + " ".join([name, *map(quote, args)])
    if not subs:
        return line + "  # trailing comment\n"
    return line + " {\n" + "".join(render(s, indent + "  ") for s in subs) + indent + "}\n"


def strip_lines(d: Directive) -> tuple[str, tuple[str, ...], list[Any]]:
    return d.name, d.args, [strip_lines(s) for s in d.block]


@settings(max_examples=150, deadline=None)
@given(st.lists(directive_trees(), max_size=5), st.sampled_from([".", "a.org:1053", "10.0.0.0/24"]))
def test_rendered_trees_round_trip(trees: list[tuple[str, tuple[str, ...], list[Any]]], key: str) -> None:
    text = f"# header\n{key} {{\n" + "".join(render(t, "  ") for t in trees) + "}\n"
    (block,) = parse_corefile(text, env={})
    assert [strip_lines(d) for d in block.directives] == trees


def test_reload_hash_ignores_comments_whitespace_and_positions() -> None:
    a = parse_corefile(".:53 {\n  cache 30\n}\n", "a")
    b = parse_corefile("# hi\n\n.:53   {\n\tcache   30   # c\n}\n", "b")
    c = parse_corefile(".:53 {\n  cache 31\n}\n", "a")
    assert corefile_hash(a) == corefile_hash(b) != corefile_hash(c)
    assert len(corefile_hash(a)) == 128

"""The Go text/template subset: what parses, what is refused, and Go's printing and errors."""

from __future__ import annotations

import pytest

from nodelocaldns.plugins.template.gofuncs import GoMap, GoStruct, TemplateExecError, parse_uint
from nodelocaldns.plugins.template.gotemplate import TemplateSyntaxError, parse


def data(**extra: object) -> GoStruct:
    fields: dict[str, object] = {
        "Name": "ip-10-95-12-8.example.",
        "Zone": "example.",
        "Class": "IN",
        "Type": "A",
        "Match": ["ip-10-95-12-8.example.", "95", "12", "8"],
        "Group": GoMap({"0": "ip-10-95-12-8.example.", "b": "95", "c": "12", "d": "8"}),
        "Remote": "10.240.0.1",
    }
    fields.update(extra)
    return GoStruct("*template.templateData", fields, {"Meta": lambda name: ""})


@pytest.mark.parametrize(
    ("text", "out"),
    [
        (
            "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}",
            "ip-10-95-12-8.example. 60 IN A 10.95.12.8",
        ),
        ("{{ index .Match 1 }}", "95"),
        ('{{ index .Group "c" }}', "12"),
        ('{{ index .Group "nope" }}', ""),  # index on a map: the zero value
        ("{{ .Group.nope }}", "<no value>"),  # field on a map: Go's invalid value
        ("{{ parseInt .Group.b 16 8 }}", "149"),
        ('{{ .Meta "foo" }}x', "x"),
        ("{{ .Remote }}", "10.240.0.1"),
        ("a {{- .Zone -}} b", "aexample.b"),
        ("{{/* a comment */}}{{ .Type }}", "A"),
        ("{{.Class}}", "IN"),
        ("{{ . }}", ""),  # a struct without String() prints its text (empty here)
        ("{{ .Match }}", "[ip-10-95-12-8.example. 95 12 8]"),
        ("{{ .Group }}", "map[0:ip-10-95-12-8.example. b:95 c:12 d:8]"),
        ('{{ "lit" }}', "lit"),
        ("{{ `raw` }}", "raw"),
        ("{{ 42 }}", "42"),
        ("no actions", "no actions"),
    ],
)
def test_execute(text: str, out: str) -> None:
    assert parse(text, "answer").execute(data()) == out


def test_pipeline_passes_value_as_last_argument() -> None:
    # parseInt takes (s, base, bits): a piped value becomes the *last* argument, as in Go.
    assert parse('{{ 16 | parseInt "ff" 16 }}', "answer").execute(data()) == "255"
    with pytest.raises(TemplateExecError, match="wrong type for value; expected string; got int"):
        parse("{{ .Group.b | parseInt 16 8 }}", "answer").execute(data())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{{", "unclosed action"),
        ("{{ }}", "missing value for command"),
        ("{{ notAFunction }}", 'function "notAFunction" not defined'),
        ('{{ printf "%s" .Name }}', 'function "printf" not defined'),
        ("{{ if .Name }}x{{ end }}", "not supported"),
        ("{{ range .Match }}{{ end }}", "not supported"),
        ("{{ $x := .Name }}", "variables are not supported"),
        ("{{ (index .Match 1) }}", "parenthesized pipelines are not supported"),
        ("{{ true }}", "constant true is not supported"),
        ('{{ "open }}', "unterminated quoted string"),
        ("{{ .Name | }}", "missing value for command"),
        ("{{ 1.5 }}", "bad number syntax"),
    ],
)
def test_rejected_at_parse_time(text: str, why: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=why):
        parse(text, "answer")


def test_parse_accepts_what_only_fails_at_execution() -> None:
    # CoreDNS's setup test accepts these: Go checks fields and arity only when executing.
    t = parse("{{ .Grup.d }}", "answer")
    with pytest.raises(TemplateExecError, match="can't evaluate field Grup"):
        t.execute(data())
    t = parse("{{ parseInt }}", "answer")
    with pytest.raises(TemplateExecError, match="wrong number of args for parseInt: want 3 got 0"):
        t.execute(data())


def test_exec_errors_read_like_go() -> None:
    with pytest.raises(TemplateExecError) as e:
        parse('{{ .Name }} 60 IN TXT "{{ index .Match 2 }}"', "answer").execute(data(Match=["x", "y"]))
    assert (
        str(e.value)
        == 'template: answer: executing "answer" at <index .Match 2>: error calling index: index out of range: 2'
    )
    with pytest.raises(TemplateExecError) as e:
        parse('{{ parseInt "gg" 16 8 }}', "answer").execute(data())
    assert str(e.value).endswith('error calling parseInt: strconv.ParseUint: parsing "gg": invalid syntax')
    with pytest.raises(TemplateExecError, match="can't evaluate field x in type string"):
        parse("{{ .Name.x }}", "answer").execute(data())
    with pytest.raises(TemplateExecError, match="wrong number of args for Meta: want 1 got 0"):
        parse("{{ .Meta }}", "answer").execute(data())


def test_source_is_go_parse_tree_text() -> None:
    # The metrics' template label is Go's Tree.Root.String(): actions printed without inner spaces.
    t = parse(
        '{{ .Name }} 60 IN A {{ index .Match 1 }} {{ .Meta "a" }} {{ .Group.b | parseInt 16 }}', "answer"
    )
    assert t.source == '{{.Name}} 60 IN A {{index .Match 1}} {{.Meta "a"}} {{.Group.b | parseInt 16}}'


@pytest.mark.parametrize(
    ("s", "base", "bits", "want"),
    [
        ("ff", 16, 8, 255),
        ("0x1f", 0, 64, 31),
        ("0b101", 0, 8, 5),
        ("017", 0, 8, 15),
        ("1_000", 0, 16, 1000),
        ("7b", 16, 0, 123),
    ],
)
def test_parse_uint(s: str, base: int, bits: int, want: int) -> None:
    assert parse_uint(s, base, bits) == want


@pytest.mark.parametrize(
    ("s", "base", "bits", "why"),
    [
        ("100", 16, 8, "value out of range"),
        ("", 10, 8, "invalid syntax"),
        ("-1", 10, 8, "invalid syntax"),
        ("1_0", 10, 8, "invalid syntax"),
        ("1", 1, 8, "invalid base 1"),
        ("1", 10, 65, "invalid bit size 65"),
    ],
)
def test_parse_uint_errors(s: str, base: int, bits: int, why: str) -> None:
    with pytest.raises(Exception, match=why):
        parse_uint(s, base, bits)

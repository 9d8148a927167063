"""pprof: CoreDNS plugin/pprof/setup_test.go table, README examples; the directive is accepted, not run."""

from __future__ import annotations

import pytest

from nodelocaldns.plugins.pprof import setup as pprof
from support.directives import directive, directives_in, fails


@pytest.mark.parametrize(
    ("text", "address", "rate"),
    [("pprof", "localhost:6053", 0), ("pprof 1.2.3.4:1234", "1.2.3.4:1234", 0), ("pprof :1234", ":1234", 0),
     ("pprof {\n}", "localhost:6053", 0), ("pprof { block\n}", "localhost:6053", 1),
     ("pprof :1234 {\n block 20\n}", ":1234", 20), ("pprof [::1]:6060", "[::1]:6060", 0)],
)  # fmt: skip
def test_parse(text: str, address: str, rate: int) -> None:
    assert pprof.parse(directive(text)) == pprof.PprofConfig(address, rate)


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [("pprof :1234 -1", "at most one ADDRESS", 2), ("pprof /foo", "missing port in address", 2),
     ("pprof {\n a b\n}", "unknown property 'a'", 3), ("pprof {\n block 20 30\n}", "at most one RATE", 3),
     ("pprof {\n block invalid\n}", "invalid integer value 'invalid'", 3),
     ("pprof {\n unknown_property\n}", "unknown property", 3), ("pprof ::1:80", "too many colons", 2),
     ("pprof [::1]", "missing port in address", 2),
     # Go's net.SplitHostPort wording (core/hostport.py, the one copy of it):
     ("pprof [::1]:60]53", r"address \[::1\]:60\]53: unexpected '\]' in address", 2)],
)  # fmt: skip
def test_errors(text: str, match: str, line: int) -> None:
    fails(pprof.parse, text, match, line)


def test_once_and_warning() -> None:
    assert pprof.ONCE and "not available" in pprof.UNAVAILABLE


def test_readme_examples() -> None:
    readme = (
        ". {\n    pprof\n}\n. {\n    pprof 10.9.8.7:6060\n}\n. {\n    pprof :6060 {\n       block\n    }\n}\n"
    )
    got = [pprof.parse(d) for d in directives_in(readme, "pprof")]
    assert got == [pprof.PprofConfig(), pprof.PprofConfig("10.9.8.7:6060"), pprof.PprofConfig(":6060", 1)]

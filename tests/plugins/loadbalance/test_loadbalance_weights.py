"""The weight file: CoreDNS weighted_test.go TestWeightFileUpdate table; errors name file:line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.loadbalance.weights import WeightsSource, parse_weights


def ip16(text: str) -> bytes:
    ip = ipaddress.ip_address(text)
    return ip.packed if ip.version == 6 else bytes(10) + b"\xff\xff" + ip.packed


ONE = "\nw1,example.org\n192.168.1.15 10\n192.168.1.14 20\n"
TWO = """
# domain 1
w1.example.org
192.168.1.15   10
192.168.1.14   20

# domain 2
w2.example.org
 # domain 3
 w3.example.org
 192.168.2.16 11
 192.168.2.15 12
 192.168.2.14 13
"""


def test_parse_ok() -> None:
    assert parse_weights("", "wf") == {}
    assert parse_weights(ONE, "wf") == {
        "w1,example.org.": [(ip16("192.168.1.15"), 10), (ip16("192.168.1.14"), 20)]
    }
    got = parse_weights(TWO, "wf")
    assert got["w2.example.org."] == [] and len(got) == 3
    assert got["w3.example.org."] == [
        (ip16("192.168.2.16"), 11),
        (ip16("192.168.2.15"), 12),
        (ip16("192.168.2.14"), 13),
    ]


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [("\nw1,example.org\n192.168.1.14\n192.168.1.15 20\n", "wrong domain name", 3),
     ("\n# missing domain\n192.168.1.14 10\nw2,example.org\n", "missing domain name", 3),
     ("\nw1,example.org\n192.168.1.300 10\n", "wrong IP address", 3), ("\nw1,example.org\n192.168.1.14 300\n", "wrong weight value", 3),
     ("\nw1,example.org\n192.168.1.14 0\n", "wrong weight value", 3), ("w\n192.168.1.14 +1\n", "wrong weight value", 2),
     ("w\n1.2.3.4 1 # comment\n", "could not parse weight line", 2)],
)  # fmt: skip
def test_parse_errors(text: str, match: str, line: int) -> None:
    with pytest.raises(CorefileError, match=match) as e:
        parse_weights(text, "db.weights")
    assert (e.value.filename, e.value.line) == ("db.weights", line)
    assert str(e.value).startswith(f"db.weights:{line}")


def test_source_reloads_on_content_change_only(tmp_path: Path) -> None:
    f = tmp_path / "w"
    f.write_text(ONE)
    src = WeightsSource(str(f), 10.0)
    assert src.poll(0.0) and "w1,example.org." in src.weights
    assert not src.poll(5.0)  # not due
    assert not src.poll(10.0)  # same content
    f.write_text(TWO)
    assert src.poll(20.0) and "w3.example.org." in src.weights
    f.write_text("1.2.3.4\n")
    with pytest.raises(CorefileError):
        src.poll(30.0)
    assert "w3.example.org." in src.weights  # keeps the last good weights
    assert not src.poll(40.0)  # the bad file is not re-parsed until it changes
    f.unlink()
    assert not src.poll(50.0)


def test_reload_zero_reads_once(tmp_path: Path) -> None:
    f = tmp_path / "w"
    f.write_text(ONE)
    src = WeightsSource(str(f), 0.0)
    assert src.poll(0.0)
    f.write_text(TWO)
    assert not src.poll(1e6) and "w3.example.org." not in src.weights

"""The Corefile in CoreDNS's plugin/loop/README.md (HEAD; a plain ``~~~ txt`` block, which
CoreDNS's readme_test skips) parses, and does what the README describes: forwarding to itself is
detected, logged with the README's message, and the server exits."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

from nodelocaldns.plugins.loop.plugin import parse as parse_loop
from support.directives import directives_in
from support.ports import free_port
from support.readme import plans
from support.server import REPO

EXAMPLE = """\
. {
    loop
    forward . 127.0.0.1
}
"""


def test_example_parses() -> None:
    assert plans(EXAMPLE) == 1
    [d] = directives_in(EXAMPLE, "loop")
    parse_loop(d)


def test_forwarding_to_itself_is_a_loop() -> None:
    # The README's server listens on 53 and forwards to 127.0.0.1:53: here both are a test port.
    port = free_port()
    text = EXAMPLE.replace(". {", f".:{port} {{\n    bind 127.0.0.1", 1).replace(
        "127.0.0.1\n}", f"127.0.0.1:{port}\n}}"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".Corefile", delete=False) as f:
        f.write(text)
    out = subprocess.run([sys.executable, "-m", "nodelocaldns", "serve", "--corefile", f.name],
                         capture_output=True, text=True, timeout=30, cwd=REPO)  # fmt: skip
    assert out.returncode == 1
    assert re.search(
        r'plugin/loop: Loop \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+\) detected for zone "\."', out.stderr
    )

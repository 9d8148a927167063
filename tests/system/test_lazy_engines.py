"""Memory: rewrite's and template's engines (and the message codec they pull in) load only for a
Corefile that uses them; the addon's Corefile, which has neither, never pays for them (~3 MiB)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("nodelocaldns.dns.msg", "nodelocaldns.plugins.rewrite.rules", "nodelocaldns.plugins.template.engine")
PROBE = """
import sys
from nodelocaldns.server.check import check_text
report = check_text(sys.argv[1], "Corefile")
assert not report.errors, report.errors
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(corefile: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), corefile], capture_output=True,
                         text=True, check=True, timeout=60).stdout.strip()  # fmt: skip
    return set(out.split(",")) - {""}


def test_a_corefile_without_rewrite_or_template_loads_neither_engine() -> None:
    assert (
        _loaded(".:1053 {\n    cache 30\n    forward . 127.0.0.1:53\n    prometheus 127.0.0.1:9253\n}\n")
        == set()
    )


def test_a_corefile_with_rewrite_loads_its_engine() -> None:
    wanted = {"nodelocaldns.dns.msg", "nodelocaldns.plugins.rewrite.rules"}
    assert wanted <= _loaded(
        ".:1053 {\n    rewrite name a.example. b.example.\n    forward . 127.0.0.1:53\n}\n"
    )

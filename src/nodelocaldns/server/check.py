"""Offline Corefile check: everything ``serve`` does before it binds a socket, every error reported.

``nodelocaldns check --corefile F`` and ``node-cache ... -check`` both end here, so an operator can
vet an existing ConfigMap before swapping the image. Nothing here opens a socket or changes the node.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import ConfigError, CorefileError
from nodelocaldns.server.config import plan


@dataclass
class CheckReport:
    """The verdict on one Corefile."""

    filename: str
    blocks: int = 0
    zones: list[str] = field(default_factory=list)
    """``zone:port`` per server key, in Corefile order."""
    errors: list[str] = field(default_factory=list)
    """One line per error, each starting with ``file:line``."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.ok:
            plural = "" if self.blocks == 1 else "s"
            return f"{self.filename}: OK ({self.blocks} server block{plural}, zones {' '.join(self.zones)})"
        plural = "" if len(self.errors) == 1 else "s"
        return f"{self.filename}: {len(self.errors)} error{plural}"


def check_text(text: str, filename: str) -> CheckReport:
    """Parse and plan ``text`` as ``Server.prepare`` does (every plugin's setup, listener clashes)."""
    report = CheckReport(filename)
    try:
        blocks = parse_corefile(text, filename)
    except ConfigError as e:
        # The tokenizer cannot resynchronise after a syntax error: that one error is the report.
        report.errors.append(str(e))
        return report
    errors: list[CorefileError] = []
    try:
        plan(blocks, errors)
    except CorefileError as e:  # "no server blocks" has nothing to continue with
        errors.append(e)
    report.blocks = len(blocks)
    report.zones = list(dict.fromkeys(f"{k.zone}:{k.port}" for b in blocks for k in b.keys))
    report.errors = list(dict.fromkeys(_located(e, filename) for e in errors))
    return report


def _located(e: ConfigError, filename: str) -> str:
    text = str(e)
    return text if text.startswith(filename) else f"{filename}: {text}"


def print_check(report: CheckReport) -> int:
    """Errors on stderr, one per line with file:line; the verdict last. Exit code 0 or 1."""
    for line in report.errors:
        print(f"[ERROR] {line}", file=sys.stderr)
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1

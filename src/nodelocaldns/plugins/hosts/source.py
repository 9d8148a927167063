"""Keep a hosts table in step with its file (CoreDNS plugin/hosts readHosts + periodicHostsUpdate).

CoreDNS reads the file at start-up and then every ``reload`` interval, re-parsing only when the
file's modification time or size changed. An unreadable or deleted file keeps the entries parsed
last. The decision is pure (``hostsfile.check_due`` / ``needs_reparse``); ``HostsSource.poll`` runs it
with an injected clock and injected ``stat``/``read`` so the runtime adapter stays a timer call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from nodelocaldns.plugins.hosts.hostsfile import (
    FileStamp,
    HostsTable,
    check_due,
    needs_reparse,
    parse_hosts,
)
from nodelocaldns.plugins.hosts.metrics import HostsGauges
from nodelocaldns.plugins.hosts.setup import HostsConfig


def _stat(path: str) -> FileStamp | None:
    try:
        return FileStamp.of(os.stat(path))
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@dataclass(slots=True)
class HostsSource:
    cfg: HostsConfig
    origins: tuple[str, ...]
    gauges: HostsGauges = field(default_factory=HostsGauges)
    table: HostsTable = field(default_factory=HostsTable)
    stamp: FileStamp | None = None
    last_check: float | None = None
    stat: Callable[[str], FileStamp | None] = _stat
    read: Callable[[str], str | None] = _read

    def __post_init__(self) -> None:
        if self.cfg.inline:
            self.table.inline = parse_hosts("\n".join(self.cfg.inline), self.origins, self.cfg.auto_reverse)

    def poll(self, now: float) -> bool:
        """Check the file if a check is due; True when the table was replaced."""
        if not check_due(self.last_check, now, self.cfg.reload):
            return False
        self.last_check = now
        current = self.stat(self.cfg.path)
        if not needs_reparse(self.stamp, current):
            return False
        text = self.read(self.cfg.path)
        if text is None or current is None:
            return False
        self.table = HostsTable(parse_hosts(text, self.origins, self.cfg.auto_reverse), self.table.inline)
        self.stamp = current
        self.gauges.entries[self.cfg.path] = len(self.table)
        self.gauges.reload_timestamp = current.mtime_ns / 1e9
        return True

    def next_check(self) -> float | None:
        """When ``poll`` next has work (monotonic seconds), or None once reloading is off."""
        if self.last_check is None:
            return 0.0
        if self.cfg.reload <= 0:
            return None
        return self.last_check + self.cfg.reload

"""dnsperf as a background load for handover tests: started, left running, then read.

The load always has bounds: ``-l`` (seconds) and ``-Q`` (queries per second), and the process is
killed if it outlives them. ``ns`` runs it inside a network namespace the test made; without one it
may only target loopback.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DNSPERF = "/usr/bin/dnsperf"
_NUM = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
}
_QPS = re.compile(r"Queries per second:\s+([0-9.]+)")
_RCODES = re.compile(r"Response codes:\s+(.*)")


@dataclass
class LoadResult:
    sent: int
    completed: int
    lost: int
    qps: float
    rcodes: dict[str, int]
    output: str


class Load:
    """``dnsperf -s server -l seconds -Q qps`` with the queries in ``queries`` (``name TYPE`` a line).

    ``clients`` source ports: SO_REUSEPORT hashes each flow to one socket of the group, so a few
    flows could all land on one process and a handover test would prove nothing."""

    def __init__(
        self,
        server: str,
        port: int,
        queries: Path,
        *,
        seconds: float,
        qps: int,
        ns: str | None = None,
        timeout: float = 2.0,
        clients: int = 32,
    ) -> None:
        if ns is None and not (server.startswith("127.") or server == "::1"):
            raise ValueError("outside a test namespace the load only goes to loopback")
        self.seconds = seconds
        argv = [DNSPERF, "-s", server, "-p", str(port), "-d", str(queries), "-l", f"{seconds:g}",
                "-Q", str(qps), "-q", "200", "-t", f"{timeout:g}", "-c", str(clients)]  # fmt: skip
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self) -> LoadResult:
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        assert self.proc.returncode == 0, out
        nums = {k: int(m.group(1)) for k, p in _NUM.items() if (m := p.search(out))}
        qps = _QPS.search(out)
        rc = _RCODES.search(out)
        rcodes = {c: int(n) for c, n in re.findall(r"([A-Z]+) (\d+) \(", rc.group(1))} if rc else {}
        return LoadResult(
            nums.get("sent", 0), nums.get("completed", 0), nums.get("lost", 0),
            float(qps.group(1)) if qps else 0.0, rcodes, out,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def query_file(path: Path, names: list[str], qtype: str = "A") -> Path:
    path.write_text("".join(f"{n} {qtype}\n" for n in names))
    return path


def dnsperf_summary(text: str) -> dict[str, float]:
    """dnsperf's report as numbers: sent, completed, lost, max_latency (s) and each response code."""
    out: dict[str, float] = {}
    for key, pat in (("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"), ("max_latency", r"max ([0-9.]+)\)")):  # fmt: skip
        m = re.search(pat, text)
        assert m, (key, text[-2000:])
        out[key] = float(m.group(1))
    m = _RCODES.search(text)
    for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1) if m else ""):
        out[code] = float(n)
    return out

"""Read process and CPU accounting from /proc (Linux only)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process: all threads, live and exited."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Counting from the state field after "comm)": utime and stime are proc(5) fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _HZ


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_busy_seconds(cpu: int) -> float:
    """Time one CPU spent in user, system and steal since boot, to spot other work on it.

    irq and softirq time are left out: on loopback most of it is the benchmark's own packet
    delivery, which the kernel does not charge to the server process.
    """
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
                    int(x) for x in line.split()[1:9]
                )
                return (user + nice + system + steal) / _HZ
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


class CpuWatch:
    """A process's CPU time and other work on its CPU over one measured run (a context manager)."""

    def __init__(self, cpu_seconds: Callable[[], float], server_cpu: int | None) -> None:
        self.cpu_seconds, self.server_cpu = cpu_seconds, server_cpu

    def __enter__(self) -> CpuWatch:
        self.t0, self.cpu0 = time.monotonic(), self.cpu_seconds()
        self.busy0 = cpu_busy_seconds(self.server_cpu) if self.server_cpu is not None else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.server = self.cpu_seconds() - self.cpu0
        if self.server_cpu is None:
            self.foreign = math.nan
            return
        busy = cpu_busy_seconds(self.server_cpu) - self.busy0
        #: Non-idle time of the server's CPU not spent by the server, per second of the run.
        self.foreign = max(0.0, busy - self.server) / self.wall

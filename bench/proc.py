"""Read process and CPU accounting from /proc (Linux only)."""

from __future__ import annotations

import os

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
